"""What a user sets on an index build, typed (pydantic only: no Django, no faiss).

:class:`IndexParams` holds each build parameter's default, bounds and help once: the API takes
it as the body's ``params``, the page's form is built from it, ``manage.py build_index`` reads
its ``--param`` options through it, and ``workers.ml.indexing.IndexSpec`` takes its defaults and
bounds from it (and :func:`check_dimensions` for the rules between fields), so the web can
check a build completely without loading faiss.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.common.configs.problems import config_problems

IndexTypeName = Literal["flat", "hnsw", "ivf_flat", "ivf_pq", "sq8", "binary", "binary_hnsw"]
INDEX_TYPES: tuple[str, ...] = typing.get_args(IndexTypeName)
MAX_SEED = 2**31 - 1


# Parameters that add an index beside the faiss one (not faiss settings: no IndexSpec field).
SIDE_INDEXES = ("bm25", "sparse_model")


class IndexParams(BaseModel):
    """Build parameters; a field left out takes its default (``null``: automatic)."""

    model_config = ConfigDict(extra="forbid")

    dim: int | None = Field(
        None,
        ge=1,
        description="Matryoshka: keep the first dim dimensions (re-normalised); empty: all",
        json_schema_extra={"label": "Matryoshka dims"},
    )
    pca_dim: int | None = Field(
        None,
        ge=1,
        description="PCA trained on the documents down to this many dimensions; empty: no PCA",
        json_schema_extra={"label": "PCA dims"},
    )
    hnsw_m: int = Field(
        32, ge=2, le=256, description="HNSW: links per node", json_schema_extra={"label": "M"}
    )
    ef_construction: int = Field(
        200, ge=1, description="HNSW: build beam", json_schema_extra={"label": "efConstruction"}
    )
    ef_search: int = Field(
        64, ge=1, description="HNSW: search beam", json_schema_extra={"label": "efSearch"}
    )
    nlist: int | None = Field(
        None,
        ge=1,
        description="IVF: lists; empty: about 4·√n (at least 39 training points per list)",
    )
    nprobe: int = Field(16, ge=1, description="IVF: lists searched")
    pq_m: int | None = Field(
        None,
        ge=1,
        description="PQ: sub-quantizers; empty: the divisor of the dimension nearest dim/8",
        json_schema_extra={"label": "PQ m"},
    )
    pq_nbits: int = Field(
        8, ge=1, le=16, description="PQ: bits per code", json_schema_extra={"label": "PQ bits"}
    )
    train_size: int = Field(
        50_000, ge=1, description="IVF, PQ and PCA train on a seeded sample of at most this many"
    )
    rescore: int = Field(
        4,
        ge=0,
        description="binary types: re-score the top k·× by float inner product; 0: binary alone",
        json_schema_extra={"label": "Re-score ×"},
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the training sample")
    bm25: bool = Field(
        False,
        description="also a BM25 index (bm25s) of the same documents, beside the vectors: "
        "what a deployment needs for search mode bm25 and hybrid",
        json_schema_extra={"label": "BM25 index too"},
    )
    sparse_model: int | None = Field(
        None,
        ge=1,
        description="id of a sparse model (SPLADE) of your team: its vectors of the same "
        "documents are kept beside the index, for search mode sparse and as hybrid's lexical "
        "side",
        json_schema_extra={"label": "Sparse side"},
    )

    def given(self) -> dict[str, Any]:
        """The parameters the caller set (what the row records; the rest are defaults). An
        unticked "BM25 index too" is the default, not a choice."""
        given = self.model_dump(exclude_unset=True, exclude_none=True)
        if given.get("bm25") is False:
            del given["bm25"]
        return given

    def spec(self, index_type: str) -> dict[str, Any]:
        """Every parameter with its default filled in, and the type: what an index build
        records as its spec (``IndexSpec.to_dict()``). ``ValueError`` naming the field when the
        type is unknown or the dimensions do not fit together."""
        if index_type not in INDEX_TYPES:
            raise ValueError(f"type: {index_type!r} is not one of {', '.join(INDEX_TYPES)}")
        check_dimensions(dim=self.dim, pca_dim=self.pca_dim, pq_m=self.pq_m)
        return {"type": index_type, **self.model_dump(exclude=set(SIDE_INDEXES))}


class ParamsError(ValueError):
    """Bad build parameters; ``problems`` are ``NAME: reason`` lines, one per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_params(params: dict[str, Any] | None) -> IndexParams:
    """``params`` (a form's, a command's or a stored row's) checked by :class:`IndexParams`;
    :class:`ParamsError` names each bad field, and lists the known ones after an unknown."""
    try:
        return IndexParams.model_validate(params or {})
    except ValidationError as exc:
        known = f"unknown parameter (expected some of {', '.join(IndexParams.model_fields)})"
        raise ParamsError(
            [
                f"{name}: {known if reason == 'unknown field' else reason}"
                for name, reason in config_problems(exc)
            ]
        ) from None


