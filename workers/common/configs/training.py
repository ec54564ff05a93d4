"""The one typed config of a fine-tuning run: what a user may set, and what the worker runs.

* :class:`TrainOptions` — every field a user may set, with the default the trainer really uses,
  its bounds, its help and the rules between fields. The API takes it as the ``options`` body
  (the OpenAPI schema lists each field), the page's form is built from it
  (``apps.core.configforms.config_form``), the ``train`` command reads it. An unknown field is
  refused by name: no option can name a server file.
* :class:`TrainConfig` — the options resolved for one run: the base model's registered encoding
  settings fill the options left empty, and the server-side fields (the base and guide models'
  folders, the layout) come from registered models of the caller's team, set by the service,
  never by a user. It is stored on the run row and validated again by the worker and the
  training child (:meth:`TrainConfig.from_dict`).

pydantic only (no Django, no ML library): the web and the workers both import it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workers.common.configs.problems import config_problems

Layout = Literal["sentence-transformers", "transformers"]
Pooling = Literal["mean", "cls", "max", "lasttoken"]
Method = Literal["full", "lora"]
Loss = Literal[
    "mnrl", "cached_mnrl", "gist", "matryoshka", "matryoshka2d", "starbucks", "bce", "lambdaloss",
    "splade",
]  # fmt: skip
# Losses that train a reranker (a sentence-transformers CrossEncoder) instead of an embedding
# model: the run's base may be an embedding model (its transformer's weights start a new
# classification head) or a reranker (trained further).
RERANKER_LOSSES: tuple[str, ...] = ("bce", "lambdaloss")
# Losses that train a sparse model (a sentence-transformers SparseEncoder, SPLADE): the base may
# be a sparse model (trained further) or an embedding model (its transformer's weights, with a
# masked-language-model head, start a new SPLADE).
SPARSE_LOSSES: tuple[str, ...] = ("splade",)
LAYOUTS: tuple[str, ...] = get_args(Layout)
POOLINGS: tuple[str, ...] = get_args(Pooling)
METHODS: tuple[str, ...] = get_args(Method)
LOSSES: tuple[str, ...] = get_args(Loss)
# Learning rates used when the config leaves it unset: LoRA trains few weights and wants more.
DEFAULT_LEARNING_RATE = {"full": 2e-5, "lora": 1e-4}

MAX_SEQ_LENGTH = 131072
PREFIX_MAX_LENGTH = 200

PositiveInt = Annotated[int, Field(ge=1)]
ModuleName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.]+$")]


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` is "FIELD: reason", ``field`` names the field."""

    def __init__(self, name: str, reason: str) -> None:
        self.field, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


