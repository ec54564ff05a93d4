"""The Celery app. Tasks live in workers/tasks; the page never reads the result backend."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "embedhub.settings")

QUEUES = ("default", "ingest", "index", "gpu")

app = Celery("embedhub")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _route(name: str, args, kwargs, options, task=None, **kw) -> dict[str, str]:
    from django.conf import settings

    # Curation encodes with a model (dedup, mining) or tokenizes, like an evaluation.
    if name.startswith(
        (
            "workers.tasks.evaluation.",
            "workers.tasks.curation.",
            "workers.tasks.sharding.",
            "workers.tasks.distill.",
            "workers.tasks.optimize.",
            "workers.tasks.merge.",
            "workers.tasks.calibration.",
            "workers.tasks.upgrade.",
        )
    ):
        return {"queue": settings.ENCODE_QUEUE}
    if name.startswith("workers.tasks.ingest."):
        return {"queue": "ingest"}
    # A Hub download is network-bound: the default queue, never behind an encode or a run.
    if name.startswith("workers.tasks.hub."):
        return {"queue": "default"}
    if name.startswith("workers.tasks.indexing."):
        return {"queue": "index"}
    if name.startswith("workers.tasks.training."):
        return {"queue": "gpu"}
    return {"queue": "default"}


app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="default",
    task_create_missing_queues=True,
    task_routes=(_route,),
    # The job row is the record of a task; nothing is read back from a result backend.
    task_ignore_result=True,
    # A long job is acknowledged only when done, so a worker that dies mid-job leaves the message
    # to be redelivered; one message at a time so a long job never holds others hostage.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_max_tasks_per_child=50,
    broker_connection_retry_on_startup=True,
    # Task modules import no ML library at module level, so loading them is cheap.
    imports=(
        "workers.tasks.core",
        "workers.tasks.evaluation",
        "workers.tasks.ingest",
        "workers.tasks.curation",
        "workers.tasks.training",
        "workers.tasks.indexing",
        "workers.tasks.sharding",
        "workers.tasks.distill",
        "workers.tasks.optimize",
        "workers.tasks.merge",
        "workers.tasks.calibration",
        "workers.tasks.upgrade",
        "workers.tasks.presence",
        "workers.tasks.hub",
    ),
    beat_schedule={
        "reap-stale-jobs": {"task": "workers.tasks.core.reap_stale_jobs", "schedule": 60.0},
        "publish-deployments": {
            "task": "workers.tasks.indexing.publish_deployments",
            "schedule": 60.0,
        },
    },
)
