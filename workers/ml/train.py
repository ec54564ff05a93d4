"""Fine-tuning an embedding model: configuration, resource estimate, and the training run itself.

Plain functions over paths, configs and lists; torch, transformers, peft and sentence-transformers
are imported inside the functions that need them, so importing this module is cheap.

* :class:`TrainConfig` — every knob of a run, JSON round-trippable (``to_dict``/``from_dict``);
  validation raises :class:`ConfigError` (a ``ValueError``) whose message starts with the field.
* :func:`estimate` — memory (weights, gradients, optimizer states, activations) and step counts
  before launch, from the model's ``config.json`` alone (no torch).
* :func:`measure_step_time` — seconds per optimizer step measured on a few real steps.
* :func:`train` — a run with sentence-transformers' ``SentenceTransformerTrainer``: checkpoints
  (model or adapter, optimizer, scheduler, RNG, data position) in ``output_dir/checkpoints``,
  resumable; the final model in sentence-transformers format in ``output_dir/model`` with a
  generated ``README.md``; for LoRA the PEFT adapter in ``output_dir/adapter``.

Training rows are dicts ``{"anchor": str, "positive": str, "negatives": [str, ...]}`` (negatives
optional), a list of them or a JSONL file. The trainer needs the same number of negatives in every
row: ``num_negatives`` None takes the smallest count found (so no row is dropped); an explicit
``num_negatives`` keeps the first that many per row and drops rows that have fewer. GIST takes
at most one negative (the first).
``query_prefix`` is prepended to anchors (and eval queries), ``document_prefix`` to positives,
negatives (and eval documents).

``pooling`` and ``normalize`` only apply to a model in plain transformers layout, as in
:func:`workers.ml.encode.load_encoder`: a sentence-transformers folder keeps its own modules.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from workers.common.atomic import atomic_write
from workers.ml.losses import check_pairs, default_dims, default_starbucks_pairs

LAYOUTS = ("sentence-transformers", "transformers")
POOLINGS = ("mean", "cls", "max", "lasttoken")
METHODS = ("full", "lora")
LOSSES = ("mnrl", "cached_mnrl", "gist", "matryoshka", "matryoshka2d", "starbucks")
LOSS_LABELS = {
    "mnrl": "MultipleNegativesRankingLoss",
    "cached_mnrl": "CachedMultipleNegativesRankingLoss",
    "gist": "GISTEmbedLoss",
    "matryoshka": "MatryoshkaLoss(MultipleNegativesRankingLoss)",
    "matryoshka2d": "Matryoshka2dLoss(MultipleNegativesRankingLoss)",
    "starbucks": "StarbucksLoss(MultipleNegativesRankingLoss)",
}
# Learning rates used when the config leaves it unset: LoRA trains few weights and wants more.
DEFAULT_LEARNING_RATE = {"full": 2e-5, "lora": 1e-4}
# LoRA targets per architecture: the attention projections (query, key, value). Anything else
# gets peft's "all-linear" (every linear layer but the output head).
ATTENTION_PROJECTIONS: dict[str, list[str]] = {
    **dict.fromkeys(
        ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"),
        ["query", "key", "value"],
    ),
    "mpnet": ["q", "k", "v"],
    "t5": ["q", "k", "v"],
    "mt5": ["q", "k", "v"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "modernbert": ["Wqkv"],
    "nomic_bert": ["Wqkv"],
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"),
        ["q_proj", "k_proj", "v_proj"],
    ),
}
CHECKPOINTS = "checkpoints"
MODEL = "model"
ADAPTER = "adapter"


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` is "FIELD: reason", ``field`` names the field."""

    def __init__(self, name: str, reason: str) -> None:
        self.field, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


class DataError(ValueError):
    """Training or evaluation data that cannot be used; the message says which row and why."""


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


# --- data ----------------------------------------------------------------------------------


