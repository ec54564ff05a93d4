"""What a user sets on a merge of registered models, typed (pydantic only: no Django, no ML
library). The API takes :class:`MergeConfig` as its body, the merge form is built from it,
``manage.py merge`` reads its options through it and the worker reads the row's stored copy
back through it. Models and dataset versions are named by id and resolved in the caller's team
by the web."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["soup", "greedy_soup", "linear", "slerp", "ties", "dare", "model_stock"]
METHOD_LABELS = {
    "soup": "Uniform soup (average)",
    "greedy_soup": "Greedy soup (needs a dev split)",
    "linear": "Linear (weights)",
    "slerp": "SLERP (two models)",
    "ties": "TIES (task vectors, needs the base)",
    "dare": "DARE (task vectors, needs the base)",
    "model_stock": "Model Stock (two or more fine-tunes and the base)",
}
DEFAULT_GRID = [0.0, 0.25, 0.5, 0.75, 1.0]


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[int] = Field(
        ...,
        min_length=1,
        max_length=16,
        description="ids of the models to merge, of your team, in order (weights follow it); "
        "one model is enough for linear or SLERP with a base",
    )
    base: int | None = Field(
        None,
        ge=1,
        description="id of the common base model: needed by TIES, DARE and Model Stock (task "
        "vectors are a model minus it); for linear and SLERP it is one more end point, last",
    )
    method: Method = Field("soup", description="how the weights are combined")
    weights: list[float] | None = Field(
        None,
        max_length=17,
        description="one weight per model (linear and SLERP: per end point, the base last), "
        "scaled to sum to 1; empty: equal weights",
    )
    search: bool = Field(
        False,
        description="linear or SLERP of two end points: try every weight of the grid on the dev "
        "split and keep the best (needs evaluate_version and dev_split)",
    )
    grid: list[float] = Field(
        default_factory=lambda: list(DEFAULT_GRID),
        min_length=2,
        max_length=21,
        description="the first end point's weights tried by the search (the second gets 1 − w)",
    )
    density: float = Field(
        0.2, gt=0, le=1, description="TIES: the share of each task vector's entries kept"
    )
    scale: float = Field(
        1.0, gt=0, le=4, description="TIES: the merged task vector is multiplied by it"
    )
    drop_rate: float = Field(
        0.5, ge=0, lt=1, description="DARE: the share of task-vector entries dropped"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="DARE: the seed of the drop masks")
    name: str | None = Field(
        None, max_length=200, description="the merged model's name; empty: one is made up"
    )
    evaluate_version: int | None = Field(
        None,
        ge=1,
        description="id of a retrieval dataset version of your team, on which the merge is "
        "checked (dev split) and compared with each parent (test split)",
    )
    dev_split: str | None = Field(
        None, max_length=50, description="the judged split the greedy soup and the search use"
    )
    test_split: str | None = Field(
        None,
        max_length=50,
        description="the judged split on which the merge and each parent are evaluated and "
        "compared with the paired test; empty: test, where the version has it",
    )

    @model_validator(mode="after")
    def _grid_in_range(self) -> MergeConfig:
        if any(not 0.0 <= w <= 1.0 for w in self.grid):
            raise ValueError("grid: every weight must be within 0 and 1")
        if self.weights is not None and any(w < 0 for w in self.weights):
            raise ValueError("weights: every weight must be 0 or more")
        return self
