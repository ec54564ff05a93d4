"""What a user sets on an evaluation, typed (pydantic only: no Django, no ML library).

The API takes :class:`EvaluationConfig` as its body (with the dataset version), the page's form
is built from it, ``manage.py evaluate`` reads its options through it and the worker reads the
row back through it. The model is named by id and resolved in the caller's team by the web; the
encoding settings (max length, prefixes) are the model's, copied onto the row, never set here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.common.configs.encoding import Precision, precision_field

Method = Literal["dense", "bm25"]


class EvaluationConfig(BaseModel):
    """One evaluation of a model (or of the BM25 baseline) on a dataset version's split."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "dense",
        description="dense: the model's embeddings; bm25: the lexical baseline (bm25s), which "
        "takes no model",
        json_schema_extra={"choice_labels": {"dense": "Dense (model)", "bm25": "BM25 (bm25s)"}},
    )
    model: int | None = Field(
        None, ge=1, description="id of a model of your team; required unless method is bm25"
    )
    split: str = Field(
        "test", min_length=1, max_length=50, description="the judged split whose queries are run"
    )
    precision: Precision = precision_field()

    @classmethod
    def from_row(cls, evaluation: Any) -> EvaluationConfig:
        """The config an Evaluation row records, validated again (the worker's input)."""
        return cls.model_validate(
            {
                "method": evaluation.method,
                "model": evaluation.model_id,
                "split": evaluation.split,
                "precision": evaluation.precision,
            }
        )