def read_rows(rows: Iterable[dict[str, Any]] | str | Path) -> list[dict[str, Any]]:
    """Rows from a list or a JSONL file, checked: anchor and positive non-empty strings,
    negatives (or a single "negative") strings. Raises :class:`DataError` naming the row."""
    if isinstance(rows, (str, Path)):
        path = Path(rows)
        if not path.is_file():
            raise DataError(f"{path}: no such training file")
        loaded: list[dict[str, Any]] = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    loaded.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {number}: not valid JSON ({exc.msg})") from None
        rows = loaded
        where = "line"
    else:
        rows = list(rows)
        where = "row"
    out = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{where} {number}: not an object")
        for key in ("anchor", "positive"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where} {number}: {key!r} must be a non-empty string")
        negatives = row.get("negatives")
        if negatives is None:
            single = row.get("negative")
            negatives = [] if single is None else [single]
        if not isinstance(negatives, list) or not all(
            isinstance(n, str) and n.strip() for n in negatives
        ):
            raise DataError(f"{where} {number}: 'negatives' must be a list of non-empty strings")
        out.append({"anchor": row["anchor"], "positive": row["positive"], "negatives": negatives})
    if not out:
        raise DataError("no training rows")
    return out


def _columns(
    config: TrainConfig, rows: list[dict[str, Any]]
) -> tuple[dict[str, list[str]], int, int]:
    """The trainer's columns (anchor, positive, negative_1..k) with prefixes; k; rows dropped."""
    counts = [len(r["negatives"]) for r in rows]
    k = min(counts) if config.num_negatives is None else config.num_negatives
    if config.loss == "gist":
        # GISTEmbedLoss takes (anchor, positive) or (anchor, positive, negative).
        if config.num_negatives is not None and config.num_negatives > 1:
            raise ConfigError("num_negatives", "the gist loss takes at most 1 negative per row")
        k = min(k, 1)
    kept = [r for r in rows if len(r["negatives"]) >= k]
    if not kept:
        raise DataError(f"no row has {k} negatives (num_negatives)")
    q, d = config.query_prefix, config.document_prefix
    columns = {
        "anchor": [q + r["anchor"] for r in kept],
        "positive": [d + r["positive"] for r in kept],
    }
    for i in range(k):
        columns[f"negative_{i + 1}"] = [d + r["negatives"][i] for r in kept]
    return columns, k, len(rows) - len(kept)


