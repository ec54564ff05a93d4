"""Our metric values equal pytrec_eval's on random runs and qrels, and a known answer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.ml.metrics import METRICS, compute_metrics, trec_cut, write_trec_run

DOCS = [f"d{i}" for i in range(30)]
QUERIES = [f"q{i}" for i in range(6)]

qrels_st = st.dictionaries(
    st.sampled_from(QUERIES),
    st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3), min_size=1, max_size=8),
    min_size=1,
    max_size=6,
)
# Few distinct scores, so ties (and trec_eval's tie order) are exercised often.
score_st = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(-1, 1, allow_nan=False, width=32))
run_st = st.dictionaries(
    st.sampled_from(QUERIES),
    st.dictionaries(st.sampled_from(DOCS), score_st, min_size=0, max_size=30),
    min_size=0,
    max_size=6,
)

# Our names → trec_eval's, for every metric with a native equivalent.
PYTREC = {
    "ndcg@1": "ndcg_cut_1",
    "ndcg@3": "ndcg_cut_3",
    "ndcg@5": "ndcg_cut_5",
    "ndcg@10": "ndcg_cut_10",
    "ndcg@100": "ndcg_cut_100",
    "recall@1": "recall_1",
    "recall@5": "recall_5",
    "recall@10": "recall_10",
    "recall@100": "recall_100",
    "map@100": "map_cut_100",
    "p@1": "P_1",
    "p@10": "P_10",
}


def pytrec(qrels: dict, run: dict, measures: set[str]) -> dict[str, dict[str, float]]:
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def test_every_metric_is_checked() -> None:
    assert set(PYTREC) | {"mrr@10"} == set(METRICS)


def check_against_pytrec_eval(qrels: dict, run: dict) -> None:
    aggregate, per_query = compute_metrics(qrels=qrels, run=run)
    assert set(per_query) == set(qrels)
    judged = {q: d for q, d in run.items() if q in qrels and d}
    reference = pytrec(qrels, judged, set(PYTREC.values()))
    # pytrec_eval's recip_rank has no cut-off: compare RR@10 with it on the run cut at 10, and
    # independently with the uncut run's 1/rank zeroed when the first relevant is below 10.
    rr_cut = pytrec(qrels, trec_cut(judged, 10), {"recip_rank"})
    rr_full = pytrec(qrels, judged, {"recip_rank"})
    for qid in qrels:
        for ours, theirs in PYTREC.items():
            expected = reference[qid][theirs] if qid in reference else 0.0
            assert per_query[qid][ours] == pytest.approx(expected, abs=1e-9), (qid, ours)
        expected_rr = rr_cut[qid]["recip_rank"] if qid in rr_cut else 0.0
        assert per_query[qid]["mrr@10"] == pytest.approx(expected_rr, abs=1e-9)
        full = rr_full[qid]["recip_rank"] if qid in rr_full else 0.0
        assert per_query[qid]["mrr@10"] == pytest.approx(full if full >= 0.1 else 0.0, abs=1e-9)
    for name in METRICS:
        mean = sum(v[name] for v in per_query.values()) / len(per_query)
        assert aggregate[name] == pytest.approx(mean, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(qrels=qrels_st, run=run_st)
def test_equal_to_pytrec_eval(qrels: dict, run: dict) -> None:
    check_against_pytrec_eval(qrels, run)


# Long runs of two scores only: ties straddle the cut at 10, where trec_eval's tie order decides
# which documents are in the top 10.
tied_run_st = st.dictionaries(
    st.sampled_from(QUERIES),
    st.dictionaries(st.sampled_from(DOCS), st.sampled_from([0.0, 1.0]), min_size=11, max_size=30),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(qrels=qrels_st, run=tied_run_st)
def test_equal_to_pytrec_eval_with_ties_at_the_cut(qrels: dict, run: dict) -> None:
    check_against_pytrec_eval(qrels, run)


def test_ties_at_the_cut_follow_trec_eval() -> None:
    # 12 tied documents: trec_eval ranks them by id descending, so d00 is 12th and d11 first.
    run = {"q": {f"d{i:02d}": 0.5 for i in range(12)}}
    last = compute_metrics(qrels={"q": {"d00": 1}}, run=run)[1]["q"]
    first = compute_metrics(qrels={"q": {"d11": 1}}, run=run)[1]["q"]
    assert (last["mrr@10"], last["recall@10"], last["recall@100"]) == (0.0, 0.0, 1.0)
    assert (first["mrr@10"], first["p@1"]) == (1.0, 1.0)


def test_known_answer() -> None:
    qrels = {"q1": {"a": 1, "c": 2}, "q2": {"z": 1}, "q3": {"x": 1}}
    run = {
        "q1": {"a": 0.9, "b": 0.8, "c": 0.7},
        "q3": {f"n{i}": 1.0 - i / 100 for i in range(10)} | {"x": 0.5},  # x ranked 11th
        "q9": {"a": 1.0},  # no judgements: ignored
    }  # q2 has no results: it scores 0 on everything
    aggregate, per_query = compute_metrics(qrels=qrels, run=run)
    assert set(per_query) == {"q1", "q2", "q3"}
    # trec_eval's nDCG uses the relevance as gain: DCG = 1/log2(2) + 2/log2(4) = 2;
    # ideal = 2/log2(2) + 1/log2(3)
    ndcg_q1 = 2 / (2 + 1 / math.log2(3))
    assert per_query["q1"]["ndcg@10"] == pytest.approx(ndcg_q1, abs=1e-12)
    assert per_query["q1"]["ndcg@1"] == pytest.approx(1 / 2, abs=1e-12)  # gain 1 of ideal 2
    assert per_query["q1"]["mrr@10"] == 1.0 and per_query["q1"]["recall@1"] == 0.5
    assert per_query["q1"]["p@1"] == 1.0 and per_query["q1"]["recall@100"] == 1.0
    assert per_query["q1"]["p@10"] == pytest.approx(0.2)  # 2 relevant in a list cut at 10
    assert per_query["q1"]["map@100"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert per_query["q2"] == dict.fromkeys(METRICS, 0.0)
    assert per_query["q3"]["mrr@10"] == 0.0 and per_query["q3"]["recall@100"] == 1.0
    assert per_query["q3"]["ndcg@100"] == pytest.approx(1 / math.log2(12), abs=1e-12)
    assert aggregate["ndcg@10"] == pytest.approx(ndcg_q1 / 3, abs=1e-12)
    assert aggregate["mrr@10"] == pytest.approx(1 / 3)
    assert compute_metrics(qrels={}, run=run) == (dict.fromkeys(METRICS, 0.0), {})


def test_trec_run_file_reproduces_the_metrics(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_trec_run(run={"q1": {"b": 0.2, "a": 0.9}}, path=path, tag="t")
    assert path.read_text().splitlines() == ["q1 Q0 a 1 0.9 t", "q1 Q0 b 2 0.2 t"]
    # ties and scores that differ beyond 6 decimals survive the round trip through the file
    run = {
        "q1": {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.3000001, "e": 0.3},
        "q2": {"x": 0.1234567891, "y": 0.1234567890},
    }
    qrels = {"q1": {"a": 1, "e": 2}, "q2": {"y": 1}}
    write_trec_run(run=run, path=path, tag="t")
    with open(path) as fh:
        parsed = pytrec_eval.parse_run(fh)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["q1 Q0 c 1 0.5 t", "q1 Q0 b 2 0.5 t", "q1 Q0 a 3 0.5 t"]
    assert compute_metrics(qrels=qrels, run=parsed) == compute_metrics(qrels=qrels, run=run)
    with pytest.raises(ValueError, match="without whitespace"):
        write_trec_run(run={"q 1": {"a": 1.0}}, path=path, tag="t")
    with pytest.raises(ValueError, match="without whitespace"):
        write_trec_run(run={"q1": {"a b": 1.0}}, path=path, tag="t")
