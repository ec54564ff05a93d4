"""What a user sets on a static distillation (Model2Vec) of a registered model, typed (pydantic
only: no Django, no ML library). The API takes :class:`DistillConfig` as its body, the model
page's form is built from it, ``manage.py distill`` reads its options through it and the worker
reads the row's stored copy back through it. Dataset versions are named by id and resolved in
the caller's team by the web."""

from __future__ import annotations

from pydantic import Field

from workers.common.configs.optimize import VariantEvaluation


class DistillConfig(VariantEvaluation):
    pca_dims: int | None = Field(
        256,
        ge=2,
        le=4096,
        description="PCA of the token table down to this many dimensions (at most the model's); "
        "null (API) or none (command): keep the model's dimension",
        json_schema_extra={"label": "PCA dims"},
    )
    vocabulary_version: int | None = Field(
        None,
        ge=1,
        description="id of a dataset version of your team whose most frequent words are added "
        "to the vocabulary; empty: the model's own vocabulary only",
    )
    vocabulary_size: int = Field(
        10_000,
        ge=10,
        le=200_000,
        description="how many of that version's most frequent words are added",
    )
