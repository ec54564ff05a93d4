from celery import shared_task
from django.conf import settings


@shared_task(name="workers.tasks.core.reap_stale_jobs")
def reap_stale_jobs() -> dict:
    """Fail (or resume) running rows whose worker stopped reporting, and send again pending rows
    whose message was lost. Idempotent: each write is conditional on the row's state."""
    from workers.tasks.runtime import jobs_reap, jobs_resend_lost
    from workers.tasks.sharding import shards_sweep

    return {
        "reaped": jobs_reap(),
        "resent": jobs_resend_lost(),
        "shard_runs_swept": shards_sweep(older_than_s=settings.JOB_TIME_LIMIT + 3600),
    }
