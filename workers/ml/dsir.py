"""DSIR (Xie et al., 2023): pick k rows of a large set whose hashed n-gram distribution is
closest to a target's, by importance resampling; with the same-size random subset as baseline.

The estimator and the resampling are the authors' own package (``data-selection``); this module
feeds it our rows and measures the KL divergence that the paper reports.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Selection:
    selected: list[int]  # indices into the raw rows, ascending
    random: list[int]  # the baseline: a uniform random subset of the same size
    kl_raw: float  # KL(target || raw set)
    kl_selected: float
    kl_random: float

    @property
    def kl_reduction(self) -> float:
        return self.kl_raw - self.kl_selected

    @property
    def kl_reduction_random(self) -> float:
        return self.kl_raw - self.kl_random


def _kl(p: np.ndarray, counts: np.ndarray, alpha: float = 0.01) -> float:
    """KL(p || q) with q the add-``alpha`` smoothed distribution of n-gram ``counts``: a bucket
    the set never shows would otherwise make every divergence infinite."""
    p = p / p.sum()
    q = (counts + alpha) / (counts.sum() + alpha * len(counts))
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def _write_jsonl(path: Path, texts: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"i": i, "text": t}) + "\n")


def dsir_select(
    *,
    raw_texts: Sequence[str],
    target_texts: Sequence[str],
    k: int,
    seed: int = 0,
    ngrams: int = 2,
    num_buckets: int = 10_000,
) -> Selection:
    """Select ``k`` of ``raw_texts`` towards ``target_texts``."""
    from data_selection import HashedNgramDSIR

    n = len(raw_texts)
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and {n - 1} (the set has {n} rows)")
    if not target_texts:
        raise ValueError("the target set is empty")
    with tempfile.TemporaryDirectory(prefix="dsir-") as tmp:
        tmp = Path(tmp)
        _write_jsonl(tmp / "raw.jsonl", raw_texts)
        _write_jsonl(tmp / "target.jsonl", target_texts)
        dsir = HashedNgramDSIR(
            raw_datasets=[str(tmp / "raw.jsonl")],
            target_datasets=[str(tmp / "target.jsonl")],
            cache_dir=str(tmp / "cache"),
            num_proc=1,  # in-process: a Celery child cannot fork a pool of its own
            ngrams=ngrams,
            num_buckets=num_buckets,
            min_example_length=0,  # short rows (queries, anchors) are the point here
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        # The package samples with the global numpy generator (Gumbel top-k).
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            dsir.resample(out_dir=str(tmp / "out"), num_to_sample=k, cache_dir=str(tmp / "rs"))
        finally:
            np.random.set_state(state)
        selected = sorted(
            json.loads(line)["i"]
            for path in sorted((tmp / "out").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()
            if line
        )
        features = np.stack([dsir.featurizer(t) for t in raw_texts]).astype(np.float64)
        target = np.asarray(dsir.target_probs, dtype=np.float64)
    random = sorted(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist())
    return Selection(
        selected=selected,
        random=random,
        kl_raw=_kl(target, features.sum(axis=0)),
        kl_selected=_kl(target, features[selected].sum(axis=0)),
        kl_random=_kl(target, features[random].sum(axis=0)),
    )
