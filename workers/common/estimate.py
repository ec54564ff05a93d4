"""A fine-tuning run before launch, from the model folder's ``config.json`` alone: the LoRA
targets of an architecture, the optimizer steps of a run, and its peak training memory.

Pure Python (JSON and arithmetic, no torch): the web's preview and the run's creation call it,
and so does the trainer for the LoRA targets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from workers.common.configs.training import TrainConfig

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


KEEP_SHARE = 0.9  # the default number of negatives keeps at least this share of the rows


def default_negatives(counts: list[int]) -> int:
    """The most hard negatives per row that at least 90 % of the rows have: a set mined with
    5 per row trains with 5 even if a few rows got fewer (those rows are dropped, and the run
    says how many), instead of every row falling to the fewest any row has."""
    if not counts:
        return 0
    ordered = sorted(counts, reverse=True)
    return ordered[max(0, int(len(ordered) * KEEP_SHARE + 0.999999) - 1)]


def default_negatives_of(histogram: dict[int | str, int]) -> int:
    """:func:`default_negatives` of the rows that ``histogram`` ({negatives: rows}) counts."""
    total = sum(histogram.values())
    if not total:
        return 0
    position = max(0, int(total * KEEP_SHARE + 0.999999) - 1)  # in the descending order
    seen = 0
    for k, rows in sorted(((int(k), n) for k, n in histogram.items()), reverse=True):
        seen += rows
        if seen > position:
            return k
    return 0


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
