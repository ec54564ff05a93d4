"""Fusion arithmetic against hand-computed examples: reciprocal rank fusion (ties, documents
missing on one side, weights) and the weighted sum of normalised scores; the weight tuning."""

from __future__ import annotations

import pytest

from workers.ml.fusion import fuse, normalise, ranked, rrf, tune_weight, weighted

DENSE = {"q": {"a": 0.9, "b": 0.8, "c": 0.7}}
LEXICAL = {"q": {"c": 12.0, "d": 10.0, "a": 3.0}}


def test_rrf_sums_reciprocal_ranks_and_a_missing_document_gets_nothing_from_that_side():
    fused = rrf([DENSE, LEXICAL], k=60)["q"]
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63, abs=1e-15)
    assert fused["b"] == pytest.approx(1 / 62, abs=1e-15)  # not in BM25's list
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61, abs=1e-15)
    assert fused["d"] == pytest.approx(1 / 62, abs=1e-15)  # not in the dense list
    # a and c tie exactly (1/61 + 1/63 both), as do b and d: ties break by document id.
    assert list(fused) == ["a", "c", "b", "d"]


def test_rrf_ranks_ties_within_a_run_by_id_and_honours_depth_top_k_and_weights():
    tied = {"q": {"y": 1.0, "x": 1.0, "z": 0.5}}
    assert ranked(tied["q"]) == ["x", "y", "z"]
    fused = rrf([tied], k=1)["q"]
    assert fused == {"x": 1 / 2, "y": 1 / 3, "z": 1 / 4}
    assert list(rrf([DENSE, LEXICAL], k=60, depth=1)["q"]) == ["a", "c"]
    assert len(rrf([DENSE, LEXICAL], k=60, top_k=2)["q"]) == 2
    only_dense = rrf([DENSE, LEXICAL], k=60, weights=[1.0, 0.0])["q"]
    assert list(only_dense)[:3] == ["a", "b", "c"]
    # A query one side did not answer at all still gets the other's list.
    assert list(rrf([DENSE, {}], k=60)["q"]) == ["a", "b", "c"]


def test_weighted_sum_of_minmax_scores_by_hand():
    fused = weighted([DENSE, LEXICAL], weights=[0.5, 0.5], normalization="minmax")["q"]
    # dense min-max: a 1, b 0.5, c 0; lexical: c 1, d 7/9, a 0. A missing document takes the
    # side's lowest normalised score (0 here).
    assert fused["a"] == pytest.approx(0.5 * 1 + 0.5 * 0)
    assert fused["b"] == pytest.approx(0.5 * 0.5 + 0.5 * 0)
    assert fused["c"] == pytest.approx(0.5 * 0 + 0.5 * 1)
    assert fused["d"] == pytest.approx(0.5 * 0 + 0.5 * 7 / 9)
    assert list(fused) == ["a", "c", "d", "b"]


def test_zscore_and_degenerate_lists():
    z = normalise({"a": 1.0, "b": 2.0, "c": 3.0}, "zscore")
    sd = (2 / 3) ** 0.5
    assert z == pytest.approx({"a": -1 / sd, "b": 0.0, "c": 1 / sd})
    assert normalise({"a": 5.0, "b": 5.0}, "minmax") == {"a": 0.0, "b": 0.0}
    assert normalise({}, "zscore") == {}
    fused = weighted([DENSE, LEXICAL], weights=[0.5, 0.5], normalization="zscore")["q"]
    lex = normalise(LEXICAL["q"], "zscore")
    dense = normalise(DENSE["q"], "zscore")
    assert fused["b"] == pytest.approx(0.5 * dense["b"] + 0.5 * min(lex.values()))
    with pytest.raises(ValueError, match="normalization"):
        normalise({"a": 1.0}, "l2")


def test_fuse_reads_the_settings_and_tuning_picks_the_best_weight():
    settings = {"fusion": "rrf", "rrf_k": 60, "dense_weight": 0.5, "candidates": 100}
    assert fuse(dense=DENSE, lexical=LEXICAL, settings=settings) == rrf([DENSE, LEXICAL], k=60)
    qrels = {"q": {"c": 1}}  # BM25's first, the dense side's last: BM25 must weigh more

    def score(judged, run):
        return 1.0 / (1 + list(run["q"]).index("c"))

    weighted_settings = {**settings, "fusion": "weighted", "normalization": "minmax"}
    weight, curve = tune_weight(dense=DENSE, lexical=LEXICAL, qrels=qrels,
                                settings=weighted_settings, score=score)  # fmt: skip
    assert len(curve) == 21 and curve[0][0] == 0.0 and curve[-1][0] == 1.0
    # c first needs (1 - w) > w (a's 1 on the dense side); at 0.5 a wins the tie by id.
    assert [w for w, v in curve if v == 1.0] == [w for w, _ in curve if w < 0.5]
    assert weight == 0.45  # among the best, the one nearest 0.5
