"""Typed configs of the curation job kinds: semantic dedup, hard-negative mining, DSIR selection,
token lengths.

Each class is what a user may set for its kind, with defaults, bounds and help; anything else is
refused by name (``extra="forbid"``). Objects are named by id (``DsirConfig.target``) and resolved
in the caller's team by the web; the model a job encodes with is the job row's, not a config
field. ``stored()`` is the JSON recorded on the job row (and in a derived version's params),
``from_stored()`` reads it back, validated again, in the worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.common.configs.encoding import Precision, precision_field

MAX_SEED = 2**31 - 1


def _seed(description: str) -> Any:
    return Field(0, ge=0, le=MAX_SEED, description=description)


class _CurationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str

    def stored(self) -> dict[str, Any]:
        """The parameters as the job row records them (the kind is the row's own column)."""
        return self.model_dump(exclude={"kind"})

    @classmethod
    def from_stored(cls, params: dict[str, Any]):
        return cls.model_validate(params)

    @classmethod
    def settable(cls) -> tuple[str, ...]:
        """The names a user may set, in the order pages and messages list them."""
        return tuple(name for name in cls.model_fields if name != "kind")


class SemDedupConfig(_CurationConfig):
    """SemDeDup: embed, k-means, drop items at or above a cosine to a kept item of their cluster.
    Judged documents are never dropped."""

    kind: Literal["semdedup"] = "semdedup"
    threshold: float = Field(
        0.95,
        ge=0.5,
        le=1.0,
        description="Drop an item whose cosine to an item kept in its cluster is at least this.",
        json_schema_extra={"label": "Cosine ≥"},
    )
    clusters: int = Field(
        0,
        ge=0,
        le=100_000,
        description="k-means clusters; 0: about the square root of the row count.",
    )
    seed: int = _seed("Seed of the k-means initialisation.")
    precision: Precision = precision_field()


class MiningOptions(BaseModel):
    """How negatives are picked from ranked candidates: what ``workers.ml.mining`` reads, and
    what a mining job records under ``params["config"]``."""

    model_config = ConfigDict(extra="forbid")

    candidates: Literal["dense", "bm25", "hybrid"] = Field(
        "dense",
        description="Where candidates come from: the model (dense), BM25, or the union of both "
        "scored by the model (hybrid).",
        json_schema_extra={
            "label": "Candidates",
            "choice_labels": {"dense": "model", "bm25": "BM25", "hybrid": "model + BM25"},
        },
    )
    range_min: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Skip this many of the best remaining candidates.",
        json_schema_extra={"label": "Ranks from"},
    )
    range_max: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Never look past this rank.",
        json_schema_extra={"label": "to"},
    )
    num_negatives: int = Field(
        5,
        ge=1,
        le=100,
        description="Negatives per query, taken from the rank window.",
        json_schema_extra={"label": "Negatives"},
    )
    relative_margin: float | None = Field(
        0.05,
        ge=0.0,
        le=0.99,
        description="Drop candidates scoring above positive − |positive| × margin, likely "
        "unjudged positives (NV-Retriever's TopK-PercPos); none (empty): no margin filter.",
        json_schema_extra={"label": "Margin"},
    )
    max_score: float | None = Field(
        None,
        ge=-1e9,
        le=1e9,
        description="Drop candidates scoring above this; none (empty): no limit.",
        json_schema_extra={"label": "Max score"},
    )
    sampling: Literal["top", "random"] = Field(
        "top",
        description="Take the best of the rank window, or a random sample of it.",
        json_schema_extra={"label": "Sampling"},
    )
    seed: int = _seed("Seed of random sampling and of the queries shown in the inspector.")

    @model_validator(mode="after")
    def _window(self) -> MiningOptions:
        if self.range_max <= self.range_min:
            raise ValueError("the rank window needs 0 <= range_min < range_max")
        window = self.range_max - self.range_min
        if self.num_negatives > window:
            raise ValueError(
                f"cannot take {self.num_negatives} negatives from a window of {window} ranks"
            )
        return self


class MiningConfig(MiningOptions, _CurationConfig):
    """Hard-negative mining: candidates from the model, BM25 or both; never a judged positive."""

    kind: Literal["mine"] = "mine"
    split: str | None = Field(
        None,
        max_length=100,
        description="Retrieval versions: the split whose judged queries are mined (none: train). "
        "Training versions mine for every anchor and ignore it.",
        json_schema_extra={"label": "Split"},
    )
    precision: Precision = precision_field()

    def options(self) -> MiningOptions:
        return MiningOptions.model_validate(self.model_dump(exclude={"kind", "split", "precision"}))

    def stored(self) -> dict[str, Any]:
        config = {"precision": self.precision, "config": self.options().model_dump()}
        return config if self.split is None else {"split": self.split, **config}

    @classmethod
    def from_stored(cls, params: dict[str, Any]) -> MiningConfig:
        outer = {k: v for k, v in params.items() if k != "config"}
        return cls.model_validate({**outer, **params.get("config", {})})

    @classmethod
    def settable(cls) -> tuple[str, ...]:
        return ("split", *MiningOptions.model_fields, "precision")


class DsirConfig(_CurationConfig):
    """DSIR: select k rows whose hashed n-grams look most like a target set's texts; a random
    subset of the same size is made beside it as the baseline."""

    kind: Literal["dsir"] = "dsir"
    target: int = Field(
        ge=1,
        description="The dataset version (of your team, by id) whose texts the selection should "
        "look like.",
        json_schema_extra={"label": "Target"},
    )
    target_texts: Literal["queries", "documents", "anchors"] = Field(
        "queries",
        description="Which texts of the target version.",
        json_schema_extra={"label": "its"},
    )
    target_split: str = Field(
        "",
        max_length=100,
        description="With queries: only those judged in this split; empty: any.",
        json_schema_extra={"label": "split"},
    )
    field: Literal["anchor", "anchor_positive"] = Field(
        "anchor",
        description="What of each row is compared with the target: the anchor, or the anchor "
        "and its positive together.",
        json_schema_extra={
            "label": "Compare",
            "choice_labels": {"anchor": "anchors", "anchor_positive": "anchor + positive"},
        },
    )
    k: int | None = Field(
        None,
        ge=1,
        description="Rows to select (fewer than the source has); none (empty): half of them.",
        json_schema_extra={"label": "k"},
    )
    seed: int = _seed("Seed of the importance resampling and of the random baseline.")

    @model_validator(mode="after")
    def _split_of_queries(self) -> DsirConfig:
        if self.target_texts != "queries":
            self.target_split = ""  # only queries are judged in splits
        return self


class TokensConfig(_CurationConfig):
    """Token lengths: count tokens with the model's own tokenizer; nothing to set."""

    kind: Literal["tokens"] = "tokens"


CurationConfig = Annotated[
    SemDedupConfig | MiningConfig | DsirConfig | TokensConfig, Field(discriminator="kind")
]

CONFIGS: dict[str, type[_CurationConfig]] = {
    "semdedup": SemDedupConfig,
    "mine": MiningConfig,
    "dsir": DsirConfig,
    "tokens": TokensConfig,
}
