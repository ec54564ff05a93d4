"""Calibration on synthetic retrieval scores whose probability of relevance is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.ml import calibration as cal

DEPTH = 20


def synthetic(n_queries: int, *, seed: int, probability=None):
    """Each query's scores (best first) and labels drawn with P(relevant | score) known:
    ``probability(score)``; by default a logistic curve of the raw score."""
    rng = np.random.default_rng(seed)
    probability = probability or (lambda s: 1 / (1 + np.exp(-(s - 0.55) * 25)))
    rows, truth = [], []
    for _ in range(n_queries):
        shift = rng.normal(0, 0.05)  # queries differ in where their scores sit
        scores = np.sort(np.clip(rng.normal(0.45 + shift, 0.12, DEPTH), -1, 1))[::-1]
        p = probability(scores)
        labels = (rng.random(DEPTH) < p).astype(int)
        rows.append((scores.tolist(), labels.tolist()))
        truth.append(p)
    return rows, np.concatenate(truth)


def test_known_probabilities_have_ece_near_zero():
    rows, truth = synthetic(3000, seed=1)
    labels = np.concatenate([r[1] for r in rows])
    ece, bins = cal.calibration_error(truth, labels)
    assert ece < 0.01
    assert sum(b["count"] for b in bins) == len(labels)
    # A miscalibrated predictor (the truth squared) is measured as such.
    worse, _ = cal.calibration_error(truth**2, labels)
    assert worse > 0.05


@pytest.mark.parametrize("method", cal.METHODS)
def test_each_method_is_calibrated_on_held_out_queries(method):
    fit_rows, _ = synthetic(1500, seed=2)
    cal_rows, _ = synthetic(500, seed=3)
    eval_rows, truth = synthetic(1500, seed=4)
    out = cal.calibrate(fit_rows=fit_rows, calibration_rows=cal_rows, eval_rows=eval_rows,
                        method=method, target="precision", value=0.8)  # fmt: skip
    assert out["ece"] < 0.03, out["ece"]
    # The fitted probabilities are close to the known ones, hit by hit.
    table = cal.hit_table([s for s, _ in eval_rows])
    p = cal.predict(out["model"], table)
    assert np.mean(np.abs(p - truth)) < 0.05
    # The fitted model is JSON (the manifest carries it to the search process) and round-trips.
    again = json.loads(json.dumps(out["model"]))
    assert np.allclose(cal.predict(again, table), p)
    json.dumps(out)  # the whole result is storable


def test_per_query_features_beat_a_global_mapping_when_queries_differ():
    """Relevance depends on the score relative to the query's top: isotonic (raw score only)
    cannot see it, logistic and the adapter can."""

    def relative(n, seed):
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n):
            base = rng.uniform(0.2, 0.8)
            scores = np.sort(base + rng.normal(0, 0.05, DEPTH))[::-1]
            p = 1 / (1 + np.exp(-(scores - scores[0] + 0.03) * 80))
            rows.append((scores.tolist(), (rng.random(DEPTH) < p).astype(int).tolist()))
        return rows

    fit_rows, cal_rows, eval_rows = relative(1500, 5), relative(500, 6), relative(1500, 7)
    brier = {}
    for method in cal.METHODS:
        out = cal.calibrate(fit_rows=fit_rows, calibration_rows=cal_rows, eval_rows=eval_rows,
                            method=method, target="precision", value=0.7)  # fmt: skip
        brier[method] = out["brier"]
    assert brier["logistic"] < brier["isotonic"] - 0.02
    assert brier["cosine_adapter"] < brier["isotonic"] - 0.02


@pytest.mark.parametrize("target,value", [("precision", 0.8), ("precision", 0.6),
                                          ("recall", 0.9), ("recall", 0.7)])  # fmt: skip
def test_the_threshold_meets_its_target_on_a_held_out_split(target, value):
    fit_rows, _ = synthetic(1500, seed=8)
    cal_rows, _ = synthetic(1500, seed=9)
    eval_rows, _ = synthetic(3000, seed=10)
    out = cal.calibrate(fit_rows=fit_rows, calibration_rows=cal_rows, eval_rows=eval_rows,
                        method="logistic", target=target, value=value)  # fmt: skip
    held = out["held_out"]["calibrated"]
    assert held[target] >= value - 0.02, held
    # …and not by keeping everything or nothing: the other measure is sensible.
    other = "recall" if target == "precision" else "precision"
    assert 0.1 < held[other] < 1.0
    # The raw-score baseline was chosen the same way, on the same queries.
    assert out["held_out"]["raw"][target] >= value - 0.03


def test_conformal_recall_guarantee_holds_on_average():
    """Split conformal: over many calibration draws, a fresh relevant hit is kept with
    probability at least 1 − α (the guarantee is on average over draws)."""
    rng = np.random.default_rng(11)
    alpha = 0.1
    kept = []
    for _ in range(300):
        p_rel = rng.beta(5, 2, size=40)  # calibrated values of relevant hits
        labels = np.ones(40, int)
        t = cal.conformal_recall_threshold(p_rel, labels, 1 - alpha)["threshold"]
        kept.append(rng.beta(5, 2) >= t)
    assert np.mean(kept) >= 1 - alpha - 0.03
    out = cal.conformal_recall_threshold(np.array([0.9, 0.2, 0.5]), np.array([1, 1, 1]), 0.5)
    assert out["rank"] == 2 and out["threshold"] == 0.5  # ⌊4 · 0.5⌋ = 2nd smallest


def test_threshold_helpers_on_a_hand_made_list():
    values = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 1, 0, 1, 0])
    assert cal.threshold_for_precision(values, labels, 1.0) == 0.8
    assert cal.threshold_for_precision(values, labels, 0.75) == 0.6  # 3 of 4
    assert cal.threshold_for_precision(values, np.zeros(5), 0.5) is None
    assert cal.threshold_for_recall(values, labels, 2 / 3) == 0.8
    assert cal.threshold_for_recall(values, labels, 1.0) == 0.6
    point = cal.operating_point(values, labels, np.array([0, 0, 1, 1, 1]), 0.8)
    assert point["precision"] == 1.0 and point["recall"] == pytest.approx(2 / 3)
    assert point["abstain"] == 0.5  # query 1 keeps nothing


def test_relevance_rows_follow_each_query_and_skip_padding():
    fit_rows, _ = synthetic(400, seed=12)
    out = cal.calibrate(fit_rows=fit_rows, calibration_rows=fit_rows, eval_rows=fit_rows,
                        method="cosine_adapter", target="precision", value=0.8)  # fmt: skip
    rows = [[0.9, 0.7, 0.5], [0.3, float("nan")]]
    got = cal.relevance_rows(out["model"], rows)
    assert [len(r) for r in got] == [3, 1]
    assert got[0][0] > got[0][1] > got[0][2]  # never reorders a query's hits


def test_a_split_judged_all_one_way_is_refused():
    rows = [([0.9, 0.8], [0, 0])]
    with pytest.raises(ValueError, match="relevant and non-relevant"):
        cal.calibrate(fit_rows=rows, calibration_rows=rows, eval_rows=rows,
                      method="logistic", target="precision", value=0.5)  # fmt: skip
