"""Retrieval metrics from ir-measures' pytrec_eval provider (trec_eval's code), never our own
formulas, plus TREC run files."""

from __future__ import annotations

import re
from pathlib import Path

from workers.common.metrics import METRICS  # noqa: F401  (re-exported for ML callers)

_CUTOFF = re.compile(r"^(?P<base>.+)@(?P<k>\d+)$")


def trec_cut(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """The top k of each query in trec_eval's order: score, then document id, both descending."""
    return {
        qid: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k])
        for qid, docs in run.items()
    }


def _plan() -> list[tuple[str, object, int | None]]:
    """(our name, measure for pytrec_eval, cut the run at k first or None) for every metric.

    pytrec_eval has no cut-off for reciprocal rank, and ir-measures would hand RR@10 to another
    provider that breaks score ties differently. RR of the run cut at k in trec_eval's own order
    is RR@k exactly (only the first relevant rank matters), so it is computed that way.
    """
    import ir_measures

    plan: list[tuple[str, object, int | None]] = []
    for name, text in METRICS.items():
        measure = ir_measures.parse_measure(text)
        if ir_measures.pytrec_eval.supports(measure):
            plan.append((name, measure, None))
            continue
        cut = _CUTOFF.match(text)
        base = ir_measures.parse_measure(cut["base"]) if cut else None
        if base is None or base.NAME != "RR" or not ir_measures.pytrec_eval.supports(base):
            raise ValueError(f"{text}: not computable with pytrec_eval")
        plan.append((name, base, int(cut["k"])))
    return plan


def compute_metrics(
    *, qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Aggregate means and per-query values over the queries that have judgements.

    A judged query missing from the run (or with no results) scores 0 on every metric: it
    counts against the model rather than silently shrinking the denominator, which is what
    pytrec_eval alone would do. Run queries without judgements are ignored.
    """
    import ir_measures

    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(METRICS, 0.0) for qid in qrels}
    judged_run = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    if judged_run:
        groups: dict[int | None, dict[object, str]] = {}
        for name, measure, k in _plan():
            groups.setdefault(k, {})[measure] = name
        for k, measures in groups.items():
            scored = judged_run if k is None else trec_cut(judged_run, k)
            for m in ir_measures.pytrec_eval.iter_calc(list(measures), qrels, scored):
                per_query[m.query_id][measures[m.measure]] = float(m.value)
    n = len(per_query)
    aggregate = {
        name: (sum(values[name] for values in per_query.values()) / n if n else 0.0)
        for name in METRICS
    }
    return aggregate, per_query


def write_trec_run(*, run: dict[str, dict[str, float]], path: str | Path, tag: str) -> None:
    """A TREC run file (qid Q0 docid rank score tag), readable by trec_eval.

    Ranks follow trec_eval's own order (ties by document id, descending) and scores keep full
    precision, so trec_eval on the file gives exactly the figures computed here. The file is
    written atomically: a full disk leaves no partial run behind.
    """
    from workers.common.atomic import atomic_write

    for value in (tag, *run):
        _check_token(value)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                _check_token(doc_id)
                fh.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """A TREC run file (as :func:`write_trec_run` writes it) back as {query: {doc: score}};
    ValueError naming the line for a malformed one."""
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{Path(path).name}, line {number}: expected 6 fields")
            try:
                score = float(parts[4])
            except ValueError:
                raise ValueError(
                    f"{Path(path).name}, line {number}: score is not a number"
                ) from None
            run.setdefault(parts[0], {})[parts[2]] = score
    return run


def _check_token(value: str) -> None:
    # The format is whitespace-separated: an id with a space would shift every column.
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r}: TREC run fields must be non-empty and without whitespace")
