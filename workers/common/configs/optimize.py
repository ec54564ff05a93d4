"""What a user sets on an optimized (ONNX Runtime) variant of a registered model, typed
(pydantic only: no Django, no ML library). The API takes :class:`OptimizeConfig` as its body,
the model page's form is built from it, ``manage.py optimize`` reads its options through it
and the worker reads the row's stored copy back through it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The file that marks a variant folder; workers.ml.cache fingerprints its graph because of it.
ONNX_CONFIG = "onnx_config.json"

Backend = Literal["onnx"]
Quantize = Literal["none", "int8"]


class VariantEvaluation(BaseModel):
    """Where a derived model (optimized, static) and its source are evaluated side by side."""

    model_config = ConfigDict(extra="forbid")

    evaluate_version: int | None = Field(
        None,
        ge=1,
        description="id of a retrieval dataset version of your team on which the new model "
        "and its source are evaluated and compared; empty: the version of the source's most "
        "recent evaluation (none: no evaluation)",
    )
    split: str | None = Field(
        None,
        max_length=50,
        description="the judged split evaluated; empty: that evaluation's split, else test",
    )


class OptimizeConfig(VariantEvaluation):
    backend: Backend = Field(
        "onnx",
        description="onnx: ONNX Runtime on the CPU (OpenVINO is not offered: it is not in "
        "the package index this project installs from)",
    )
    quantize: Quantize = Field(
        "int8",
        description="int8: dynamic int8 (MatMul weights per channel, activations at run "
        "time); none: the fp32 graph",
    )
