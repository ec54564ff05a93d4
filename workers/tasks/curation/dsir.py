"""DSIR selection over a training version: the selected rows as one new version and a random
subset of the same size as another (the baseline), both with the source as parent."""

from __future__ import annotations

from django.db import transaction

from apps.datasets.curation import CurationError
from apps.datasets.models import CurationJob, DatasetVersion
from apps.datasets.services import dataset_version_derive
from workers.common.configs.curation import DsirConfig
from workers.tasks.runtime import ProgressReporter


def _target_texts(config: DsirConfig) -> list[str]:
    # The web resolved the target in the job's team when it made the row.
    target = DatasetVersion.objects.get(pk=config.target)
    if config.target_texts == "documents":
        return [(t + " " + x).strip() for t, x in target.documents.values_list("title", "text")]
    if config.target_texts == "anchors":
        return list(target.training_rows.values_list("anchor", flat=True))
    queries = target.queries.all()
    if config.target_split:
        queries = queries.filter(qrels__split=config.target_split).distinct()
    return list(queries.values_list("text", flat=True))


def run(*, job: CurationJob, config: DsirConfig, report: ProgressReporter) -> dict:
    from workers.ml.dsir import dsir_select

    report("reading rows")
    rows = list(
        job.source.training_rows.order_by("row").values_list(
            "row", "anchor", "positive", "negatives", "score"
        )
    )
    target = _target_texts(config)
    if not target:
        raise CurationError("The target set has no texts.")
    if config.field == "anchor":
        raw = [a for _, a, _, _, _ in rows]
    else:
        raw = [f"{a} {p}" for _, a, p, _, _ in rows]
    report("fitting importance weights")
    selection = dsir_select(raw_texts=raw, target_texts=target, k=config.k, seed=config.seed)
    report.check()
    result = {
        "rows": len(rows),
        "k": config.k,
        "target_texts": len(target),
        "kl_raw": selection.kl_raw,
        "kl_selected": selection.kl_selected,
        "kl_random": selection.kl_random,
        "kl_reduction": selection.kl_reduction,
        "kl_reduction_random": selection.kl_reduction_random,
    }
    made = {}
    with transaction.atomic():  # both versions or neither
        for operation, picked, kl in (
            ("dsir_select", selection.selected, selection.kl_selected),
            ("random_subset", selection.random, selection.kl_random),
        ):
            made[operation], _ = dataset_version_derive(
                job=job,
                operation=operation,
                params={
                    "operation": operation,
                    "source_version": job.source.pk,
                    **job.params,
                    "kl_to_target": kl,
                    "kl_source_to_target": selection.kl_raw,
                },
                label=f"{job.source} {operation.replace('_', ' ')} (job {job.pk})",
                rows=[rows[i] for i in picked],
                training_roles=job.source.training_roles,
            )
    return {
        "result": result,
        "version": made["dsir_select"],
        "baseline_version": made["random_subset"],
        "stage": "done",
    }
