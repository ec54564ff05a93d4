"""The calibration job: a deployment's index searched with a judged split's queries, each hit
labelled by the judgements, and a mapping from score to P(relevant) fitted with a threshold
(``workers.ml.calibration``); the search process then serves it (``apps.indexes.services``
publishes the manifest when the job succeeds).

The queries are encoded as the index's own query encoder does (same model, prefix and
precision, through the embedding cache: an evaluation or an index build of the same split has
usually encoded them already) and searched on the index's files, so the scores are the ones
the search process answers with.

Imports no ML library at module level: the web imports :func:`calibrate` to enqueue it.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.indexes.models import Calibration, IndexBuild
    from workers.tasks.runtime import ProgressReporter


@shared_task(
    name="workers.tasks.calibration.calibrate",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def calibrate(calibration_id: int) -> None:
    """Fit one Calibration row. Idempotent: a row that is not pending is left alone. Writes the
    row's model, threshold and results; on success the deployment's manifest entry carries it
    (when it was fitted on the index the deployment still serves)."""
    from apps.indexes.models import Calibration
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=Calibration, pk=calibration_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: calibration_execute(job=job, report=report))
    from apps.indexes.calibrations import calibration_publish

    calibration_publish(calibration_id=calibration_id)


def judged_hits(
    *, index: IndexBuild, split: str, depth: int, report: ProgressReporter
) -> tuple[list[str], list[tuple[list[float], list[int]]]]:
    """The split's judged queries (ids) and, for each, its top ``depth`` hits on ``index``:
    their scores best first and whether each is judged relevant (score > 0)."""
    import numpy as np

    from apps.datasets.selectors import evaluation_inputs
    from workers.ml.encode import encode_texts
    from workers.ml.indexing import LoadedIndex
    from workers.tasks.encoding import embedding_cache, encoding_for

    _, queries, qrels = evaluation_inputs(version=index.dataset_version, split=split)
    if not queries:
        raise ValueError(f"split {split!r} has no judged queries")
    # The query encoder the index records (and the search process uses): same model, prefix,
    # length and precision, so the same cache entry as the index build's and evaluations'.
    row = SimpleNamespace(model=index.model, dataset_version=index.dataset_version,
                          max_seq_length=index.max_seq_length, query_prefix=index.query_prefix,
                          document_prefix=index.document_prefix,
                          precision=(index.encoder or {}).get("precision") or "fp32")  # fmt: skip
    spec, _, query_key = encoding_for(job=row, split=split)
    cache = embedding_cache()
    ids = [qid for qid, _ in queries]
    hit = cache.get(query_key)
    if hit is not None and hit[1] == ids:
        vectors = hit[0]
    else:
        report("loading model")
        encoder = spec.load()
        vectors = encode_texts(
            encoder=encoder, texts=[spec.query_prefix + text for _, text in queries],
            normalize=spec.normalize, batch_size=32, precision=spec.precision,
            on_progress=lambda done, total: report("encoding queries", done, total),
        )  # fmt: skip
        del encoder
        cache.put(query_key, vectors, ids, {"kind": "queries"})
    report.check()
    report("searching", 0, len(ids))
    loaded = LoadedIndex.load(Path(index.path))
    scores, doc_rows = loaded.search(np.asarray(vectors, dtype=np.float32), depth)
    rows = []
    for qid, srow, drow in zip(ids, scores, doc_rows, strict=True):
        judged = qrels.get(qid, {})
        values = [float(s) for s in srow[: len(drow)] if math.isfinite(s)]
        rows.append((values, [int(judged.get(d, 0) > 0) for d in drow[: len(values)]]))
    return ids, rows


def calibration_execute(*, job: Calibration, report: ProgressReporter) -> dict[str, Any]:
    from workers.common.configs.calibration import CalibrationConfig
    from workers.ml.calibration import calibrate as fit_and_measure
    from workers.ml.calibration import partition

    config = CalibrationConfig.model_validate(job.params)
    index = job.index
    _, rows = judged_hits(index=index, split=config.split, depth=config.depth, report=report)
    if config.held_out_split:
        _, held = judged_hits(index=index, split=config.held_out_split, depth=config.depth,
                              report=report)  # fmt: skip
    else:
        aside = partition(len(rows), share=config.held_out_share, seed=config.seed)
        held = [r for r, out in zip(rows, aside, strict=True) if out]
        rows = [r for r, out in zip(rows, aside, strict=True) if not out]
    # The threshold is chosen on queries the mapping was not fitted on.
    chosen = partition(len(rows), share=config.calibration_share, seed=config.seed + 1)
    fit_rows = [r for r, c in zip(rows, chosen, strict=True) if not c]
    calibration_rows = [r for r, c in zip(rows, chosen, strict=True) if c]
    report.check()
    report("fitting", 0, 0)
    out = fit_and_measure(
        fit_rows=fit_rows, calibration_rows=calibration_rows, eval_rows=held,
        method=config.method, target=config.target, value=config.target_value,
        conformal=config.conformal,
    )  # fmt: skip
    model = out.pop("model")
    threshold = out.pop("threshold")
    return {
        "model": model,
        "threshold": threshold,
        "results": {**out, "depth": config.depth, "index": index.pk},
        "stage": "done",
    }
