from celery import shared_task
from django.conf import settings


@shared_task(
    name="workers.tasks.evaluation.evaluate",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def evaluate(evaluation_id: int) -> None:
    """Evaluate one Evaluation row. Idempotent: a row that is not pending is left alone.

    Writes the row's progress, metrics and timings, its per-query results and a TREC run file
    under ARTIFACTS_ROOT/evaluations/<id>/.
    """
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_execute
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=Evaluation, pk=evaluation_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: evaluation_execute(evaluation=job, report=report))
