"""The optimization job: the source exported to ONNX (fp32 or int8, ``workers.ml.optimize``),
checked against the source's own vectors, registered with the source as parent, its speed
measured against the source's on the same texts, and both evaluated on one dataset version
(each evaluation its own job); when both have run, ``variant_quality_record`` marks a variant
whose nDCG@10 dropped more than ``QUALITY_MAX_DROP``.

Imports no ML library at module level: the web imports :func:`optimize` to enqueue it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.registry.models import OptimizeJob
    from workers.tasks.runtime import ProgressReporter


class VariantRefused(Exception):
    """The exported variant's vectors are too far from the source's to be registered."""


@shared_task(
    name="workers.tasks.optimize.optimize",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def optimize(job_id: int) -> None:
    """Run one OptimizeJob row. Idempotent: a row that is not pending is left alone."""
    from apps.registry.models import OptimizeJob
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=OptimizeJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: optimize_execute(job=job, report=report))


def optimize_folder(job: OptimizeJob) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "models" / "optimized" / str(job.pk)


def optimize_execute(*, job: OptimizeJob, report: ProgressReporter) -> dict[str, Any]:
    from apps.registry.services import embedding_model_register_optimized
    from workers.common.configs.optimize import OptimizeConfig
    from workers.ml.encode import free_memory, load_encoder
    from workers.ml.optimize import optimize_model
    from workers.tasks.variants import variant_evaluations, variant_speed

    config = OptimizeConfig.model_validate(job.params)
    source = job.source
    report("exporting")
    folder = optimize_folder(job)
    if folder.exists():  # a retried job starts clean
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # The export traces the fp32 model on the CPU, whatever device the worker has.
    encoder = load_encoder(path=source.path, layout=source.layout, pooling=source.pooling,
                           normalize=source.normalize, max_seq_length=source.max_seq_length,
                           device="cpu")  # fmt: skip
    try:
        info = optimize_model(encoder=encoder, out_dir=tmp, quantize=config.quantize,
                              max_seq_length=source.max_seq_length)  # fmt: skip
    finally:
        del encoder
        free_memory("cpu")
    if info["cosine_min"] < settings.OPTIMIZE_MIN_COSINE:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VariantRefused(
            f"the {config.backend} {config.quantize} variant's vectors are too far from the "
            f"model's: cosine {info['cosine_min']:.4f} on the worst of {info['probe_texts']} "
            f"probe texts, under OPTIMIZE_MIN_COSINE {settings.OPTIMIZE_MIN_COSINE}"
        )
    tmp.rename(folder)  # whole or not at all
    report.check()
    optimization = {"backend": config.backend, **info}
    model = embedding_model_register_optimized(job=job, path=str(folder),
                                               optimization=optimization)  # fmt: skip
    speed = variant_speed(job=job, source=source, label="variant", report=report,
                          variant={"path": str(folder), "layout": "onnx"})  # fmt: skip
    report.check()
    evaluations = variant_evaluations(job=job, source=source, variant=model, label="variant")
    return {
        "result_model": model,
        "result": {**optimization, "speed": speed, "evaluations": evaluations},
        "stage": "done",
    }
