"""Retrieval metrics from ir-measures (pytrec_eval underneath), never our own formulas."""

from __future__ import annotations

from pathlib import Path

# Our names → ir-measures measure strings. Order is the order shown on pages.
METRICS: dict[str, str] = {
    "ndcg@1": "nDCG@1",
    "ndcg@3": "nDCG@3",
    "ndcg@5": "nDCG@5",
    "ndcg@10": "nDCG@10",
    "ndcg@100": "nDCG@100",
    # pytrec_eval has no cut-off for reciprocal rank, and ir-measures would send RR@10 to another
    # provider that breaks score ties differently; RR over the run cut at 10 in trec_eval's own
    # order (score, then document id, both descending) is the same measure, from pytrec_eval.
    "mrr@10": "RR",
    "recall@1": "R@1",
    "recall@5": "R@5",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "map@100": "AP@100",
    "p@1": "P@1",
    "p@10": "P@10",
}


# Metrics computed on the run cut at k before scoring (see "mrr@10" above).
RUN_CUTS = {"mrr@10": 10}


def trec_cut(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """The top k of each query in trec_eval's order: score, then document id, descending."""
    return {
        qid: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k])
        for qid, docs in run.items()
    }


def compute_metrics(
    *, qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Aggregate means and per-query values over the queries that have judgements.

    A judged query missing from the run scores 0 on every metric: it counts against the model
    rather than silently shrinking the denominator (pytrec_eval alone would skip it).
    """
    import ir_measures

    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(METRICS, 0.0) for qid in qrels}
    judged_run = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    if judged_run:
        full = {ir_measures.parse_measure(s): n for n, s in METRICS.items() if n not in RUN_CUTS}
        for m in ir_measures.iter_calc(list(full), qrels, judged_run):
            per_query[m.query_id][full[m.measure]] = float(m.value)
        for name, k in RUN_CUTS.items():
            measure = ir_measures.parse_measure(METRICS[name])
            for m in ir_measures.iter_calc([measure], qrels, trec_cut(judged_run, k)):
                per_query[m.query_id][name] = float(m.value)
    n = len(per_query)
    aggregate = {
        name: (sum(values[name] for values in per_query.values()) / n if n else 0.0)
        for name in METRICS
    }
    return aggregate, per_query


def write_trec_run(*, run: dict[str, dict[str, float]], path: str | Path, tag: str) -> None:
    """A TREC run file (qid Q0 docid rank score tag), readable by trec_eval."""
    with open(path, "w", encoding="utf-8") as fh:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                fh.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")
