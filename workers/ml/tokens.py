"""Token lengths of texts under a model's own tokenizer (what truncation will really cut)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no such model folder")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def token_lengths(
    *,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 1024,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Tokens per text, special tokens included, without truncation."""
    out = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        ids = tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False)
        out[start : start + len(batch)] = [len(x) for x in ids["input_ids"]]
        if on_progress:
            on_progress(start + len(batch), len(texts))
    return out


def length_summary(lengths: np.ndarray, *, max_length: int, bins: int = 20) -> dict:
    """A histogram and the share of texts longer than ``max_length`` (truncated when encoded)."""
    if len(lengths) == 0:
        return {"count": 0, "histogram": [], "over_max": 0, "over_max_share": 0.0}
    top = int(max(lengths.max(), max_length))
    width = max(1, int(np.ceil(top / bins)))
    edges = np.arange(0, top + width + 1, width)
    counts, _ = np.histogram(lengths, bins=edges)
    over = int((lengths > max_length).sum())
    return {
        "count": int(len(lengths)),
        "max_length": int(max_length),
        "histogram": [
            [int(edges[i]), int(c)] for i, c in enumerate(counts) if c or i < len(counts)
        ],
        "bin_width": width,
        "mean": float(lengths.mean()),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "over_max": over,
        "over_max_share": over / len(lengths),
    }
