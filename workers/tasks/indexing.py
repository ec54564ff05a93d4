from celery import shared_task
from django.conf import settings


@shared_task(
    name="workers.tasks.indexing.build_index",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def build_index(build_id: int) -> None:
    """Build and measure one IndexBuild row (index queue). Idempotent: a row that is not
    pending is left alone. The index lands in ARTIFACTS_ROOT/indexes/<id>/."""
    from apps.indexes.models import IndexBuild
    from apps.indexes.services import index_build_execute
    from workers.tasks.runtime import job_claim, job_run

    build = job_claim(model=IndexBuild, pk=build_id)
    if build is None:
        return
    job_run(job=build, work=lambda report: index_build_execute(build=build, report=report))


@shared_task(name="workers.tasks.indexing.publish_deployments")
def publish_deployments() -> None:
    """Rewrite the search manifest from the database when it differs (beat, every minute): a
    web process that died between a deploy's commit and its publish is repaired here."""
    from apps.indexes.services import deployments_publish

    deployments_publish(notify=False)