def check_pairs(pairs: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Starbucks pairs as (layer, dim) tuples, or ValueError: layers ≥ 1 and dims ≥ 1, both
    non-decreasing from small to large, no pair twice."""
    out: list[tuple[int, int]] = []
    for pair in pairs:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
        ):
            raise ValueError(f"each pair must be [layer, dim] with integers >= 1, got {pair!r}")
        out.append((pair[0], pair[1]))
    if not out:
        raise ValueError("at least one [layer, dim] pair is needed")
    if len(set(out)) != len(out):
        raise ValueError("a [layer, dim] pair appears twice")
    for (l0, d0), (l1, d1) in zip(out, out[1:], strict=False):
        if l1 < l0 or d1 < d0:
            raise ValueError("pairs must go from small to large (layers and dims non-decreasing)")
    return out


def _label(text: str, **extra: Any) -> dict[str, Any]:
    """Page-only presentation for ``config_form`` (the label, choice labels, empty choice)."""
    return {"label": text, **extra}


class TrainOptions(BaseModel):
    """The knobs of one fine-tuning run. A field left out (or ``null``) takes its default;
    defaults follow sentence-transformers' training examples."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # --- method (fields are in this order on the page) ---
    method: Method = Field(
        "full",
        description="full fine-tuning, or LoRA adapters (peft) on a frozen base",
        json_schema_extra={"choice_labels": {"full": "Full", "lora": "LoRA (peft)"}},
    )
    lora_r: int = Field(
        8,
        ge=1,
        le=4096,
        description="LoRA: rank of the adapters",
        json_schema_extra=_label("LoRA rank"),
    )
    lora_alpha: float = Field(
        16, gt=0, description="LoRA: scaling (alpha / rank)", json_schema_extra=_label("LoRA alpha")
    )
    lora_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="LoRA: dropout on the adapters' input",
        json_schema_extra=_label("LoRA dropout"),
    )
    lora_target_modules: (
        Literal["all-linear"] | Annotated[list[ModuleName], Field(min_length=1)] | None
    ) = Field(
        None,
        description='module names, "all-linear", or empty: the attention projections of the '
        "architecture",
        json_schema_extra=_label("LoRA target modules"),
    )
    merge_lora: bool = Field(
        True,
        description="save the result as a plain full model (else base + adapter)",
        json_schema_extra=_label("Merge the adapter"),
    )
    # --- loss ---
    loss: Loss = Field(
        "mnrl",
        description="the training loss (mnrl: MultipleNegativesRankingLoss)",
        json_schema_extra={
            "choice_labels": {
                "mnrl": "MultipleNegativesRanking (InfoNCE, in-batch + hard negatives)",
                "cached_mnrl": "CachedMultipleNegativesRanking (GradCache: big batches, "
                "small memory)",
                "gist": "GISTEmbed (a guide model filters false in-batch negatives)",
                "matryoshka": "Matryoshka over dimensions",
                "matryoshka2d": "2D Matryoshka (layers × dimensions, one sampled per step)",
                "starbucks": "Starbucks (every (layer, dimension) pair, every step)",
                "bce": "Reranker: binary cross-entropy on (query, document) pairs",
                "lambdaloss": "Reranker: LambdaLoss (listwise, nDCG-weighted)",
                "splade": "Sparse (SPLADE): SpladeLoss over SparseMultipleNegativesRanking, "
                "FLOPS-regularised",
            }
        },
    )
    scale: float = Field(20.0, gt=0, description="MNRL similarity scale: 1 / temperature")
    mini_batch_size: int = Field(32, ge=1, description="cached_mnrl: texts per forward pass")
    gist_temperature: float = Field(
        0.01,
        gt=0,
        description="gist: temperature of the guide",
        json_schema_extra=_label("GIST temperature"),
    )
    matryoshka_dims: list[PositiveInt] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="matryoshka: e.g. 384,256,128,64,32; empty: the model's dimension halved "
        "down to 32",
    )
    starbucks_pairs: list[list[PositiveInt]] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="starbucks: [layer, dim] pairs from small to large, e.g. 2:32,4:64,6:128; "
        "empty: spread over the model's layers",
    )
    kl_div_weight: float = Field(
        1.0,
        ge=0,
        description="matryoshka2d, starbucks: KL weight",
        json_schema_extra=_label("KL weight"),
    )
    kl_temperature: float = Field(
        0.3,
        ge=0,
        description="matryoshka2d, starbucks: KL temperature; 0 turns the KL term off",
        json_schema_extra=_label("KL temperature"),
    )
    document_regularizer_weight: float = Field(
        3e-5,
        ge=0,
        description="splade: weight of the FLOPS regulariser on documents (sparser vectors)",
        json_schema_extra=_label("Document FLOPS weight"),
    )
    query_regularizer_weight: float = Field(
        5e-5,
        ge=0,
        description="splade: weight of the FLOPS regulariser on queries",
        json_schema_extra=_label("Query FLOPS weight"),
    )
    # --- encoding (empty: the base model's registered setting) ---
    pooling: Pooling | None = Field(
        None,
        description="pooling of a plain transformers model (sentence-transformers folders keep "
        "their own); empty: the model's",
        json_schema_extra={
            "empty_label": "as the model",
            "choice_labels": {"cls": "CLS", "lasttoken": "last token"},
        },
    )
    normalize: bool | None = Field(
        None, description="normalise embeddings (plain transformers models); empty: the model's"
    )
    query_prefix: str | None = Field(
        None, max_length=PREFIX_MAX_LENGTH, description="prepended to anchors; empty: the model's"
    )
    document_prefix: str | None = Field(
        None,
        max_length=PREFIX_MAX_LENGTH,
        description="prepended to positives and negatives; empty: the model's",
    )
    max_seq_length: int | None = Field(
        None, ge=1, le=MAX_SEQ_LENGTH, description="tokens per text; empty: the model's"
    )
    # --- data ---
    num_negatives: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="empty: the most that at least 90 % of the rows have; rows with fewer "
        "are dropped (the run says how many)",
        json_schema_extra=_label("Hard negatives per row"),
    )
    no_duplicates: bool = Field(True, description="keep repeated texts out of a batch")
    # --- optimisation ---
    batch_size: int = Field(
        32, ge=1, le=1_000_000, description="rows per optimizer step (also the in-batch negatives)"
    )
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="empty: by method, 2e-5 full, 1e-4 LoRA"
    )
    epochs: float = Field(1.0, gt=0, le=10_000, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, description="overrides epochs")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="share of the steps with a linear learning-rate warm-up"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="seed of the data order and the init")
    bf16: bool = Field(
        False,
        description="bf16 mixed precision where the hardware has it natively: a bf16 GPU, or a "
        "CPU with AVX-512 BF16 or AMX (elsewhere fp32)",
    )
    fp16: bool = Field(False, description="fp16 mixed precision, on CUDA")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, slower"
    )
    # --- side work, in optimizer steps ---
    eval_steps: int | None = Field(
        None, ge=1, description="evaluate every N steps; empty: at the end"
    )
    save_steps: int = Field(500, ge=1, description="checkpoint every N steps")
    save_total_limit: int | None = Field(
        2, ge=1, description="checkpoints kept, the oldest deleted (null in the API: all)"
    )
    logging_steps: int = Field(10, ge=1, description="a loss point every N steps")
    device: str | None = Field(
        None, pattern=r"^(cpu|cuda(:[0-9]{1,2})?|mps)$", description="empty: CUDA when available"
    )

    @model_validator(mode="before")
    @classmethod
    def _null_takes_the_default(cls, data: Any) -> Any:
        # ``null`` for a field that cannot be null means "the default", as the API always had it.
        if isinstance(data, dict):
            required = _not_nullable(cls)
            return {k: v for k, v in data.items() if not (v is None and k in required)}
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in _numeric(cls):
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("matryoshka_dims")
    @classmethod
    def _distinct_dims(cls, dims: list[int] | None) -> list[int] | None:
        if dims is not None and len(set(dims)) != len(dims):
            raise ValueError("a dimension appears twice")
        return dims

    @field_validator("starbucks_pairs")
    @classmethod
    def _pairs_small_to_large(cls, pairs: list[list[int]] | None) -> list[list[int]] | None:
        if pairs is not None:
            check_pairs(pairs)
        return pairs

    @field_validator("num_negatives")
    @classmethod
    def _gist_takes_one_negative(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > 1 and info.data.get("loss") == "gist":
            raise ValueError("the gist loss takes at most 1 negative per row")
        return value

    @model_validator(mode="after")
    def _reranker_is_full(self) -> TrainOptions:
        if self.reranker and self.method != "full":
            raise ValueError(
                "method: a reranker loss trains the whole cross-encoder; LoRA is for embedding "
                "models here"
            )
        if self.reranker and self.num_negatives == 0:
            raise ValueError("num_negatives: a reranker learns from negatives; give at least 1")
        if self.sparse and self.method != "full":
            raise ValueError(
                "method: the splade loss trains the whole sparse model; LoRA is for embedding "
                "models here"
            )
        return self

    @property
    def reranker(self) -> bool:
        """This run trains a reranker (a cross-encoder), not an embedding model."""
        return self.loss in RERANKER_LOSSES

    @property
    def sparse(self) -> bool:
        """This run trains a sparse model (SPLADE), not a dense embedding model."""
        return self.loss in SPARSE_LOSSES

    @field_validator("fp16")
    @classmethod
    def _one_half_precision(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("bf16"):
            raise ValueError("choose bf16 or fp16, not both")
        return value


class TrainConfig(TrainOptions):
    """One run as the worker runs it: the options resolved against the registered models.

    Built by the service with :meth:`resolve` (never from a user's input); stored on the run
    row as :meth:`to_dict` and read back with :meth:`from_dict`.
    """

    # The base model's encoding settings, resolved (the options' "empty" means these).
    pooling: Pooling = "mean"  # (transformers layout only)
    normalize: bool = True  # (transformers layout only)
    query_prefix: str = Field("", max_length=PREFIX_MAX_LENGTH)
    document_prefix: str = Field("", max_length=PREFIX_MAX_LENGTH)
    max_seq_length: int = Field(256, ge=1, le=MAX_SEQ_LENGTH)
    # Server-side: folders of registered models of the run's team.
    base_model_path: str = Field(min_length=1)
    layout: Layout = "sentence-transformers"
    guide_model_path: str | None = Field(None, validate_default=True)

    @field_validator("base_model_path")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("guide_model_path")
    @classmethod
    def _gist_needs_a_guide(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("loss") == "gist" and not (value or "").strip():
            raise ValueError("required for the gist loss")
        return value

    @classmethod
    def resolve(
        cls,
        options: TrainOptions,
        *,
        base_model_path: str,
        layout: str,
        pooling: str,
        normalize: bool,
        max_seq_length: int,
        query_prefix: str,
        document_prefix: str,
        guide_model_path: str | None,
    ) -> TrainConfig:
        """The run's config: ``options`` over the base model's registered settings, plus the
        folders of the base and guide models. Raises :class:`ConfigError`."""
        chosen = options.model_dump(exclude_none=True)
        registered = {
            "pooling": pooling,
            "normalize": normalize,
            "max_seq_length": max_seq_length,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
        }
        return cls.from_dict(
            {
                **options.model_dump(),
                **{k: chosen.get(k, v) for k, v in registered.items()},
                "base_model_path": base_model_path,
                "layout": layout,
                "guide_model_path": guide_model_path,
            }
        )

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """Build and validate; the first bad, unknown or missing field raises
        :class:`ConfigError` naming it."""
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[self.method]


def problems(exc: ValidationError) -> list[str]:
    """``FIELD: reason`` for every problem, unknown fields named as such."""
    return [f"{field}: {reason}" for field, reason in config_problems(exc)]


def config_error(exc: ValidationError) -> ConfigError:
    """The first problem as a :class:`ConfigError` naming its field."""
    field, reason = config_problems(exc)[0]
    return ConfigError(field.split(".")[0], "required" if reason == "Field required" else reason)


@functools.cache
def _numeric(model: type[BaseModel]) -> frozenset[str]:
    """Fields that take a number (where pydantic would read true as 1)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if any(k in (int, float) for k in get_args(info.annotation) or (info.annotation,))
    )


@functools.cache
def _not_nullable(model: type[BaseModel]) -> frozenset[str]:
    """Fields whose type has no ``None``."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if type(None) not in get_args(info.annotation)
    )
