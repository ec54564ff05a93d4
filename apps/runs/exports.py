"""Results in formats people already use: CSV of metric tables and MTEB-style JSON. (The TREC
run file is served as written by the worker.)"""

from __future__ import annotations

import csv
import io

from apps.runs.compare import Comparison, Leaderboard
from apps.runs.models import Evaluation
from workers.common.metrics import METRICS

# Our metric names → MTEB's score keys ("ndcg@10" → "ndcg_at_10"; MTEB says precision and
# MRR spelled out).
_MTEB_PREFIX = {"ndcg": "ndcg", "mrr": "mrr", "recall": "recall", "map": "map", "p": "precision"}
MTEB_MAIN_SCORE = "ndcg@10"  # MTEB's main score for retrieval tasks


def mteb_key(name: str) -> str:
    base, _, k = name.partition("@")
    return f"{_MTEB_PREFIX.get(base, base)}_at_{k}" if k else name


def _identity(e: Evaluation) -> list:
    return [
        e.pk,
        e.label,
        e.method,
        e.model_id or "",
        e.dataset_version.dataset.name,
        e.dataset_version.number,
        e.split,
        e.query_count,
        e.max_seq_length,
    ]


_IDENTITY = [
    "evaluation",
    "label",
    "method",
    "model",
    "dataset",
    "version",
    "split",
    "queries",
    "max_seq_length",
]


def _write(rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue()


def leaderboard_csv(board: Leaderboard) -> str:
    """One row per evaluation, one column per metric, in the leaderboard's order."""
    rows = [_IDENTITY + board.metrics]
    for e in board.evaluations:
        rows.append(_identity(e) + [_fmt(e.metrics.get(m)) for m in board.metrics])
    return _write(rows)


def comparison_csv(comparison: Comparison) -> str:
    """One row per evaluation with each metric's mean, then its delta against the baseline,
    the 95% interval and both p-values (raw and after Holm) for every metric."""
    metrics = comparison.metrics
    header = list(_IDENTITY) + ["baseline"] + metrics
    for m in metrics:
        header += [
            f"{m} delta",
            f"{m} ci95 low",
            f"{m} ci95 high",
            f"{m} p randomization",
            f"{m} p randomization holm",
            f"{m} p t-test",
            f"{m} p t-test holm",
            f"{m} significant",
        ]
    rows = [header]
    for i, e in enumerate(comparison.evaluations):
        cells = [row.cells[i] for row in comparison.rows]
        line = _identity(e) + [int(e == comparison.baseline)] + [_fmt(c.value) for c in cells]
        for c in cells:
            if c.is_baseline:
                line += [""] * 8
            else:
                line += [
                    _fmt(c.delta),
                    _fmt(c.ci_low),
                    _fmt(c.ci_high),
                    _fmt(c.p_perm),
                    _fmt(c.p_perm_holm),
                    _fmt(c.p_t),
                    _fmt(c.p_t_holm),
                    int(c.significant),
                ]
        rows.append(line)
    return _write(rows)


def _fmt(v) -> str:
    return "" if v is None else repr(round(float(v), 6))


def evaluation_mteb(evaluation: Evaluation) -> dict:
    """An MTEB-style TaskResult: {task_name, dataset_revision, mteb_version, evaluation_time,
    scores: {split: [{main_score, ndcg_at_10, …, hf_subset, languages}]}}.

    MTEB stores scores as fractions (0–1), as here. The dataset revision is the version's
    content hash: the same data gives the same revision. ``mteb_version`` is null because MTEB
    did not produce these numbers (EmbedHub's ir-measures/pytrec_eval did); the provenance is
    under "embedhub", which MTEB's loader ignores.
    """
    version = evaluation.dataset_version
    metrics = evaluation.metrics
    scores = {mteb_key(name): metrics[name] for name in METRICS if name in metrics}
    scores.update({mteb_key(name): value for name, value in metrics.items() if name not in METRICS})
    entry = {
        "main_score": metrics.get(MTEB_MAIN_SCORE),
        **scores,
        "hf_subset": "default",
        # The dataset records no language; MTEB wants a list, so an empty one says "unknown".
        "languages": list(version.params.get("languages") or []),
    }
    return {
        "dataset_revision": version.content_hash,
        "task_name": f"{version.dataset.name} v{version.number}",
        "mteb_version": None,
        "scores": {evaluation.split: [entry]},
        "evaluation_time": evaluation.duration_seconds,
        "kg_co2_emissions": None,
        "embedhub": {
            "evaluation": evaluation.pk,
            "method": evaluation.method,
            "model": evaluation.model.name if evaluation.model_id else None,
            "model_id": evaluation.model_id,
            "dataset_version": version.pk,
            "queries": evaluation.query_count,
            "documents": evaluation.document_count,
            "top_k": evaluation.top_k,
            "max_seq_length": evaluation.max_seq_length,
            "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
        },
    }
