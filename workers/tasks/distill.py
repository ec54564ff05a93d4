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

SPEED_TEXTS = 512  # documents encoded by both models to compare their speed


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
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from workers.common.configs.distill import DistillConfig
    from workers.ml.distill import distill_static, encode_speed, vocabulary_from_texts
    from workers.ml.encode import document_text, free_memory, load_encoder

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
    info = distill_static(source_path=source.path, out_dir=tmp, pca_dims=config.pca_dims,
                          vocabulary=vocabulary)  # fmt: skip
    tmp.rename(folder)  # whole or not at all
    report.check()

    speed = None
    sample = job.evaluate_version or job.vocabulary_version
    if sample is not None:
        rows = sample.documents.order_by("pk").values_list("title", "text")[:SPEED_TEXTS]
        texts = [source.document_prefix + document_text(t, x) for t, x in rows]
        report("measuring speed", 0, 2 * len(texts))
        speed = {"documents": len(texts)}
        for label, path, spec in (("source", source.path, source), ("static", str(folder), None)):
            encoder = load_encoder(
                path=path,
                layout=source.layout if spec else "sentence-transformers",
                pooling=source.pooling,
                normalize=True,
                max_seq_length=source.max_seq_length,
            )
            speed[f"{label}_docs_per_s"] = round(encode_speed(encoder=encoder, texts=texts), 1)
            device = str(encoder.device)
            del encoder
            free_memory(device)
            report("measuring speed", len(texts) * (2 if label == "static" else 1), 2 * len(texts))
        speed["speedup"] = round(speed["static_docs_per_s"] / speed["source_docs_per_s"], 1)
    report.check()
    model = embedding_model_register_static(job=job, path=str(folder),
                                            dimension=info["dimension"],
                                            vocabulary_size=info["vocabulary_size"])  # fmt: skip
    evaluations = {}
    if job.evaluate_version is not None:
        # The source's own fp32 evaluation on this split is reused when it exists.
        known = Evaluation.objects.filter(
            model=source, dataset_version=job.evaluate_version, split=job.split,
            status="succeeded", precision_used="fp32",
        ).order_by("-finished_at").first()  # fmt: skip
        for label, m, existing in (("source", source, known), ("static", model, None)):
            evaluation = existing or evaluation_create(
                team=job.team, model=m, dataset_version=job.evaluate_version, split=job.split,
                precision="fp32", created_by=job.created_by,
            )  # fmt: skip
            evaluations[label] = evaluation.pk
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
