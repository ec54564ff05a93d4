"""What a user may set on a fine-tuning run, typed (pydantic; no Django, no torch).

The API takes :class:`TrainOptions` as the ``options`` body, the command and the page pass the
same dict through :func:`train_options_parse`. Anything that names a server file (the base and
guide models' folders, their layout) is set by the service from registered models of the
caller's team, never from here: an unknown field, ``base_model_path`` included, is refused by
name. Cross-field rules (a GIST loss needs a guide model, bf16 xor fp16, …) stay in
``workers.common.configs.training.TrainConfig``, which the service builds from the options.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Positive = Annotated[int, Field(ge=1)]


class TrainOptions(BaseModel):
    """Knobs of one fine-tuning run; ``null`` (or leaving a field out) takes the default."""

    model_config = ConfigDict(extra="forbid", strict=False)

    # encoding (defaults: the base model's registered settings)
    pooling: Literal["mean", "cls", "max", "lasttoken"] | None = Field(
        None,
        description="pooling of a plain transformers model (sentence-transformers "
        "folders keep their own)",
    )
    normalize: bool | None = None
    max_seq_length: int | None = Field(None, ge=1, le=131072)
    query_prefix: str | None = Field(None, max_length=200)
    document_prefix: str | None = Field(None, max_length=200)
    # method
    method: Literal["full", "lora"] | None = None
    lora_r: int | None = Field(None, ge=1, le=4096)
    lora_alpha: float | None = Field(None, gt=0)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    lora_target_modules: (
        Literal["all-linear"]
        | list[Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.]+$")]]
        | None
    ) = Field(None, description='module names, "all-linear", or null: by architecture')
    merge_lora: bool | None = None
    # loss
    loss: (
        Literal["mnrl", "cached_mnrl", "gist", "matryoshka", "matryoshka2d", "starbucks"] | None
    ) = None
    scale: float | None = Field(None, gt=0, description="MNRL similarity scale")
    mini_batch_size: int | None = Field(None, ge=1, description="cached_mnrl")
    gist_temperature: float | None = Field(None, gt=0)
    matryoshka_dims: list[Positive] | None = Field(None, min_length=1, max_length=64)
    starbucks_pairs: list[list[Positive]] | None = Field(
        None, max_length=256, description="[[layer, dim], …] from small to large"
    )
    kl_div_weight: float | None = Field(None, ge=0)
    kl_temperature: float | None = Field(None, ge=0)
    # data
    num_negatives: int | None = Field(None, ge=0, le=1000)
    no_duplicates: bool | None = None
    # optimisation
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    epochs: float | None = Field(None, gt=0, le=10_000)
    max_steps: int | None = Field(None, ge=1)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    bf16: bool | None = None
    fp16: bool | None = None
    gradient_checkpointing: bool | None = None
    eval_steps: int | None = Field(None, ge=1)
    save_steps: int | None = Field(None, ge=1)
    save_total_limit: int | None = Field(None, ge=1)
    logging_steps: int | None = Field(None, ge=1)
    device: str | None = Field(None, pattern=r"^(cpu|cuda(:[0-9]{1,2})?|mps)$")

    @model_validator(mode="after")
    def _one_half_precision(self) -> TrainOptions:
        if self.bf16 and self.fp16:
            raise ValueError("choose bf16 or fp16, not both")
        return self


class OptionsError(ValueError):
    """Bad options; ``problems`` are ``FIELD: reason`` lines (unknown fields named)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def problems_of(exc: ValidationError) -> list[str]:
    out = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ())) or "options"
        if item.get("type") == "extra_forbidden":
            out.append(f"{where}: unknown field (not settable here)")
        else:
            out.append(f"{where}: {item.get('msg', 'invalid')}")
    return out


def train_options_parse(raw: dict | TrainOptions | None) -> dict:
    """The options a user set, validated: a dict of the fields given (``None`` ones dropped).
    Raises :class:`OptionsError` naming every bad or unknown field."""
    if isinstance(raw, TrainOptions):
        options = raw
    else:
        if raw is not None and not isinstance(raw, dict):
            raise OptionsError(["options: must be a JSON object"])
        cleaned = {k: v for k, v in (raw or {}).items() if v != ""}
        try:
            options = TrainOptions.model_validate(cleaned)
        except ValidationError as exc:
            raise OptionsError(problems_of(exc)) from None
    return options.model_dump(exclude_none=True)
