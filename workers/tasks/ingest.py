from celery import shared_task
from django.conf import settings


@shared_task(
    name="workers.tasks.ingest.ingest",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def ingest(job_id: int) -> None:
    """Validate and load one upload into a new (or reused) dataset version.

    Idempotent: a row that is not pending is left alone. Writes the version's rows in one
    transaction, the job row's progress, result and problems, and removes the upload's files.
    """
    from apps.datasets.ingest import ingest_execute
    from apps.datasets.models import IngestJob
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=IngestJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: ingest_execute(job=job, report=report))
