from celery import shared_task
from django.conf import settings


@shared_task(
    name="workers.tasks.curation.curate",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def curate(job_id: int) -> None:
    """Run one CurationJob row (dedup, mining, DSIR, token lengths). Idempotent: a row that
    is not pending is left alone."""
    from apps.datasets.curation import curation_execute
    from apps.datasets.models import CurationJob
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=CurationJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: curation_execute(job=job, report=report))