def _eval_sets(
    config: TrainConfig, eval_data: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """(queries, corpus, relevant) for InformationRetrievalEvaluator, prefixes applied.

    ``eval_data``: {"corpus": {id: text or {"title", "text"}}, "queries": {id: text},
    "qrels": {query_id: {doc_id: relevance}}}; relevance > 0 counts as relevant.
    """
    from workers.ml.encode import document_text

    try:
        corpus_in, queries_in, qrels = eval_data["corpus"], eval_data["queries"], eval_data["qrels"]
    except (KeyError, TypeError):
        raise DataError("eval data needs 'corpus', 'queries' and 'qrels'") from None
    corpus = {}
    for doc_id, doc in corpus_in.items():
        if isinstance(doc, dict):
            doc = document_text(doc.get("title") or "", doc.get("text") or "")
        corpus[str(doc_id)] = config.document_prefix + str(doc)
    queries = {str(qid): config.query_prefix + str(text) for qid, text in queries_in.items()}
    relevant = {
        str(qid): {str(doc) for doc, rel in docs.items() if rel > 0 and str(doc) in corpus}
        for qid, docs in qrels.items()
        if str(qid) in queries
    }
    relevant = {qid: docs for qid, docs in relevant.items() if docs}
    if not relevant:
        raise DataError("eval data: no query has a relevant document in the corpus")
    return queries, corpus, relevant


# --- model description without torch ------------------------------------------------------


def _transformer_config(path: str) -> dict[str, Any]:
    """The transformer's config.json of a model folder (either layout)."""
    folder = Path(path)
    sub = folder
    modules = folder / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("Transformer"):
                sub = folder / module.get("path", "")
                break
    config_path = sub / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json for the transformer")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # Composite configs (e.g. T5-style encoders) keep the numbers one level down.
    return config.get("text_config") or config


def _arch_numbers(config: dict[str, Any]) -> dict[str, int]:
    hidden = int(config.get("hidden_size") or config.get("d_model") or config.get("n_embd") or 0)
    return {
        "hidden": hidden,
        "layers": int(
            config.get("num_hidden_layers")
            or config.get("num_layers")
            or config.get("n_layer")
            or 0
        ),
        "heads": int(
            config.get("num_attention_heads")
            or config.get("num_heads")
            or config.get("n_head")
            or 1
        ),
        "intermediate": int(config.get("intermediate_size") or config.get("d_ff") or 4 * hidden),
        "vocab": int(config.get("vocab_size") or 0),
        "positions": int(config.get("max_position_embeddings") or 512),
    }


def lora_targets(config: TrainConfig) -> list[str] | str:
    """The configured LoRA targets, or the attention projections of the base architecture."""
    if config.lora_target_modules is not None:
        return config.lora_target_modules
    model_type = str(_transformer_config(config.base_model_path).get("model_type", ""))
    return ATTENTION_PROJECTIONS.get(model_type, "all-linear")


# --- estimates -----------------------------------------------------------------------------


def total_steps(config: TrainConfig, n_rows: int) -> dict[str, int]:
    """Optimizer steps as the Hugging Face Trainer counts them (no gradient accumulation)."""
    steps_per_epoch = max(1, math.ceil(n_rows / config.batch_size))
    steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    return {
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps,
        "warmup_steps": math.ceil(steps * config.warmup_ratio),
    }


def estimate(
    config: TrainConfig,
    n_rows: int,
    *,
    num_negatives: int | None = None,
    query_tokens: int | None = None,
    document_tokens: int | None = None,
) -> dict[str, Any]:
    """Peak training memory and step counts, before launch, from ``config.json`` alone.

    Rough by design (it is for "will this fit", not for accounting):

    * parameters: the safetensors headers when readable, else a BERT-shaped count from the config;
    * weights 4 bytes/parameter (mixed precision keeps fp32 master weights); gradients 4 bytes
      and AdamW's two moments 8 bytes per *trainable* parameter (LoRA: only the adapter's
      ``r × (in + out)`` per targeted projection);
    * activations: per text, per token, per layer ``17·h + 2.5·heads·s`` values kept for the
      backward pass (Korthikanti et al. 2022, "Reducing Activation Recomputation"), 4 bytes each
      (2 with bf16/fp16), for ``batch × (2 + negatives)`` texts of ``s`` tokens (queries at
      ``query_tokens``, documents at ``document_tokens``, both default ``max_seq_length`` — the
      worst case, since batches pad to their longest text). ``cached_mnrl`` holds one mini-batch;
      gradient checkpointing keeps each layer's input (``h`` values) plus one full layer;
    * gist adds the guide's weights (inference only); the total adds 10 % for allocator slack.
    """
    from workers.common.inspect import inspect_model_folder

    arch = _arch_numbers(_transformer_config(config.base_model_path))
    h, layers, heads, inter = arch["hidden"], arch["layers"], arch["heads"], arch["intermediate"]
    try:
        counted = inspect_model_folder(config.base_model_path).parameters
    except (OSError, ValueError):
        counted = None
    per_layer = 4 * h * h + 2 * h * inter + 9 * h  # attention + FFN + biases and norms
    parameters = counted or (layers * per_layer + (arch["vocab"] + arch["positions"] + 2) * h)
    if config.method == "lora":
        targets = lora_targets(config)
        r = config.lora_r
        attention = {
            "query",
            "key",
            "value",
            "q",
            "k",
            "v",
            "q_lin",
            "k_lin",
            "v_lin",
            "q_proj",
            "k_proj",
            "v_proj",
        }
        if targets == "all-linear":
            per = r * (4 * (h + h) + (h + inter) + (inter + h))
        else:
            per = 0
            for t in targets:
                if t in attention or t.endswith("attention.output.dense"):
                    per += r * 2 * h
                elif t == "Wqkv":
                    per += r * (h + 3 * h)
                else:  # an FFN projection or an unknown name: count it as h -> intermediate
                    per += r * (h + inter)
        trainable = layers * per
    else:
        trainable = parameters

    k = num_negatives if num_negatives is not None else (config.num_negatives or 0)
    q_len = min(query_tokens or config.max_seq_length, config.max_seq_length)
    d_len = min(document_tokens or config.max_seq_length, config.max_seq_length)
    half = config.bf16 or config.fp16
    act_bytes = 2 if half else 4
    # Rows whose activations are alive at once (cached MNRL: one mini-batch at a time).
    rows = config.batch_size
    if config.loss == "cached_mnrl":
        rows = min(config.batch_size, config.mini_batch_size)

    def per_text(s: int) -> float:
        # Values kept per text across all layers.
        full_layer = s * (17 * h + 2.5 * heads * s)
        if config.gradient_checkpointing:
            return s * h * layers + full_layer
        return full_layer * layers

    activations = rows * (per_text(q_len) + (1 + k) * per_text(d_len)) * act_bytes
    if config.loss == "cached_mnrl":
        # Plus the embeddings of the whole batch and their gradients.
        activations += config.batch_size * (2 + k) * h * 4 * 2
    weights = parameters * 4
    gradients = trainable * 4
    optimizer = trainable * 8
    guide = 0
    if config.loss == "gist" and config.guide_model_path:
        try:
            guide = (inspect_model_folder(config.guide_model_path).parameters or 0) * 4
        except (OSError, ValueError):
            guide = weights
    subtotal = weights + gradients + optimizer + activations + guide
    total = int(subtotal * 1.1)
    steps = total_steps(config, n_rows)
    return {
        "parameters": int(parameters),
        "trainable_parameters": int(trainable),
        "hidden_size": h,
        "layers": layers,
        "texts_per_step": config.batch_size * (2 + k),
        "bytes": {
            "weights": int(weights),
            "gradients": int(gradients),
            "optimizer": int(optimizer),
            "activations": int(activations),
            "guide": int(guide),
            "total": total,
        },
        "total_gib": round(total / 2**30, 3),
        **steps,
        "rows": n_rows,
    }


# --- building blocks -----------------------------------------------------------------------


def _device(config: TrainConfig) -> str:
    from workers.ml.encode import pick_device

    return pick_device(config.device)


def _load_model(config: TrainConfig, device: str) -> Any:
    from workers.ml.encode import load_encoder

    model = load_encoder(
        path=config.base_model_path,
        layout=config.layout,
        pooling=config.pooling,
        normalize=config.normalize,
        max_seq_length=config.max_seq_length,
        device=device,
    )
    if config.method == "lora":
        from peft import LoraConfig, TaskType

        model.add_adapter(
            LoraConfig(
                task_type=TaskType.FEATURE_EXTRACTION,
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=lora_targets(config),
            )
        )
    return model


def _load_guide(config: TrainConfig, device: str) -> Any:
    from workers.common.inspect import inspect_model_folder
    from workers.ml.encode import load_encoder

    assert config.guide_model_path
    info = inspect_model_folder(config.guide_model_path)
    guide = load_encoder(
        path=info.path,
        layout=info.layout,
        pooling=info.pooling if info.pooling in POOLINGS else "mean",
        normalize=info.normalize,
        max_seq_length=min(info.max_seq_length, config.max_seq_length),
        device=device,
    )
    guide.requires_grad_(False)
    return guide


def _matryoshka_dims(config: TrainConfig, width: int) -> list[int]:
    dims = config.matryoshka_dims or sorted(default_dims(width), reverse=True)
    too_big = [d for d in dims if d > width]
    if too_big:
        raise ConfigError(
            "matryoshka_dims", f"{too_big[0]} exceeds the model's embedding dimension {width}"
        )
    return sorted(dims, reverse=True)


def _build_loss(config: TrainConfig, model: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """The loss module, and what it resolved to (dims, pairs) for the result and the card."""
    from sentence_transformers.sentence_transformer import losses

    width = model.get_embedding_dimension()
    resolved: dict[str, Any] = {}
    if config.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, scale=config.scale)
    elif config.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, scale=config.scale, mini_batch_size=config.mini_batch_size
        )
    elif config.loss == "gist":
        loss = losses.GISTEmbedLoss(
            model, _load_guide(config, device), temperature=config.gist_temperature
        )
    elif config.loss == "matryoshka":
        dims = _matryoshka_dims(config, width)
        resolved["matryoshka_dims"] = dims
        loss = losses.MatryoshkaLoss(
            model, losses.MultipleNegativesRankingLoss(model, scale=config.scale), dims
        )
    elif config.loss == "matryoshka2d":
        dims = _matryoshka_dims(config, width)
        resolved["matryoshka_dims"] = dims
        loss = losses.Matryoshka2dLoss(
            model,
            losses.MultipleNegativesRankingLoss(model, scale=config.scale),
            dims,
            kl_div_weight=config.kl_div_weight,
            kl_temperature=config.kl_temperature,
        )
    elif config.loss == "starbucks":
        from workers.ml.losses import build_starbucks_loss

        layers = model[0].auto_model.config.num_hidden_layers
        pairs = config.starbucks_pairs or default_starbucks_pairs(layers, width)
        try:
            loss = build_starbucks_loss(
                model,
                pairs,
                scale=config.scale,
                kl_div_weight=config.kl_div_weight,
                kl_temperature=config.kl_temperature,
            )
        except ValueError as exc:
            raise ConfigError("starbucks_pairs", str(exc)) from None
        resolved["starbucks_pairs"] = [list(p) for p in loss.pairs]
    else:  # validate() rules this out
        raise ConfigError("loss", f"unknown loss {config.loss!r}")
    return loss, resolved


