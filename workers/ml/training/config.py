"""The configuration of one fine-tuning run: :class:`TrainConfig` and its validation.

Every knob of a run, JSON round-trippable (``to_dict``/``from_dict``); validation raises
:class:`ConfigError` (a ``ValueError``) whose message starts with the field.

``pooling`` and ``normalize`` only apply to a model in plain transformers layout, as in
:func:`workers.ml.encode.load_encoder`: a sentence-transformers folder keeps its own modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from workers.ml.losses import check_pairs

LAYOUTS = ("sentence-transformers", "transformers")
POOLINGS = ("mean", "cls", "max", "lasttoken")
METHODS = ("full", "lora")
LOSSES = ("mnrl", "cached_mnrl", "gist", "matryoshka", "matryoshka2d", "starbucks")
# Learning rates used when the config leaves it unset: LoRA trains few weights and wants more.
DEFAULT_LEARNING_RATE = {"full": 2e-5, "lora": 1e-4}


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` is "FIELD: reason", ``field`` names the field."""

    def __init__(self, name: str, reason: str) -> None:
        self.field, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


@dataclass
class TrainConfig:
    """One fine-tuning run. Defaults follow sentence-transformers' training examples."""

    base_model_path: str
    layout: str = "sentence-transformers"  # sentence-transformers | transformers
    pooling: str = "mean"  # mean | cls | max | lasttoken (transformers layout only)
    normalize: bool = True  # (transformers layout only)
    max_seq_length: int = 256
    # method
    method: str = "full"  # full | lora
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | str | None = None  # None: attention projections by arch
    merge_lora: bool = True  # output_dir/model is then a plain full model
    # loss
    loss: str = "mnrl"  # mnrl | cached_mnrl | gist | matryoshka | matryoshka2d | starbucks
    scale: float = 20.0  # MNRL similarity scale (1 / temperature)
    mini_batch_size: int = 32  # cached_mnrl
    guide_model_path: str | None = None  # gist: folder of the guide model (either layout)
    gist_temperature: float = 0.01
    matryoshka_dims: list[int] | None = None  # None: model dim, halved down to 32
    starbucks_pairs: list[list[int]] | None = None  # [[layer, dim], ...] small to large
    kl_div_weight: float = 1.0  # matryoshka2d, starbucks
    kl_temperature: float = 0.3  # matryoshka2d, starbucks; 0 turns the KL term off
    # data
    query_prefix: str = ""
    document_prefix: str = ""
    num_negatives: int | None = None  # None: the smallest count over rows
    no_duplicates: bool = True  # batch sampler that keeps repeated texts out of a batch
    # optimisation
    batch_size: int = 32
    learning_rate: float | None = None  # None: 2e-5 full, 1e-4 LoRA
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    bf16: bool = False  # only on CUDA with bf16 support (else fp32; the result says which)
    fp16: bool = False  # only on CUDA
    gradient_checkpointing: bool = False
    # schedule of side work, in optimizer steps
    eval_steps: int | None = None  # None: evaluate once, at the end (when eval data is given)
    save_steps: int = 500  # checkpoint interval
    save_total_limit: int | None = 2  # checkpoints kept (oldest deleted)
    logging_steps: int = 10
    device: str | None = None  # None: CUDA when available

    # --- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build and validate; unknown or missing fields raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(str(key), "unknown field")
        if "base_model_path" not in data:
            raise ConfigError("base_model_path", "required")
        config = cls(**data)
        config.validate()
        return config

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[self.method]

    # --- validation ------------------------------------------------------------------------

    def validate(self) -> None:  # noqa: C901 - a flat list of checks reads best
        """Raise :class:`ConfigError` for the first bad field."""
        _string("base_model_path", self.base_model_path, empty=False)
        _choice("layout", self.layout, LAYOUTS)
        _choice("pooling", self.pooling, POOLINGS)
        _bool("normalize", self.normalize)
        _int("max_seq_length", self.max_seq_length, 1, 131072)
        _choice("method", self.method, METHODS)
        _int("lora_r", self.lora_r, 1, 4096)
        _number("lora_alpha", self.lora_alpha, 0, None, low_open=True)
        _number("lora_dropout", self.lora_dropout, 0, 1, high_open=True)
        targets = self.lora_target_modules
        if targets is not None and targets != "all-linear":
            if (
                not isinstance(targets, list)
                or not targets
                or not all(isinstance(t, str) and t for t in targets)
            ):
                raise ConfigError(
                    "lora_target_modules", 'must be null, "all-linear" or a list of module names'
                )
        _bool("merge_lora", self.merge_lora)
        _choice("loss", self.loss, LOSSES)
        _number("scale", self.scale, 0, None, low_open=True)
        _int("mini_batch_size", self.mini_batch_size, 1)
        if self.loss == "gist":
            if self.guide_model_path is None:
                raise ConfigError("guide_model_path", "required for the gist loss")
            _string("guide_model_path", self.guide_model_path, empty=False)
        elif self.guide_model_path is not None:
            _string("guide_model_path", self.guide_model_path)
        _number("gist_temperature", self.gist_temperature, 0, None, low_open=True)
        if self.matryoshka_dims is not None:
            dims = self.matryoshka_dims
            if (
                not isinstance(dims, list)
                or not dims
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
            ):
                raise ConfigError("matryoshka_dims", "must be a list of positive integers")
            if len(set(dims)) != len(dims):
                raise ConfigError("matryoshka_dims", "a dimension appears twice")
        if self.starbucks_pairs is not None:
            if not isinstance(self.starbucks_pairs, list):
                raise ConfigError("starbucks_pairs", "must be a list of [layer, dim] pairs")
            try:
                check_pairs(self.starbucks_pairs)
            except ValueError as exc:
                raise ConfigError("starbucks_pairs", str(exc)) from None
        _number("kl_div_weight", self.kl_div_weight, 0, None)
        _number("kl_temperature", self.kl_temperature, 0, None)
        _string("query_prefix", self.query_prefix)
        _string("document_prefix", self.document_prefix)
        if self.num_negatives is not None:
            _int("num_negatives", self.num_negatives, 0, 1000)
            if self.loss == "gist" and self.num_negatives > 1:
                raise ConfigError("num_negatives", "the gist loss takes at most 1 negative per row")
        _bool("no_duplicates", self.no_duplicates)
        _int("batch_size", self.batch_size, 1, 1_000_000)
        if self.learning_rate is not None:
            _number("learning_rate", self.learning_rate, 0, 1, low_open=True)
        _number("epochs", self.epochs, 0, 10_000, low_open=True)
        if self.max_steps is not None:
            _int("max_steps", self.max_steps, 1)
        _number("warmup_ratio", self.warmup_ratio, 0, 1, high_open=True)
        _number("weight_decay", self.weight_decay, 0, None)
        _int("seed", self.seed, 0, 2**32 - 1)
        _bool("bf16", self.bf16)
        _bool("fp16", self.fp16)
        if self.bf16 and self.fp16:
            raise ConfigError("fp16", "choose bf16 or fp16, not both")
        _bool("gradient_checkpointing", self.gradient_checkpointing)
        if self.eval_steps is not None:
            _int("eval_steps", self.eval_steps, 1)
        _int("save_steps", self.save_steps, 1)
        if self.save_total_limit is not None:
            _int("save_total_limit", self.save_total_limit, 1)
        _int("logging_steps", self.logging_steps, 1)
        if self.device is not None:
            _string("device", self.device, empty=False)


def _string(name: str, value: Any, *, empty: bool = True) -> None:
    if not isinstance(value, str):
        raise ConfigError(name, "must be a string")
    if not empty and not value.strip():
        raise ConfigError(name, "must not be empty")


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)} (got {value!r})")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, "must be true or false")


def _int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(name, "must be an integer")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(name, f"must be {bound} (got {value})")


def _number(
    name: str,
    value: Any,
    low: float,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(name, "must be a number")
    bad_low = value <= low if low_open else value < low
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = f"> {low}" if low_open else f">= {low}"
        hi = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ConfigError(name, f"must be {lo}{hi} (got {value})")
