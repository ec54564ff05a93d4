"""What a user sets on an evaluation, typed (pydantic only: no Django, no ML library).

The API takes :class:`EvaluationConfig` as its body (with the dataset version), the page's form
is built from it, ``manage.py evaluate`` reads its options through it and the worker reads the
row back through it. The model is named by id and resolved in the caller's team by the web; the
encoding settings (max length, prefixes) are the model's, copied onto the row, never set here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.common.configs.encoding import Precision, precision_field

Method = Literal["dense", "bm25", "hybrid", "rerank", "sparse"]
Fusion = Literal["rrf", "weighted"]
Normalization = Literal["minmax", "zscore"]
# The settings a hybrid evaluation records (Evaluation.fusion); ignored by the other methods.
FUSION_FIELDS = (
    "fusion", "rrf_k", "normalization", "dense_weight", "tune_split", "candidates",
    "lexical_model",
)  # fmt: skip


class EvaluationConfig(BaseModel):
    """One evaluation of a model (or of the BM25 baseline) on a dataset version's split."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "dense",
        description="dense: the model's embeddings; bm25: the lexical baseline (bm25s), which "
        "takes no model; hybrid: the model's and BM25's lists fused",
        json_schema_extra={
            "choice_labels": {
                "dense": "Dense (model)",
                "bm25": "BM25 (bm25s)",
                "hybrid": "Hybrid (model + BM25, fused)",
                "rerank": "Rerank (a reranker over another evaluation's lists)",
                "sparse": "Sparse (a SPLADE model's sparse vectors)",
            }
        },
    )
    model: int | None = Field(
        None,
        ge=1,
        description="id of a model of your team; required unless method is bm25 (for rerank: "
        "a reranker)",
    )
    split: str = Field(
        "test", min_length=1, max_length=50, description="the judged split whose queries are run"
    )
    precision: Precision = precision_field()
    fusion: Fusion = Field(
        "rrf",
        description="hybrid only. rrf: reciprocal rank fusion, sum of 1/(k + rank); weighted: "
        "a weighted sum of each side's normalised scores",
        json_schema_extra={"choice_labels": {"rrf": "Reciprocal rank fusion",
                                             "weighted": "Weighted sum of normalised scores"}},
    )  # fmt: skip
    rrf_k: int = Field(60, ge=1, le=10_000, description="hybrid rrf: the k of 1/(k + rank)")
    normalization: Normalization = Field(
        "minmax", description="hybrid weighted: each side's scores per query, min-max or z-score"
    )
    dense_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="hybrid: the dense side's weight (BM25's is 1 minus it); 0.5 is plain RRF",
    )
    tune_split: str | None = Field(
        None,
        max_length=50,
        description="hybrid weighted: choose dense_weight (0 to 1 by 0.05) by nDCG@10 on this "
        "judged split, then report on split; empty: use dense_weight as given",
    )
    candidates: int = Field(
        100, ge=10, le=1000, description="hybrid: documents taken from each side before fusing"
    )
    lexical_model: int | None = Field(
        None,
        ge=1,
        description="hybrid: id of a sparse model (SPLADE) of your team as the lexical side "
        "instead of BM25; empty: BM25",
    )
    first_stage: int | None = Field(
        None,
        ge=1,
        description="rerank: id of a succeeded evaluation (dense, BM25, hybrid) of your team on "
        "the same version and split, whose ranked lists are reranked",
    )
    k_prime: int = Field(
        100,
        ge=1,
        le=1000,
        description="rerank: how many of the first stage's top documents the reranker scores "
        "(the rest keep their order below them)",
    )

    @model_validator(mode="after")
    def _rerank(self) -> EvaluationConfig:
        if self.method == "rerank" and self.first_stage is None:
            raise ValueError("first_stage: a rerank evaluation needs the evaluation to rerank")
        return self

    @model_validator(mode="after")
    def _hybrid(self) -> EvaluationConfig:
        if self.method != "hybrid" or not self.tune_split:
            return self
        if self.fusion != "weighted":
            raise ValueError("tune_split: only a weighted fusion has a weight to tune")
        if self.tune_split == self.split:
            raise ValueError(
                "tune_split: tune on another split than the one reported, or the figure is "
                "optimistic"
            )
        return self

    def fusion_settings(self) -> dict:
        """What a hybrid evaluation records and runs with ({k_prime} for a rerank); empty for
        the other methods."""
        if self.method == "rerank":
            return {"k_prime": self.k_prime}
        if self.method != "hybrid":
            return {}
        settings = {name: getattr(self, name) for name in FUSION_FIELDS}
        if settings["lexical_model"] is None:
            del settings["lexical_model"]  # BM25, as hybrid evaluations always recorded it
        return settings

    @classmethod
    def from_row(cls, evaluation: Any) -> EvaluationConfig:
        """The config an Evaluation row records, validated again (the worker's input)."""
        return cls.model_validate(
            {
                "method": evaluation.method,
                "model": evaluation.model_id,
                "split": evaluation.split,
                "precision": evaluation.precision,
                "first_stage": evaluation.first_stage_id,
                **(evaluation.fusion or {}),
            }
        )