def _trainer_class() -> type:
    """SentenceTransformerTrainer without its model-card machinery: it renders a card (a jinja
    template, ~0.7 s) at every checkpoint and computes widget examples at start; this module
    writes its own card once, at the end."""
    from sentence_transformers import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            pass

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            import os

            import torch
            from transformers.trainer import TRAINING_ARGS_NAME

            output_dir = output_dir if output_dir is not None else self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            self.model.save_pretrained(output_dir, create_model_card=False)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    return Trainer


def _training_args(
    config: TrainConfig,
    *,
    output_dir: str,
    device: str,
    save: bool,
    evaluate_every: int | None,
    max_steps: int | None = None,
) -> Any:
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    cuda = str(device).startswith("cuda")
    steps = max_steps or config.max_steps
    # transformers 5 renamed gradient_checkpointing (the old name warns).
    names = {f.name for f in fields(SentenceTransformerTrainingArguments)}
    checkpointing = "activation_checkpointing"
    if checkpointing not in names:
        checkpointing = "gradient_checkpointing"
    return SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=config.epochs,
        max_steps=steps if steps else -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.effective_learning_rate,
        # transformers 5 takes a float in (0, 1) here as the warmup ratio.
        warmup_steps=config.warmup_ratio if config.warmup_ratio > 0 else 0,
        weight_decay=config.weight_decay,
        seed=config.seed,
        bf16=config.bf16 and cuda and _bf16_supported(),
        fp16=config.fp16 and cuda,
        **{checkpointing: config.gradient_checkpointing},
        batch_sampler=(
            BatchSamplers.NO_DUPLICATES if config.no_duplicates else BatchSamplers.BATCH_SAMPLER
        ),
        save_strategy="steps" if save else "no",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=evaluate_every,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _quiet(trainer: Any) -> None:
    """No prints to stdout from the trainer (the child process owns stdout for its protocol)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _progress_callback(
    *,
    batch_size: int,
    on_log: Callable[[dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
    checkpoint_dir: Path,
) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Turns the trainer's logs into plain dicts and stops it when asked."""

        def __init__(self) -> None:
            self.stopped = False
            self.last_time: float | None = None
            self.last_step = 0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.last_time, self.last_step = time.perf_counter(), state.global_step
            if on_log is not None:
                on_log({"kind": "begin", "step": state.global_step, "total_steps": state.max_steps})

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if should_stop is not None and not self.stopped and should_stop():
                self.stopped = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            base = {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "epoch": round(float(state.epoch or 0.0), 4),
            }
            if "loss" in logs:
                now = time.perf_counter()
                steps = state.global_step - self.last_step
                elapsed = now - (self.last_time or now)
                rate = steps * batch_size / elapsed if elapsed > 0 and steps > 0 else None
                self.last_time, self.last_step = now, state.global_step
                event = {
                    "kind": "train",
                    **base,
                    "loss": float(logs["loss"]),
                    "learning_rate": float(logs.get("learning_rate", 0.0)),
                    "grad_norm": _float_or_none(logs.get("grad_norm")),
                    "samples_per_s": None if rate is None else round(rate, 3),
                }
            elif any(k.startswith("eval_") for k in logs):
                event = {"kind": "eval", **base, "metrics": _eval_metrics(logs)}
            else:
                return
            if on_log is not None:
                on_log(event)

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if on_log is not None:
                path = checkpoint_dir / f"checkpoint-{state.global_step}"
                on_log({"kind": "checkpoint", "step": state.global_step, "path": str(path)})

    return Progress()


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


