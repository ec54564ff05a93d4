"""Paired significance tests over per-query metric values: plain functions over arrays.

No Django here. scipy is imported inside the functions: it is not heavy like torch, but the
web process should only pay for it on the pages that compare runs.

The tests follow common IR practice (Smucker, Allan & Carterette, CIKM 2007): the paired
randomization test is the primary one, the paired t-test is shown beside it, and a bootstrap
confidence interval says how large the mean difference plausibly is. Holm's step-down
correction controls the family-wise error over the runs compared against one baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
RESAMPLES = 10_000
SEED = 0


Array = np.ndarray


@dataclass(frozen=True)
class PairedResult:
    """One run against the baseline on one metric. ``delta`` is mean(b) − mean(a)."""

    n: int
    mean_a: float
    mean_b: float
    delta: float
    p_t: float  # paired t-test, two-sided
    p_perm: float  # paired randomization (sign-flip permutation) test, two-sided
    ci_low: float  # bootstrap confidence interval of the mean delta
    ci_high: float


def _pair(a: Sequence | Array, b: Sequence | Array) -> tuple[Array, Array]:
    """Per-query values as float arrays of shape (rows, queries); a 1-d input is one row."""
    x = np.atleast_2d(np.asarray(a, dtype=float))
    y = np.atleast_2d(np.asarray(b, dtype=float))
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError("paired tests need two arrays of the same shape (rows × queries)")
    return x, y


def _out(values: Array, a) -> float | Array:
    # 1-d in, a float out; (rows × queries) in, one value per row out.
    return float(values[0]) if np.ndim(a) == 1 else values


def _mean_difference(x: Array, y: Array, axis: int = -1) -> Array:
    # Vectorized: scipy hands in whole batches of resamples along ``axis``.
    return np.mean(y - x, axis=axis)


def paired_t_test(a, b) -> float | Array:
    """Two-sided p-value of scipy.stats.ttest_rel, per row.

    Identical per-query values (every difference 0) make the statistic 0/0; scipy answers NaN,
    which reads as "no evidence of a difference", so it is 1.0 here.
    """
    from scipy import stats

    x, y = _pair(a, b)
    if x.shape[-1] < 2:
        return _out(np.ones(len(x)), a)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.asarray(stats.ttest_rel(y, x, axis=-1).pvalue, dtype=float).reshape(len(x))
    p[np.isnan(p) | np.all(x == y, axis=-1)] = 1.0
    return _out(p, a)


def paired_permutation_test(a, b, *, resamples: int = RESAMPLES, seed: int = SEED):
    """Two-sided p-value of the paired randomization test on the mean difference, per row.

    scipy.stats.permutation_test with permutation_type="samples" swaps a and b within each
    query (a sign flip of the difference). With at most ``resamples`` distinct flips
    (2**n ≤ resamples) scipy enumerates them all and the answer is exact; otherwise it draws
    ``resamples`` flips from a generator seeded with ``seed``, so a page shows the same p-value
    on every load. All rows share the same flips (one call for every metric and run is much
    faster than one call each); each row's p-value is the one a call of its own would give.
    """
    from scipy import stats

    x, y = _pair(a, b)
    if x.shape[-1] == 0:
        return _out(np.ones(len(x)), a)
    result = stats.permutation_test(
        (x, y),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        # Bounded memory on large query sets: rows × queries × batch floats per step.
        batch=max(1, min(1000, 4_000_000 // max(1, x.size))),
        alternative="two-sided",
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    p = np.minimum(1.0, np.asarray(result.pvalue, dtype=float).reshape(len(x)))
    p[np.all(x == y, axis=-1)] = 1.0
    return _out(p, a)


def bootstrap_ci(
    deltas,
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float] | tuple[Array, Array]:
    """Bootstrap (BCa) confidence interval of the mean of per-query differences, per row.

    A row whose differences are all equal has no spread to resample: its interval is that one
    value (scipy would warn and answer NaN). Should BCa still fail on a very skewed row, that
    row falls back to the percentile interval, which cannot.
    """
    import warnings

    from scipy import stats

    d = np.atleast_2d(np.asarray(deltas, dtype=float))
    if d.ndim != 2 or d.shape[-1] == 0:
        raise ValueError("bootstrap_ci needs at least one value per row")
    low = d[:, 0].copy()
    high = d[:, 0].copy()
    spread = ~np.all(d == d[:, :1], axis=-1)
    if spread.any():

        def interval(method: str, rows: Array) -> tuple[Array, Array]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # degenerate rows are handled below
                ci = stats.bootstrap(
                    (rows,),
                    np.mean,
                    vectorized=True,
                    axis=-1,
                    n_resamples=resamples,
                    batch=max(1, min(1000, 4_000_000 // max(1, rows.size))),
                    confidence_level=confidence,
                    method=method,
                    rng=np.random.default_rng(seed),
                ).confidence_interval
            return (
                np.asarray(ci.low, dtype=float).reshape(len(rows)),
                np.asarray(ci.high, dtype=float).reshape(len(rows)),
            )

        lo, hi = interval("BCa", d[spread])
        failed = np.isnan(lo) | np.isnan(hi)
        if failed.any():
            plo, phi = interval("percentile", d[spread][failed])
            lo[failed], hi[failed] = plo, phi
        low[spread], high[spread] = lo, hi
    if np.ndim(deltas) == 1:
        return float(low[0]), float(high[0])
    return low, high


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given (scipy has no Holm).

    Sort ascending; the i-th smallest (0-based) is multiplied by (m − i); a running maximum
    keeps the adjusted values monotone, and they are capped at 1. Reject where adjusted ≤ α.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def paired_compare(
    a, b, *, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedResult | list[PairedResult]:
    """Every statistic of baseline ``a`` against run ``b`` (before Holm), per row."""
    x, y = _pair(a, b)
    n = x.shape[-1]
    if n == 0:
        nan = float("nan")
        empty = [PairedResult(0, nan, nan, nan, 1.0, 1.0, nan, nan) for _ in x]
        return empty[0] if np.ndim(a) == 1 else empty
    low, high = bootstrap_ci(y - x, resamples=resamples, seed=seed)
    p_t = paired_t_test(x, y)
    p_perm = paired_permutation_test(x, y, resamples=resamples, seed=seed)
    out = [
        PairedResult(
            n=n,
            mean_a=float(x[i].mean()),
            mean_b=float(y[i].mean()),
            delta=float((y[i] - x[i]).mean()),
            p_t=float(p_t[i]),
            p_perm=float(p_perm[i]),
            ci_low=float(low[i]),
            ci_high=float(high[i]),
        )
        for i in range(len(x))
    ]
    return out[0] if np.ndim(a) == 1 else out


def verdict(p_adjusted: float, *, alpha: float = ALPHA) -> str:
    """The decision in words, with the number it rests on."""
    word = "significant" if p_adjusted <= alpha else "not significant"
    return f"{word} ({p_phrase(p_adjusted)} after Holm)"


def format_p(p: float) -> str:
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def p_phrase(p: float) -> str:
    """The p-value as a phrase: p = 0.41, or p < 0.001 for very small values."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
