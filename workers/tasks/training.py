from celery import shared_task
from django.conf import settings


@shared_task(
    name="workers.tasks.training.train",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def train(run_id: int) -> None:
    """Run (or resume from its last checkpoint) one TrainingRun row. Idempotent: a row that is
    not pending is left alone; the reaper puts a dead worker's run back to pending."""
    from apps.runs.models import TrainingRun
    from apps.runs.training import training_run_execute
    from workers.tasks.runtime import job_claim, job_run

    run = job_claim(model=TrainingRun, pk=run_id)
    if run is None:
        return
    job_run(job=run, work=lambda report: training_run_execute(run=run, report=report))
