"""What a user sets on a deployment's relevance calibration, typed (pydantic only: no Django, no
ML library). The API takes :class:`CalibrationConfig` as its body, the page's form is built from
it, and the worker reads the row's stored copy back through it. The splits are names of the
deployed index's dataset version, checked by the web."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CalibrationMethod = Literal["isotonic", "logistic", "cosine_adapter"]
METHOD_LABELS = {
    "isotonic": "Isotonic (raw score only)",
    "logistic": "Logistic (score + per-query features)",
    "cosine_adapter": "Cosine-Adapter (per-query mapping, one global threshold)",
}
CalibrationTarget = Literal["precision", "recall"]


class CalibrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: str = Field(
        ...,
        min_length=1,
        max_length=50,
        description="the judged split the calibration is fitted on (its queries are searched "
        "on the deployed index and their hits labelled by its judgements)",
    )
    held_out_split: str | None = Field(
        None,
        max_length=50,
        description="the judged split the calibration is measured on (ECE, precision and "
        "recall); empty: a held-out share of the fit split's queries",
    )
    method: CalibrationMethod = Field("logistic", description="how a score becomes P(relevant)")
    target: CalibrationTarget = Field(
        "precision", description="what the threshold is chosen for: precision or recall"
    )
    target_value: float = Field(
        0.8, gt=0, lt=1, description="the precision or recall the threshold must reach"
    )
    conformal: bool = Field(
        False,
        description="target recall only: split conformal threshold, so that a relevant hit is "
        "kept with probability at least the target (see the page for what that guarantees)",
    )
    depth: int = Field(
        50, ge=10, le=1000, description="hits per query that are labelled and fitted on"
    )
    calibration_share: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="the share of the fit split's queries kept aside to choose the threshold "
        "on (the mapping is fitted on the rest)",
    )
    held_out_share: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="without a held-out split: the share of the fit split's queries kept "
        "aside to measure on",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the seed of the query shares")

    @model_validator(mode="after")
    def _conformal_is_for_recall(self) -> CalibrationConfig:
        if self.conformal and self.target != "recall":
            raise ValueError("conformal: the conformal threshold is for a target recall")
        if self.held_out_split == self.split:
            raise ValueError("held_out_split: choose another split than the fit split, or none")
        return self
