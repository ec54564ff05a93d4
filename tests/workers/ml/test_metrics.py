"""Our metric values equal pytrec_eval's (through ir-measures) on random runs and qrels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.ml.metrics import METRICS, compute_metrics, write_trec_run

DOCS = [f"d{i}" for i in range(30)]
QUERIES = [f"q{i}" for i in range(6)]

qrels_st = st.dictionaries(
    st.sampled_from(QUERIES),
    st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3), min_size=1, max_size=8),
    min_size=1,
    max_size=6,
)
run_st = st.dictionaries(
    st.sampled_from(QUERIES),
    st.dictionaries(
        st.sampled_from(DOCS), st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=30
    ),
    min_size=0,
    max_size=6,
)

PYTREC = {
    "ndcg@10": "ndcg_cut_10",
    "ndcg@100": "ndcg_cut_100",
    "recall@100": "recall_100",
    "recall@10": "recall_10",
    "p@10": "P_10",
    "map@100": "map_cut_100",
}


def cut(run: dict, k: int) -> dict:
    # pytrec_eval's tie order: score descending, then doc id descending.
    return {
        q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k])
        for q, d in run.items()
    }


@settings(max_examples=60, deadline=None)
@given(qrels=qrels_st, run=run_st)
def test_equal_to_pytrec_eval(qrels, run):
    import pytrec_eval

    aggregate, per_query = compute_metrics(qrels=qrels, run=run)
    assert set(per_query) == set(qrels)
    judged_run = {q: d for q, d in run.items() if q in qrels}
    reference = pytrec_eval.RelevanceEvaluator(qrels, set(PYTREC.values())).evaluate(judged_run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut(judged_run, 10))
    for qid in qrels:
        for ours, theirs in PYTREC.items():
            expected = reference[qid][theirs] if qid in reference else 0.0
            assert per_query[qid][ours] == pytest.approx(expected, abs=1e-9), (qid, ours)
        expected_rr = rr[qid]["recip_rank"] if qid in rr else 0.0
        assert per_query[qid]["mrr@10"] == pytest.approx(expected_rr, abs=1e-9)
    for name in METRICS:
        mean = sum(v[name] for v in per_query.values()) / len(per_query)
        assert aggregate[name] == pytest.approx(mean, abs=1e-12)


def test_known_answer():
    qrels = {"q1": {"a": 1, "c": 2}, "q2": {"z": 1}}
    run = {"q1": {"a": 0.9, "b": 0.8, "c": 0.7}}  # q2 has no results: it scores 0
    aggregate, per_query = compute_metrics(qrels=qrels, run=run)
    # trec_eval's nDCG uses linear gains: DCG = 1/log2(2) + 2/log2(4) = 2;
    # ideal = 2/log2(2) + 1/log2(3) = 2.6309…
    import math

    ndcg_q1 = 2 / (2 + 1 / math.log2(3))
    assert per_query["q1"]["ndcg@10"] == pytest.approx(ndcg_q1, abs=1e-12)
    assert per_query["q1"]["mrr@10"] == 1.0 and per_query["q1"]["recall@1"] == 0.5
    assert per_query["q1"]["p@1"] == 1.0 and per_query["q1"]["recall@100"] == 1.0
    assert per_query["q2"] == dict.fromkeys(METRICS, 0.0)
    assert aggregate["ndcg@10"] == pytest.approx(ndcg_q1 / 2, abs=1e-12)
    assert aggregate["mrr@10"] == 0.5


def test_trec_run_file(tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run(run={"q1": {"b": 0.2, "a": 0.9}}, path=path, tag="t")
    assert path.read_text().splitlines() == ["q1 Q0 a 1 0.900000 t", "q1 Q0 b 2 0.200000 t"]
