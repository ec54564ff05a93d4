"""Reads across job kinds: the queues every team's jobs share. Reads of one kind's rows are
team-scoped in each app (e.g. apps.runs.selectors)."""

from __future__ import annotations

from apps.core.models import JobStatus

# The page of each job kind, by model name (a job kind without a page is not listed).
JOB_PAGES = {
    "IngestJob": ("datasets:ingest", "Upload"),
    "CurationJob": ("datasets:curation", "Curation"),
    "Evaluation": ("runs:evaluation", "Evaluation"),
    "TrainingRun": ("runs:training", "Training run"),
    "IndexBuild": ("indexes:detail", "Index build"),
    "DistillJob": ("registry:distillation", "Distillation"),
    "OptimizeJob": ("registry:optimization", "Optimization"),
    "MergeJob": ("registry:merge", "Merge"),
    "HubImport": ("registry:hub_import", "From the Hub"),
    "HubPublish": ("registry:hub_publish", "Publish to the Hub"),
    "ModelUpgrade": ("indexes:upgrade", "Model upgrade"),
    "Calibration": ("indexes:calibration_by_id", "Relevance calibration"),
}


def job_queue(job) -> str:
    """The Celery queue a job's task goes to (the same routing the broker uses)."""
    from embedhub.celery import _route

    return _route(job.celery_task_name, (), {}, {})["queue"] if job.celery_task_name else ""


def _active_rows() -> list:
    """Every team's pending and running jobs (the queues are shared), oldest first: one query
    per job kind."""
    from apps.core.services import job_models

    rows = []
    for model in job_models():
        rows.extend(model.objects.filter(status__in=(JobStatus.PENDING, JobStatus.RUNNING)))
    return sorted(rows, key=lambda r: (r.queued_at or r.created_at, type(r).__name__, r.pk))


def queue_listeners() -> dict[str, int]:
    """How many live workers consume each queue (``WorkerPresence`` rows refreshed within
    ``WORKER_PRESENCE_STALE_S``)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from apps.core.models import WorkerPresence

    since = timezone.now() - timedelta(seconds=settings.WORKER_PRESENCE_STALE_S)
    counts: dict[str, int] = {}
    live = WorkerPresence.objects.filter(seen_at__gte=since)
    for queues in live.values_list("queues", flat=True):
        for queue in queues:
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def _place(job, rows: list, listeners: dict[str, int] | None = None) -> dict | None:
    """Where the pending ``job`` waits among ``rows`` (``_active_rows()``), and how many
    workers listen to its queue (``queue_listeners()``, read here when not given)."""
    if job.status != JobStatus.PENDING:
        return None
    if listeners is None:
        listeners = queue_listeners()
    queue = job_queue(job)
    ahead = running = 0
    for row in rows:
        if job_queue(row) != queue:
            continue
        if row.status == JobStatus.RUNNING:
            running += 1
        elif (type(row), row.pk) == (type(job), job.pk):
            break
        else:
            ahead += 1
    return {"queue": queue, "ahead": ahead, "running": running,
            "listeners": listeners.get(queue, 0)}  # fmt: skip


def job_queue_place(job) -> dict | None:
    """Where a pending job waits: {queue, ahead (pending before it), running} in its queue,
    counting every team's jobs (one worker pool serves them all) but naming none."""
    return _place(job, _active_rows()) if job.status == JobStatus.PENDING else None


def jobs_active(*, team) -> list[dict]:
    """The team's pending and running jobs of every kind, oldest first, with their queue and,
    for a pending one, its place in it (the active rows are read once for all of them)."""
    from django.urls import reverse

    rows = _active_rows()
    listeners = queue_listeners()
    out = []
    for row in rows:
        page = JOB_PAGES.get(type(row).__name__)
        if page is None or getattr(row, "team_id", None) != team.pk:
            continue
        out.append({"job": row, "kind": page[1], "url": reverse(page[0], args=[row.pk]),
                    "queue": job_queue(row), "place": _place(row, rows, listeners)})  # fmt: skip
    return out


def team_steps(*, team) -> dict:
    """Which of the first steps a team has taken (the home page's getting-started card shows
    until all are done)."""
    from apps.datasets.models import Dataset
    from apps.indexes.models import IndexBuild
    from apps.registry.models import EmbeddingModel
    from apps.runs.models import Evaluation, TrainingRun

    steps = {
        "dataset": Dataset.objects.filter(team=team).exists(),
        "model": EmbeddingModel.objects.filter(team=team).exists(),
        "evaluation": Evaluation.objects.filter(team=team, status=JobStatus.SUCCEEDED).exists(),
        "training": TrainingRun.objects.filter(team=team).exists(),
        "index": IndexBuild.objects.filter(team=team).exists(),
    }
    return {**steps, "todo": not all(steps.values())}