def bounds() -> dict[str, tuple[int, int | None]]:
    """Each parameter's (minimum, maximum or None), as :class:`IndexParams` declares them."""
    out = {}
    for name, info in IndexParams.model_fields.items():
        if name in SIDE_INDEXES:  # not faiss parameters
            continue
        low, high = 0, None
        for item in info.metadata:
            if isinstance(item, annotated_types.Ge):
                low = int(item.ge)
            elif isinstance(item, annotated_types.Le):
                high = int(item.le)
        out[name] = (low, high)
    return out


def optional() -> frozenset[str]:
    """The parameters whose ``None`` means automatic (or not applied)."""
    return frozenset(
        name
        for name, info in IndexParams.model_fields.items()
        if info.default is None and name not in SIDE_INDEXES
    )


def check_dimensions(
    *, dim: int | None, pca_dim: int | None, pq_m: int | None, input_dim: int | None = None
) -> int | None:
    """The dimension the index holds (None while unknown: no ``input_dim`` and neither ``dim``
    nor ``pca_dim`` set); ``ValueError`` naming the field when the dimensions do not fit: PCA
    above the truncated dimension, ``dim`` above the embeddings', ``pq_m`` not dividing the
    final dimension."""
    if input_dim is None:
        if dim is not None and pca_dim is not None and pca_dim > dim:
            raise ValueError(f"pca_dim: {pca_dim} exceeds the truncated dimension {dim}")
        final = pca_dim if pca_dim is not None else dim
    else:
        if dim is not None and dim > input_dim:
            raise ValueError(f"dim: {dim} exceeds the embedding dimension {input_dim}")
        truncated = dim if dim is not None else input_dim
        if pca_dim is not None and pca_dim > truncated:
            raise ValueError(f"pca_dim: {pca_dim} exceeds the dimension {truncated}")
        final = pca_dim if pca_dim is not None else truncated
    if final is not None and pq_m is not None and final % pq_m:
        raise ValueError(f"pq_m: {pq_m} does not divide the dimension {final}")
    return final


class DeploymentFusion(BaseModel):
    """How a deployment fuses its dense and lexical lists for search mode hybrid: reciprocal
    rank fusion (the function a hybrid evaluation uses, ``workers.ml.fusion.rrf``)."""

    model_config = ConfigDict(extra="forbid")

    lexical: Literal["bm25", "sparse"] = Field(
        "bm25",
        description="the lexical side fused with the dense one: the index's BM25 index, or its "
        "sparse model's vectors (an index built with a sparse model)",
    )
    rrf_k: int = Field(60, ge=1, le=10_000, description="the k of 1/(k + rank)")
    candidates: int = Field(
        100, ge=10, le=1000, description="documents taken from each side before fusing"
    )
    dense_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="the dense side's weight (the lexical side's: 1 minus it)",
    )


class DeploymentRerank(BaseModel):
    """A deployment's rerank stage: a reranker of the team reorders the first stage's top
    ``k_prime`` (dense, bm25 or hybrid, as the request asks) before the top k are returned.
    ``model`` null: no rerank stage."""

    model_config = ConfigDict(extra="forbid")

    model: int | None = Field(
        ..., ge=1, description="id of a reranker of your team; null removes the rerank stage"
    )
    k_prime: int = Field(
        50, ge=1, le=1000, description="how many of the first stage's hits the reranker scores"
    )
