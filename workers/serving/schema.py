"""What a search request and its answer are, and their limits: one module for both sides.

The search process validates every ``POST /search`` with ``SearchRequest``; the web builds the
same model before it calls (``apps.indexes.selectors.deployment_query``), so a request the search
process would refuse is refused by the web first, with the same message, and the REST API's
schema takes its bounds from here. Plain pydantic: the web imports this module, so it must never
import Django, torch or faiss (tests/test_lazy_imports.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

MAX_QUERIES = 256  # per request: one encoder batch of the search process is at most this
MAX_K = 1000
DEFAULT_K = 10
MAX_BODY = 1 << 20  # bytes of one request body to the search process
MAX_FILTER_FIELDS = 32

# Strict scalars: JSON's true, 2020 and "2020" stay apart, and the index matches each as itself.
FilterValue = StrictStr | StrictBool | StrictInt | StrictFloat
Filters = Annotated[dict[str, FilterValue], Field(max_length=MAX_FILTER_FIELDS)]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty query")
    return text


Query = Annotated[StrictStr, AfterValidator(_not_blank)]
Queries = Annotated[list[Query], Field(min_length=1, max_length=MAX_QUERIES)]
K = Annotated[StrictInt, Field(ge=1, le=MAX_K)]
MinRelevance = Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)]

# One message per field, whichever side refuses: the API's user reads these.
MESSAGES = {
    "deployment": "deployment: the name of a deployment",
    "queries": "queries: give at least one query, and no empty query",
    "k": f"k: an integer from 1 to {MAX_K}",
    "filters": (
        "filters: an object of field → value (a string, number or true/false), "
        f"at most {MAX_FILTER_FIELDS} fields"
    ),
    "mode": (
        "mode: dense, bm25, sparse or hybrid (bm25 needs an index built with bm25, sparse one "
        "built with a sparse model; hybrid fuses dense with the side the deployment names)"
    ),
    "rerank": "rerank: true or false (false skips the deployment's rerank stage)",
    "min_relevance": (
        "min_relevance: a number from 0 to 1; hits whose calibrated relevance is under it are "
        "cut (the deployment needs a current calibration)"
    ),
}
Mode = Literal["dense", "bm25", "sparse", "hybrid"]
TOO_MANY_QUERIES = f"queries: at most {MAX_QUERIES} per request"


class SearchRequest(BaseModel):
    """The body of ``POST /search``. Unknown keys are ignored, as they always were."""

    model_config = ConfigDict(frozen=True)

    deployment: StrictStr
    queries: Queries
    k: K = DEFAULT_K
    filters: Filters | None = None
    mode: Mode = "dense"
    rerank: StrictBool = True  # false: the first stage alone, where a rerank stage is deployed
    # Cut hits whose calibrated P(relevant) is under it (a calibrated deployment, dense hits).
    min_relevance: MinRelevance | None = None


class Hit(BaseModel):
    id: str
    score: float
    relevance: float | None = None  # calibrated P(relevant), where the deployment has one


class Timings(BaseModel):
    encode_ms: float
    search_ms: float
    bm25_ms: float | None = None  # mode bm25, and hybrid fused with bm25
    sparse_ms: float | None = None  # mode sparse, and hybrid fused with sparse: encode + search
    rerank_ms: float | None = None  # a deployment with a rerank stage
    adapter_ms: float | None = None  # a model upgrade's query adapter: new model → old index


class SearchResponse(BaseModel):
    """The answer to a valid ``POST /search``: per query, its hits best first."""

    deployment: str
    index_id: int
    results: list[list[Hit]]
    timings: Timings


class ErrorResponse(BaseModel):
    """Every refusal of the search process (4xx, 5xx) has this body."""

    error: str


def problem(error: ValidationError) -> str:
    """The message for the first thing wrong in a request (``MESSAGES``)."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if field == "queries" and first["type"] == "too_long":
        return TOO_MANY_QUERIES
    return MESSAGES.get(field) or f"{field or 'request'}: {first['msg']}"


class SearchRequestError(ValueError):
    """A search request that either side refuses (400), with the message for its caller."""


def search_request(
    *, deployment: str, queries: list[str], k: int = DEFAULT_K, filters: dict | None = None,
    mode: str = "dense", rerank: bool = True, min_relevance: float | None = None,
) -> SearchRequest:  # fmt: skip
    """A validated request, or SearchRequestError naming the first problem."""
    return parse_search_request(
        {"deployment": deployment, "queries": queries, "k": k, "filters": filters or None,
         "mode": mode, "rerank": rerank, "min_relevance": min_relevance}
    )  # fmt: skip


def parse_search_request(body: object) -> SearchRequest:
    try:
        return SearchRequest.model_validate(body)
    except ValidationError as exc:
        raise SearchRequestError(problem(exc)) from None
