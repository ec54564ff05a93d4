"""Calibrated relevance: from a retrieval score (and its query's score list) to the probability
that the hit is relevant, and a threshold under which hits are cut (abstain).

Plain functions over arrays; no Django. numpy only at module level, since the search process
applies a fitted calibration to every query (:func:`relevance_rows`): a fitted calibration is a
small JSON-able dict, and only :func:`fit` imports scikit-learn.

Each query's hits (best first, its retrieval's scores) give every hit these features:

- ``score``: the raw score (cosine for a normalised model);
- ``top``: the query's best score; ``gap``: its best minus its second best;
- ``mean`` / ``std``: the mean and spread of its first ``FEATURE_DEPTH`` scores;
- ``rank``: the hit's rank (1 = best).

Methods:

- ``isotonic``: a monotone step function of the raw score alone (scikit-learn's
  ``IsotonicRegression``), the same mapping for every query.
- ``logistic``: logistic regression on the score and the per-query features (Platt scaling
  with context), so a 0.55 after a top score of 0.9 and after one of 0.56 can differ.
- ``cosine_adapter``: after "Relevance Filtering for Embedding-based Retrieval" (Rossi et al.,
  CIKM 2024): a per-query mapping of the raw score, ``p = σ(a(q)·s + b(q))``, whose slope and
  offset are linear in the query's features (here its score list's top, gap, mean and spread;
  the paper predicts them from the query embedding), then one global threshold on ``p``. The
  slope is kept positive, so within a query the mapping never reorders hits.

Thresholds are chosen on a calibration part that the mapping was not fitted on: the lowest one
whose precision there reaches a target (the most recall at that precision), the highest whose
recall reaches a target, or, for recall, split conformal: with ``n`` relevant calibration hits
and target recall ``1 − α``, the ``⌊(n + 1)·α⌋``-th smallest calibrated value among them. Then a
new relevant hit exchangeable with those is kept with probability at least ``1 − α`` (a
statement about recall over relevant hits the retrieval returned, on average over draws of the
calibration set; hits of one query are not independent, so it holds as far as queries are
exchangeable, and says nothing about precision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Method = Literal["isotonic", "logistic", "cosine_adapter"]
METHODS: tuple[str, ...] = ("isotonic", "logistic", "cosine_adapter")
Target = Literal["precision", "recall"]
FEATURE_DEPTH = 10  # hits of a query its features read: the search process retrieves as many
QUERY_FEATURES = ("top", "gap", "mean", "std")
LOGISTIC_FEATURES = ("score", "below_top", "top", "gap", "mean", "std", "log_rank")
BINS = 10


# --- features ---------------------------------------------------------------------------------


def hit_table(rows: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """One entry per hit of every query (``rows[i]``: query i's scores, best first): the raw
    score, the query's features and the hit's rank, plus ``query`` (the row's number)."""
    columns: dict[str, list] = {k: [] for k in ("query", "score", "rank", *QUERY_FEATURES)}
    for i, row in enumerate(rows):
        s = np.asarray(row, dtype=np.float64)
        s = s[np.isfinite(s)]
        if not len(s):
            continue
        head = s[:FEATURE_DEPTH]
        stats = {
            "top": float(head[0]),
            "gap": float(head[0] - head[1]) if len(head) > 1 else 0.0,
            "mean": float(head.mean()),
            "std": float(head.std()),
        }
        n = len(s)
        columns["query"].extend([i] * n)
        columns["score"].extend(s.tolist())
        columns["rank"].extend(range(1, n + 1))
        for name in QUERY_FEATURES:
            columns[name].extend([stats[name]] * n)
    table = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    table["query"] = table["query"].astype(np.int64)
    return table


def _logistic_design(table: dict[str, np.ndarray]) -> np.ndarray:
    derived = {
        **table,
        "below_top": table["top"] - table["score"],
        "log_rank": np.log(table["rank"]),
    }
    return np.stack([derived[name] for name in LOGISTIC_FEATURES], axis=1)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


# --- fit and apply ----------------------------------------------------------------------------


def fit(*, method: str, table: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """A calibration of ``method`` fitted to ``labels`` (1 relevant, 0 not) of ``table``'s hits:
    a JSON-able dict that :func:`predict` applies."""
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(table["score"]):
        raise ValueError("one label per hit")
    if len(np.unique(y)) < 2:
        raise ValueError(
            "the calibration split needs relevant and non-relevant hits both (every hit "
            "retrieved is judged the same)"
        )
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        iso.fit(table["score"], y)
        return {"method": method, "x": iso.X_thresholds_.tolist(),
                "y": iso.y_thresholds_.tolist()}  # fmt: skip
    from sklearn.linear_model import LogisticRegression

    if method == "logistic":
        x = _logistic_design(table)
        mean, scale = _standardise(x)
        lr = LogisticRegression(C=1.0, max_iter=1000)
        lr.fit((x - mean) / scale, y)
        return {"method": method, "features": list(LOGISTIC_FEATURES), "mean": mean.tolist(),
                "scale": scale.tolist(), "coef": lr.coef_[0].tolist(),
                "intercept": float(lr.intercept_[0])}  # fmt: skip
    if method == "cosine_adapter":
        s = table["score"]
        s_mean, s_scale = float(s.mean()), float(s.std() or 1.0)
        f = np.stack([table[name] for name in QUERY_FEATURES], axis=1)
        f_mean, f_scale = _standardise(f)
        z = (s - s_mean) / s_scale
        fz = (f - f_mean) / f_scale
        # σ(a(q)·z + b(q)) with a(q) = a0 + a·f(q), b(q) = b0 + b·f(q): a logistic regression on
        # z, z·f and f (b0 is the intercept).
        design = np.concatenate([z[:, None], z[:, None] * fz, fz], axis=1)
        lr = LogisticRegression(C=1.0, max_iter=2000)
        lr.fit(design, y)
        coef = lr.coef_[0]
        k = len(QUERY_FEATURES)
        return {"method": method, "features": list(QUERY_FEATURES),
                "score_mean": s_mean, "score_scale": s_scale,
                "mean": f_mean.tolist(), "scale": f_scale.tolist(),
                "a0": float(coef[0]), "a": coef[1 : 1 + k].tolist(),
                "b0": float(lr.intercept_[0]), "b": coef[1 + k :].tolist()}  # fmt: skip
    raise ValueError(f"method: unknown calibration method {method!r} (known: {', '.join(METHODS)})")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


# The smallest slope of the adapter's per-query mapping: a query whose features would give a
# flat or falling mapping keeps its hits' order.
MIN_SLOPE = 1e-3


def predict(model: dict[str, Any], table: dict[str, np.ndarray]) -> np.ndarray:
    """The calibrated probability of every hit of ``table``."""
    method = model["method"]
    if method == "isotonic":
        x = np.asarray(model["x"], dtype=np.float64)
        y = np.asarray(model["y"], dtype=np.float64)
        return np.interp(table["score"], x, y)
    if method == "logistic":
        x = _logistic_design(table)
        z = (x - np.asarray(model["mean"])) / np.asarray(model["scale"])
        return _sigmoid(z @ np.asarray(model["coef"]) + model["intercept"])
    if method == "cosine_adapter":
        f = np.stack([table[name] for name in model["features"]], axis=1)
        fz = (f - np.asarray(model["mean"])) / np.asarray(model["scale"])
        z = (table["score"] - model["score_mean"]) / model["score_scale"]
        a = np.maximum(model["a0"] + fz @ np.asarray(model["a"]), MIN_SLOPE)
        b = model["b0"] + fz @ np.asarray(model["b"])
        return _sigmoid(a * z + b)
    raise ValueError(f"unknown calibration method {method!r}")


def relevance_rows(model: dict[str, Any], rows: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each query's hits' calibrated probabilities (``rows``: each query's scores, best first,
    as deep as retrieved: at least ``FEATURE_DEPTH`` where there are as many documents)."""
    table = hit_table(rows)
    p = predict(model, table) if len(table["score"]) else np.empty(0)
    out: list[list[float]] = [[] for _ in rows]
    for q, value in zip(table["query"].tolist(), p.tolist(), strict=True):
        out[q].append(value)
    return out


# --- measuring --------------------------------------------------------------------------------


def calibration_error(
    p: np.ndarray, labels: np.ndarray, *, bins: int = BINS
) -> tuple[float | None, list[dict[str, Any]]]:
    """Expected calibration error over ``bins`` equal-width bins of the predicted probability
    (Σ share of hits × |fraction relevant − mean predicted|), and the reliability diagram's
    bins: ``lo``, ``hi``, ``count``, ``predicted`` (mean) and ``observed`` (fraction relevant);
    ``predicted`` and ``observed`` are None for an empty bin."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64)
    n = len(p)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        predicted = float(p[mask].mean()) if count else None
        observed = float(y[mask].mean()) if count else None
        if count:
            ece += count / n * abs(observed - predicted)
        table.append({"lo": b / bins, "hi": (b + 1) / bins, "count": count,
                      "predicted": predicted, "observed": observed})  # fmt: skip
    return (ece if n else None), table


def _cuts(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct value, best first: the value, hits kept and relevant hits kept when
    every hit at or above it is kept."""
    order = np.argsort(-values, kind="stable")
    v, y = values[order], labels[order]
    tp = np.cumsum(y)
    kept = np.arange(1, len(v) + 1)
    last = np.r_[v[1:] != v[:-1], True]  # the last position of each run of equal values
    return v[last], kept[last], tp[last]


def threshold_for_precision(values, labels, target: float) -> float | None:
    """The lowest threshold (keep ``value ≥ t``) whose precision on these hits is at least
    ``target``: the most recall at that precision. None when no threshold reaches it."""
    v, kept, tp = _cuts(np.asarray(values, float), np.asarray(labels, float))
    ok = tp / kept >= target - 1e-12
    if not ok.any():
        return None
    return float(v[np.flatnonzero(ok)[-1]])


def threshold_for_recall(values, labels, target: float) -> float | None:
    """The highest threshold whose recall on these hits (relevant kept / relevant) is at least
    ``target``. None when there is no relevant hit."""
    y = np.asarray(labels, float)
    total = y.sum()
    if total <= 0:
        return None
    v, _, tp = _cuts(np.asarray(values, float), y)
    return float(v[np.flatnonzero(tp / total >= target - 1e-12)[0]])


def conformal_recall_threshold(values, labels, target: float) -> dict[str, Any]:
    """Split conformal for recall ``target`` = 1 − α: the ``⌊(n + 1)·α⌋``-th smallest value
    among the ``n`` relevant hits (when that rank is 0, too few hits for the guarantee, the
    smallest value of all: every hit is kept). A new relevant hit exchangeable with them
    scores below it with probability at most α."""
    v = np.asarray(values, float)
    y = np.asarray(labels, bool)
    relevant = np.sort(v[y])
    n = len(relevant)
    alpha = 1.0 - target
    rank = min(math.floor((n + 1) * alpha), n)
    threshold = float(relevant[rank - 1]) if rank >= 1 else float(v.min()) if len(v) else 0.0
    return {"threshold": threshold, "n": n, "rank": rank, "alpha": alpha,
            "bound": rank / (n + 1) if n else 1.0}  # fmt: skip


def operating_point(values, labels, queries, threshold: float | None) -> dict[str, Any]:
    """Precision, recall (of the relevant hits retrieved), hits kept and the share of queries
    left with no hit (abstained) when hits under ``threshold`` are cut."""
    v = np.asarray(values, float)
    y = np.asarray(labels, bool)
    q = np.asarray(queries)
    keep = v >= threshold if threshold is not None else np.zeros(len(v), bool)
    kept, tp, relevant = int(keep.sum()), int((keep & y).sum()), int(y.sum())
    all_queries = np.unique(q)
    answered = np.unique(q[keep])
    return {
        "threshold": threshold,
        "precision": tp / kept if kept else None,
        "recall": tp / relevant if relevant else None,
        "kept": kept,
        "hits": len(v),
        "relevant_kept": tp,
        "relevant": relevant,
        "abstain": 1 - len(answered) / len(all_queries) if len(all_queries) else None,
    }


def choose_threshold(values, labels, *, target: str, value: float, conformal: bool = False
                     ) -> dict[str, Any]:  # fmt: skip
    """The threshold for ``target`` (precision or recall) reaching ``value`` on these hits."""
    if target == "recall" and conformal:
        out = conformal_recall_threshold(values, labels, value)
        return {"threshold": out["threshold"], "conformal": out}
    if target == "precision":
        return {"threshold": threshold_for_precision(values, labels, value)}
    if target == "recall":
        return {"threshold": threshold_for_recall(values, labels, value)}
    raise ValueError(f"target: precision or recall, not {target!r}")


def partition(n: int, *, share: float, seed: int = 0) -> np.ndarray:
    """A fixed random choice of about ``share`` of ``n`` items (at least one, and one left
    out where n ≥ 2): True for the chosen."""
    rng = np.random.default_rng(seed)
    picked = np.zeros(n, bool)
    if n == 0:
        return picked
    count = min(max(1, round(share * n)), max(n - 1, 1))
    picked[rng.permutation(n)[:count]] = True
    return picked


def _labelled(rows: Sequence[tuple[Sequence[float], Sequence[int]]]):
    table = hit_table([scores for scores, _ in rows])
    labels = np.zeros(len(table["score"]), np.int64)
    offsets: dict[int, int] = {}
    for position, q in enumerate(table["query"].tolist()):
        offsets.setdefault(q, position)
    for q, (scores, judged) in enumerate(rows):
        finite = [int(j) for s, j in zip(scores, judged, strict=True) if math.isfinite(s)]
        if finite:
            labels[offsets[q] : offsets[q] + len(finite)] = finite
    return table, labels


def calibrate(
    *, fit_rows: Sequence[tuple[Sequence[float], Sequence[int]]],
    calibration_rows: Sequence[tuple[Sequence[float], Sequence[int]]],
    eval_rows: Sequence[tuple[Sequence[float], Sequence[int]]],
    method: str, target: str, value: float, conformal: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Fit ``method`` on ``fit_rows`` (each query: its hits' scores best first and their labels,
    1 relevant), choose the threshold for ``target`` on ``calibration_rows``, and measure both on
    ``eval_rows``: ECE and the reliability bins, and precision/recall at the threshold beside a
    single global raw-score threshold chosen the same way on the same queries."""
    table, labels = _labelled(fit_rows)
    model = fit(method=method, table=table, labels=labels)
    cal_table, cal_labels = _labelled(calibration_rows)
    ev_table, ev_labels = _labelled(eval_rows)
    cal_p = predict(model, cal_table)
    ev_p = predict(model, ev_table)
    chosen = choose_threshold(cal_p, cal_labels, target=target, value=value, conformal=conformal)
    raw = choose_threshold(cal_table["score"], cal_labels, target=target, value=value,
                           conformal=conformal)  # fmt: skip
    ece, bins = calibration_error(ev_p, ev_labels)
    fit_ece, _ = calibration_error(predict(model, table), labels)
    return {
        "model": model,
        "threshold": chosen["threshold"],
        "conformal": chosen.get("conformal"),
        "raw_threshold": raw["threshold"],
        "ece": ece,
        "fit_ece": fit_ece,
        "brier": float(np.mean((ev_p - ev_labels) ** 2)) if len(ev_p) else None,
        "reliability": bins,
        "calibration_split": {
            "calibrated": operating_point(
                cal_p, cal_labels, cal_table["query"], chosen["threshold"]
            ),
            "raw": operating_point(
                cal_table["score"], cal_labels, cal_table["query"], raw["threshold"]
            ),
        },  # fmt: skip
        "held_out": {
            "calibrated": operating_point(ev_p, ev_labels, ev_table["query"], chosen["threshold"]),
            "raw": operating_point(
                ev_table["score"], ev_labels, ev_table["query"], raw["threshold"]
            ),
        },  # fmt: skip
        "counts": {
            "fit_queries": len(fit_rows),
            "fit_hits": int(len(labels)),
            "fit_relevant": int(labels.sum()),
            "calibration_queries": len(calibration_rows),
            "calibration_hits": int(len(cal_labels)),
            "held_out_queries": len(eval_rows),
            "held_out_hits": int(len(ev_labels)),
            "held_out_relevant": int(ev_labels.sum()),
        },  # fmt: skip
    }
