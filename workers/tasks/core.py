from celery import shared_task


@shared_task(name="workers.tasks.core.reap_stale_jobs")
def reap_stale_jobs() -> int:
    """Fail running job rows whose worker stopped reporting. Idempotent; writes only status."""
    from apps.core.services import jobs_reap

    return jobs_reap()