EVAL_NAME = "ir"
TRAINER_EVAL_KEYS = ("runtime", "samples_per_second", "steps_per_second")


def _eval_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """The evaluator's metrics without the trainer's and evaluator's prefixes."""
    out = {}
    for key, value in logs.items():
        name = key.removeprefix("eval_").removeprefix(EVAL_NAME + "_")
        if key.startswith("eval_") and name not in (
            "runtime",
            "samples_per_second",
            "steps_per_second",
        ):
            number = _float_or_none(value)
            if number is not None:
                out[name] = number
    return out


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder under ``output_dir/checkpoints``, or None.

    The trainer writes ``trainer_state.json`` last, so a folder without it is a checkpoint cut
    short by a kill and is skipped; so is one whose state file is cut short (a full disk).
    """
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        name = child.name
        if name.startswith("checkpoint-") and name[11:].isdigit():
            if _complete_json(child / "trainer_state.json"):
                found.append((int(name[11:]), child))
    return str(max(found)[1]) if found else None


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# --- the run -------------------------------------------------------------------------------


def train(
    *,
    config: TrainConfig,
    rows: Iterable[dict[str, Any]] | str | Path,
    output_dir: str | Path,
    eval_data: dict[str, Any] | None = None,
    resume_from: str | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``config.base_model_path`` on ``rows``; see the module docstring for layouts.

    ``resume_from``: a checkpoint folder, or ``"latest"`` for the newest one under
    ``output_dir/checkpoints`` (none there: start from scratch). A resumed run restores the
    model/adapter, optimizer, scheduler, RNG state and data position, and ends at the same total
    number of steps as an uninterrupted one.

    ``on_log(event)`` receives dicts with a ``kind``: ``"begin"`` (step: 0, or the step resumed
    from; total_steps) once the model is loaded and the first step is about to run; ``"train"``
    (step, total_steps, epoch, loss, learning_rate, grad_norm, samples_per_s: training rows per
    second since the previous log) every ``logging_steps``; ``"eval"`` (step, total_steps, epoch,
    metrics) every ``eval_steps`` when ``eval_data`` is given; ``"checkpoint"`` (step, path)
    after each checkpoint is written.

    ``should_stop()`` is called after every optimizer step; True stops the trainer cleanly (no
    final model is written, ``result["stopped"]`` is True, the checkpoints stay for a resume).

    Returns steps, epochs, train_loss (mean over the steps this call ran), final_loss (last
    logged), trainable/total parameters, model_dir, adapter_dir (LoRA), metrics (the final
    evaluation when eval data was given: cosine_ndcg@10, cosine_mrr@10, cosine_recall@k, …),
    log_history (the trainer's), and the resolved setup (rows, negatives_per_row, learning_rate,
    precision, device, matryoshka_dims / starbucks_pairs / lora_target_modules).
    """
    config.validate()
    data = read_rows(rows)
    columns, k, dropped = _columns(config, data)
    eval_sets = _eval_sets(config, eval_data) if eval_data else None
    if resume_from == "latest":
        resume_from = last_checkpoint(output_dir)
    elif resume_from is not None and not Path(resume_from).is_dir():
        raise FileNotFoundError(f"{resume_from}: no such checkpoint folder")

    import torch
    from datasets import Dataset
    from transformers import set_seed

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / CHECKPOINTS
    device = _device(config)
    cuda = device.startswith("cuda")
    set_seed(config.seed)
    model = _load_model(config, device)
    loss, resolved = _build_loss(config, model, device)
    trainable, total = _count_parameters(model)

    evaluator = None
    if eval_sets is not None:
        from sentence_transformers.sentence_transformer.evaluation import (
            InformationRetrievalEvaluator,
        )

        queries, corpus, relevant = eval_sets
        evaluator = InformationRetrievalEvaluator(
            queries=queries,
            corpus=corpus,
            relevant_docs=relevant,
            name=EVAL_NAME,
            batch_size=config.batch_size,
            show_progress_bar=False,
            write_csv=False,
        )
    args = _training_args(
        config,
        output_dir=str(checkpoint_dir),
        device=device,
        save=True,
        evaluate_every=config.eval_steps if evaluator is not None else None,
    )
    progress = _progress_callback(
        batch_size=config.batch_size,
        on_log=on_log,
        should_stop=should_stop,
        checkpoint_dir=checkpoint_dir,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(columns),
        loss=loss,
        evaluator=evaluator,
        callbacks=[progress],
    )
    _quiet(trainer)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    state = trainer.state
    history = [dict(entry) for entry in state.log_history]
    train_losses = [e["loss"] for e in history if "loss" in e]

    result: dict[str, Any] = {
        "steps": state.global_step,
        "total_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0.0), 4),
        "train_loss": float(output.training_loss),
        "final_loss": float(train_losses[-1]) if train_losses else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "model_dir": None,
        "adapter_dir": None,
        "checkpoint_dir": str(checkpoint_dir),
        "resumed_from": resume_from,
        "stopped": bool(progress.stopped),
        "metrics": {},
        "log_history": history,
        "rows": len(columns["anchor"]),
        "rows_dropped": dropped,
        "negatives_per_row": k,
        "learning_rate": config.effective_learning_rate,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "device": device,
        "train_seconds": round(seconds, 3),
        **resolved,
    }
    if config.method == "lora":
        result["lora_target_modules"] = lora_targets(config)
    if progress.stopped:
        return result

    if evaluator is not None:
        model.eval()
        with torch.no_grad():
            raw = evaluator(model)
        result["metrics"] = {
            k.removeprefix(EVAL_NAME + "_"): float(v)
            for k, v in raw.items()
            if isinstance(v, (int, float))
        }

    import shutil

    model_dir = out / MODEL
    # A previous attempt's files must not mix in (a stale adapter_config.json would make a
    # merged folder load as base + adapter).
    for stale in (model_dir, out / ADAPTER):
        if stale.exists():
            shutil.rmtree(stale)
    if config.method == "lora":
        adapter_dir = out / ADAPTER
        model[0].auto_model.save_pretrained(str(adapter_dir))
        result["adapter_dir"] = str(adapter_dir)
        if config.merge_lora:
            del trainer, loss
            model = _merged(config, adapter_dir, device)
    model.save(str(model_dir), create_model_card=False)
    result["model_dir"] = str(model_dir)
    with atomic_write(model_dir / "README.md", "w") as fh:
        fh.write(model_card(config=config, result=result, data=data))
    if cuda:
        from workers.ml.encode import free_memory

        del model
        free_memory(device)
    return result


