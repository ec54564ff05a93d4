"""Fusing ranked lists (dense and BM25) into one: reciprocal rank fusion and a weighted sum of
normalised scores, and the choice of the weight on one split's judgements.

A run is {query id: {document id: score}} (higher is better), as everywhere in EmbedHub. Each
side's list is ranked by score, ties broken by document id, so that a fusion never depends on
dict order. A document missing from one side's list contributes nothing from that side (RRF),
or that side's lowest normalised score (weighted: it ranked below everything the side
returned).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Run = dict[str, dict[str, float]]

RRF_K = 60  # Cormack, Clarke & Buettcher (2009)
WEIGHT_GRID = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))


def ranked(scores: dict[str, float], depth: int | None = None) -> list[str]:
    """Document ids by descending score, ties by id; the first ``depth``."""
    order = sorted(scores, key=lambda doc: (-scores[doc], doc))
    return order[:depth] if depth else order


def _top(fused: dict[str, float], top_k: int) -> dict[str, float]:
    return {doc: fused[doc] for doc in ranked(fused, top_k)}


def rrf(
    runs: Sequence[Run], *, k: int = RRF_K, depth: int | None = None, top_k: int = 100,
    weights: Sequence[float] | None = None,
) -> Run:  # fmt: skip
    """Reciprocal rank fusion: score(d) = Σ_i w_i / (k + rank_i(d)), ranks from 1 within each
    run's first ``depth`` documents (all when None); the ``top_k`` best per query."""
    weights = weights or [1.0] * len(runs)
    out: Run = {}
    for qid in set().union(*runs):
        fused: dict[str, float] = {}
        for run, weight in zip(runs, weights, strict=True):
            for rank, doc in enumerate(ranked(run.get(qid, {}), depth), start=1):
                fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
        out[qid] = _top(fused, top_k)
    return out


def normalise(scores: dict[str, float], method: str) -> dict[str, float]:
    """Min-max to [0, 1] or z-score, over one query's list (a constant list: all 0)."""
    if not scores:
        return {}
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    if method == "minmax":
        low, span = values.min(), values.max() - values.min()
        norm = (values - low) / span if span > 0 else np.zeros_like(values)
    elif method == "zscore":
        sd = values.std()
        norm = (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)
    else:
        raise ValueError(f"normalization: {method!r} is not one of minmax, zscore")
    return dict(zip(scores, norm.tolist(), strict=True))


def weighted(
    runs: Sequence[Run], *, weights: Sequence[float], normalization: str = "minmax",
    depth: int | None = None, top_k: int = 100,
) -> Run:  # fmt: skip
    """Σ_i w_i · norm_i(d) over each run's first ``depth`` documents, normalised per query; a
    document a run did not return gets that run's lowest normalised score."""
    out: Run = {}
    for qid in set().union(*runs):
        sides = []
        for run in runs:
            scores = run.get(qid, {})
            keep = ranked(scores, depth)
            sides.append(normalise({doc: scores[doc] for doc in keep}, normalization))
        docs = set().union(*sides)
        fused = dict.fromkeys(docs, 0.0)
        for side, weight in zip(sides, weights, strict=True):
            floor = min(side.values()) if side else 0.0
            for doc in docs:
                fused[doc] += weight * side.get(doc, floor)
        out[qid] = _top(fused, top_k)
    return out


def fuse(*, dense: Run, lexical: Run, settings: dict, weight: float | None = None,
         top_k: int = 100) -> Run:  # fmt: skip
    """The two runs fused as ``settings`` (an evaluation's fusion settings) say; ``weight``
    (the dense side's, in [0, 1]) overrides the settings' one."""
    w = settings.get("dense_weight", 0.5) if weight is None else weight
    depth = settings.get("candidates")
    if settings.get("fusion", "rrf") == "rrf":
        return rrf([dense, lexical], k=settings.get("rrf_k", RRF_K), depth=depth, top_k=top_k,
                   weights=[2 * w, 2 * (1 - w)])  # fmt: skip
    return weighted([dense, lexical], weights=[w, 1 - w], top_k=top_k, depth=depth,
                    normalization=settings.get("normalization", "minmax"))  # fmt: skip


def tune_weight(
    *, dense: Run, lexical: Run, qrels: dict[str, dict[str, int]], settings: dict,
    score: Callable[[dict, Run], float], grid: Sequence[float] = WEIGHT_GRID,
) -> tuple[float, list[tuple[float, float]]]:  # fmt: skip
    """The dense weight of ``grid`` whose fusion scores best (``score(qrels, run)``, e.g. mean
    nDCG@10) on these judgements; ties go to the weight nearest 0.5. Returns (weight, curve)."""
    curve = [(w, score(qrels, fuse(dense=dense, lexical=lexical, settings=settings, weight=w)))
             for w in grid]  # fmt: skip
    best = max(curve, key=lambda wv: (round(wv[1], 12), -abs(wv[0] - 0.5)))
    return best[0], curve
