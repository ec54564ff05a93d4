"""The encoder settings a job may choose, shared by every kind that encodes (evaluations, index
builds, curation): one definition of the precision field, its choices and its help."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import Field

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

PRECISION_HELP = (
    "auto: bf16 where the hardware runs it natively (AVX-512 BF16 or AMX, or a bf16 GPU) and "
    "the model's bf16 evaluation ranked within the allowed drop of its fp32 one, else fp32; "
    "fp32: full precision; bf16: bf16 autocast (several times faster on such CPUs)"
)


def precision_field() -> Any:
    return Field(
        "auto",
        description=PRECISION_HELP,
        json_schema_extra={
            "choice_labels": {"auto": "Auto", "fp32": "fp32", "bf16": "bf16 (autocast)"}
        },
    )