def _merged(config: TrainConfig, adapter_dir: Path, device: str) -> Any:
    """A fresh base model with the saved adapter merged into its weights."""
    from peft import PeftModel

    from workers.ml.encode import load_encoder

    model = load_encoder(
        path=config.base_model_path,
        layout=config.layout,
        pooling=config.pooling,
        normalize=config.normalize,
        max_seq_length=config.max_seq_length,
        device=device,
    )
    transformer = model[0]
    merged = PeftModel.from_pretrained(transformer.auto_model, str(adapter_dir)).merge_and_unload()
    transformer.model = merged
    return model


# --- step time -----------------------------------------------------------------------------


def measure_step_time(
    config: TrainConfig,
    rows: Iterable[dict[str, Any]] | str | Path,
    steps: int = 3,
) -> float:
    """Seconds per optimizer step, the mean over ``steps`` real steps after one warm-up step.

    Uses the config as it stands (model, method, loss, batch size, precision) on the first
    ``batch_size × (steps + 1)`` rows (reused if fewer), writing nothing but a temporary folder.
    """
    import tempfile

    from datasets import Dataset
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import TrainerCallback, set_seed

    if steps < 1:
        raise ValueError("steps must be >= 1")
    config.validate()
    data = read_rows(rows)
    need = config.batch_size * (steps + 1)
    data = (data * math.ceil(need / len(data)))[:need]
    columns, _, _ = _columns(config, data)
    device = _device(config)
    set_seed(config.seed)
    model = _load_model(config, device)
    loss, _ = _build_loss(config, model, device)

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.begun = 0.0
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if str(device).startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            self.begun = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if str(device).startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.begun)

    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="embedhub-steptime-") as tmp:
        args = _training_args(
            config,
            output_dir=tmp,
            device=device,
            save=False,
            evaluate_every=None,
            max_steps=steps + 1,
        )
        # Full batches every step: the no-duplicates sampler could cut repeated rows short.
        args.batch_sampler = BatchSamplers.BATCH_SAMPLER
        trainer = _trainer_class()(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(columns),
            loss=loss,
            callbacks=[clock],
        )
        _quiet(trainer)
        trainer.train()
    timed = clock.times[1:] or clock.times
    return sum(timed) / len(timed)


