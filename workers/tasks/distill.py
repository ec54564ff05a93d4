"""The static distillation job: Model2Vec over a registered model, the result registered with
the source as parent, its speed measured against the source's on the same texts, and both
evaluated on one dataset version (each evaluation its own job) so that the page can say how
much quality the speed costs.

Imports no ML library at module level: the web imports :func:`distill` to enqueue it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.registry.models import DistillJob
    from workers.tasks.runtime import ProgressReporter


@shared_task(
    name="workers.tasks.distill.distill",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def distill(job_id: int) -> None:
    """Run one DistillJob row. Idempotent: a row that is not pending is left alone."""
    from apps.registry.models import DistillJob
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=DistillJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: distill_execute(job=job, report=report))


def distill_folder(job: DistillJob) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "models" / "static" / str(job.pk)


def distill_execute(*, job: DistillJob, report: ProgressReporter) -> dict[str, Any]:
    from apps.registry.services import embedding_model_register_static
    from workers.common.configs.distill import DistillConfig
    from workers.ml.distill import distill_static, vocabulary_from_texts
    from workers.tasks.variants import variant_evaluations, variant_speed

    config = DistillConfig.model_validate(job.params)
    source = job.source
    vocabulary = None
    if job.vocabulary_version is not None:
        report("reading the vocabulary")
        texts = job.vocabulary_version.documents.values_list("title", "text").iterator()
        vocabulary = vocabulary_from_texts(
            (f"{title} {text}" for title, text in texts), size=config.vocabulary_size
        )
    report("distilling")
    folder = distill_folder(job)
    if folder.exists():  # a retried job starts clean
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from workers.common.store import artifact_ensure

    artifact_ensure(source.path)
    info = distill_static(source_path=source.path, out_dir=tmp, pca_dims=config.pca_dims,
                          vocabulary=vocabulary)  # fmt: skip
    tmp.rename(folder)  # whole or not at all
    report.check()

    speed = variant_speed(
        job=job,
        source=source,
        label="static",
        report=report,
        variant={"path": str(folder), "layout": "sentence-transformers"},
    )
    report.check()
    model = embedding_model_register_static(job=job, path=str(folder),
                                            dimension=info["dimension"],
                                            vocabulary_size=info["vocabulary_size"])  # fmt: skip
    evaluations = variant_evaluations(job=job, source=source, variant=model, label="static")
    return {
        "result_model": model,
        "result": {
            **info,
            "vocabulary_words": len(vocabulary or []),
            "speed": speed,
            "evaluations": evaluations,
        },  # fmt: skip
        "stage": "done",
    }