# --- model card ----------------------------------------------------------------------------


def model_card(*, config: TrainConfig, result: dict[str, Any], data: list[dict[str, Any]]) -> str:
    """A README.md for the trained model: base, data summary, configuration, final metrics."""
    from workers.common.inspect import inspect_model_folder

    try:
        base = inspect_model_folder(config.base_model_path)
        base_line = f"`{base.path}` ({base.architecture}, {base.dimension} dimensions)"
    except (OSError, ValueError):
        base_line = f"`{config.base_model_path}`"
    method = (
        f"LoRA (r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}, "
        f"targets {result.get('lora_target_modules')}), "
        + ("merged into the weights" if config.merge_lora else "saved as an adapter")
        if config.method == "lora"
        else "full fine-tuning"
    )
    anchors = [len(r["anchor"].split()) for r in data]
    positives = [len(r["positive"].split()) for r in data]

    def mean(values: list[int]) -> str:
        return f"{sum(values) / len(values):.1f}" if values else "-"

    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags:",
        "- sentence-transformers",
        "- embedhub",
        f"- {config.loss}",
        "---",
        "",
        "# Fine-tuned embedding model",
        "",
        "Trained with EmbedHub (sentence-transformers "
        f"{_version('sentence-transformers')}, transformers {_version('transformers')}).",
        "",
        "## Base model",
        "",
        f"- Base: {base_line}",
        f"- Method: {method}",
        f"- Loss: {LOSS_LABELS[config.loss]}"
        + (
            f", dims {result['matryoshka_dims']}"
            if "matryoshka_dims" in result
            else f", (layer, dim) pairs {result['starbucks_pairs']}"
            if "starbucks_pairs" in result
            else ""
        ),
        "",
        "## Training data",
        "",
        f"- Rows: {result['rows']} (dropped for too few negatives: {result['rows_dropped']})",
        f"- Hard negatives per row: {result['negatives_per_row']}",
        f"- Mean words: anchor {mean(anchors)}, positive {mean(positives)}",
        f"- Query prefix: `{config.query_prefix}`"
        if config.query_prefix
        else "- Query prefix: none",
        f"- Document prefix: `{config.document_prefix}`"
        if config.document_prefix
        else "- Document prefix: none",
        "",
        "## Training",
        "",
        f"- Steps: {result['steps']} ({result['epochs']} epochs), "
        f"batch size {config.batch_size}, learning rate {result['learning_rate']}",
        f"- Precision: {result['precision']} on {result['device']}",
        f"- Mean training loss: {result['train_loss']:.4f}"
        + (f", last logged: {result['final_loss']:.4f}" if result.get("final_loss") else ""),
        f"- Parameters: {result['trainable_parameters']:,} trainable of "
        f"{result['total_parameters']:,}",
        "",
    ]
    if result.get("metrics"):
        lines += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(result["metrics"].items())]
        lines.append("")
    lines += [
        "## Configuration",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=2, sort_keys=True),
        "```",
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/folder")',
        f'queries = model.encode(["{config.query_prefix}a question"])',
        f'documents = model.encode(["{config.document_prefix}a passage"])',
        "```",
        "",
    ]
    return "\n".join(lines)


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"
