"""The worker's job runtime: claim, progress, heartbeat, finish, cancel, reap.

Every long operation (ingest, curation, training, evaluation, index build) is a concrete
subclass of ``apps.core.models.Job``. The web creates and enqueues its row and may ask it to
stop (``apps.core.services``); everything that happens to the row once a worker has it is
here, so the rules about transactions, throttling and cancellation live in one place.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.models import Job, JobStatus
from apps.core.services import job_models

logger = logging.getLogger(__name__)
J = TypeVar("J", bound=Job)


class JobCancelled(Exception):
    """Raised inside the worker when the row asks to stop; the task ends the row cancelled."""


class JobLost(Exception):
    """The row is no longer running (reaped or finished elsewhere): stop without touching it."""


def job_claim(*, model: type[J], pk: int) -> J | None:
    """pending → running, atomically. Returns None if someone else has (or had) the row.

    A conditional UPDATE rather than SELECT … FOR UPDATE: it works the same on SQLite, and a
    redelivered message for a row already running or done becomes a no-op.
    """
    now = timezone.now()
    claimed = model.objects.filter(pk=pk, status=JobStatus.PENDING, cancel_requested=False).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, stage_started_at=now
    )
    if not claimed:
        return None
    return model.objects.get(pk=pk)


class ProgressReporter:
    """Callable given to long work: ``reporter(stage, done, total)``.

    Writes at most every ``interval`` seconds (and on every stage change), each write its own
    short UPDATE outside any long transaction; reads the cancel flag in the same round trip
    and raises JobCancelled when it is set.
    """

    def __init__(self, job: Job, *, interval: float | None = None) -> None:
        self.job = job
        self.model = type(job)
        self.interval = settings.JOB_PROGRESS_INTERVAL if interval is None else interval
        self._last_write = 0.0
        self._stage = job.stage

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        now_mono = time.monotonic()
        stage_changed = stage != self._stage
        finished_stage = total > 0 and done >= total
        if not stage_changed and not finished_stage and now_mono - self._last_write < self.interval:
            return
        self._last_write = now_mono
        now = timezone.now()
        fields = {
            "stage": stage[:64],
            "progress_done": done,
            "progress_total": total,
            "progress": (done / total) if total else 0.0,
            "heartbeat_at": now,
        }
        if stage_changed:
            fields["stage_started_at"] = now
            self._stage = stage
        # One round trip writes the progress and, by matching nothing, tells a cancel or a
        # row that is no longer ours (reaped) apart from the normal case.
        written = self.model.objects.filter(
            pk=self.job.pk, status=JobStatus.RUNNING, cancel_requested=False
        ).update(**fields)
        if not written:
            self.check()
        for key, value in fields.items():
            setattr(self.job, key, value)

    def check(self) -> None:
        """Raise JobCancelled if a cancel was asked for, JobLost if the row is not running."""
        row = self.model.objects.filter(pk=self.job.pk).values("status", "cancel_requested")
        row = row.first()
        if row is None or row["status"] != JobStatus.RUNNING:
            raise JobLost()
        if row["cancel_requested"]:
            raise JobCancelled()


class Heartbeat:
    """Keeps ``heartbeat_at`` fresh from a side thread while a step reports nothing for long
    (loading a model, a big search), so the reaper only fails rows whose worker is gone."""

    def __init__(self, job: Job, *, interval: float) -> None:
        self.model, self.pk, self.interval = type(job), job.pk, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.pk}", daemon=True)

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.interval):
                try:
                    self.model.objects.filter(pk=self.pk, status=JobStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # e.g. SQLite busy while an import holds the write lock
                    logger.warning("heartbeat of %s %s skipped", self.model.__name__, self.pk)
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _finish(*, job: Job, status: str, **fields) -> bool:
    now = timezone.now()
    updated = (
        type(job)
        .objects.filter(pk=job.pk, status=JobStatus.RUNNING)
        .update(status=status, finished_at=now, heartbeat_at=now, **fields)
    )
    if updated:
        job.refresh_from_db()
    return bool(updated)


def job_succeed(*, job: Job, **fields) -> bool:
    """running → succeeded, with the result fields written in the same UPDATE."""
    return _finish(job=job, status=JobStatus.SUCCEEDED, progress=1.0, **fields)


def job_fail(*, job: Job, human_error: str, error: str = "") -> bool:
    """running → failed. ``human_error`` is one line for the page, ``error`` the traceback."""
    return _finish(
        job=job, status=JobStatus.FAILED, human_error=human_error[:500], error=error or human_error
    )


def job_mark_cancelled(*, job: Job) -> bool:
    return _finish(job=job, status=JobStatus.CANCELLED, human_error="Cancelled by request.")


def jobs_reap(*, stale_after: int | None = None) -> int:
    """Deal with running rows whose worker stopped reporting (killed, machine lost).

    A resumable kind (one naming a ``resume_task``, e.g. training with checkpoints) goes back
    to pending and is sent again, up to its ``max_attempts``; every other stale row fails.
    Returns how many rows were reaped. Runs periodically from Celery beat.
    """
    stale_after = settings.JOB_STALE_AFTER if stale_after is None else stale_after
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    reaped = 0
    for model in job_models():
        stale = model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff)
        resume_task = getattr(model, "resume_task", None)
        if resume_task:
            reaped += _requeue(model=model, stale=stale, task=resume_task)
            stale = stale.filter(attempts__gte=model.max_attempts)
        reaped += stale.update(
            status=JobStatus.FAILED,
            finished_at=timezone.now(),
            human_error=f"The worker stopped reporting for over {stale_after} seconds.",
            error="Reaped: no heartbeat since the cutoff; the worker process probably died.",
        )
    if reaped:
        logger.warning("Reaped %d stale job(s)", reaped)
    return reaped


def _requeue(*, model, stale, task: str) -> int:
    """running (dead worker) → pending, then send the task again; it resumes from checkpoints."""
    from celery import current_app
    from django.db.models import F

    count = 0
    for pk in stale.filter(attempts__lt=model.max_attempts).values_list("pk", flat=True):
        with transaction.atomic():
            task_id = str(uuid.uuid4())
            updated = model.objects.filter(pk=pk, status=JobStatus.RUNNING).update(
                status=JobStatus.PENDING,
                attempts=F("attempts") + 1,
                stage="worker lost: waiting to resume",
                celery_task_id=task_id,
                celery_task_name=task,
                queued_at=timezone.now(),
            )
            if updated:
                count += 1
                transaction.on_commit(
                    lambda pk=pk, task_id=task_id: current_app.send_task(
                        task, args=[pk], queue=_queue_of(task), task_id=task_id
                    )
                )
    return count


def jobs_resend_lost(*, after: int | None = None) -> int:
    """Send again the pending rows whose message the broker no longer holds.

    A message can vanish between enqueue and claim (Redis restarted without persistence, a
    purged queue, a lost on-disk broker folder); the row would then wait as pending for ever.
    A row pending for longer than ``after`` seconds whose task id is in neither its queue nor
    the broker's unacknowledged set gets a fresh message. Sending one too many is harmless:
    the task claims its row by conditional UPDATE, so a second delivery does nothing.
    Returns how many rows were sent again. Runs periodically from Celery beat.
    """
    from celery import current_app

    after = settings.JOB_PENDING_RESEND_AFTER if after is None else after
    cutoff = timezone.now() - timedelta(seconds=after)
    lost: list[tuple[type[Job], int, str, str]] = []
    for model in job_models():
        rows = (
            model.objects.filter(
                status=JobStatus.PENDING, cancel_requested=False, queued_at__lte=cutoff
            )
            .exclude(celery_task_name="")
            .values_list("pk", "celery_task_id", "celery_task_name")
        )
        lost.extend((model, pk, task_id, name) for pk, task_id, name in rows)
    if not lost:
        return 0
    held = _broker_task_ids({_queue_of(name) for _, _, _, name in lost})
    resent = 0
    for model, pk, old_id, name in lost:
        if held is not None and old_id and old_id in held:
            continue
        new_id = str(uuid.uuid4())
        # Conditional on the old id: a concurrent reaper or a claim in between wins.
        if not model.objects.filter(pk=pk, status=JobStatus.PENDING, celery_task_id=old_id).update(
            celery_task_id=new_id, queued_at=timezone.now()
        ):
            continue
        try:
            current_app.send_task(name, args=[pk], queue=_queue_of(name), task_id=new_id)
        except Exception:
            logger.exception("Could not send %s %s again", model.__name__, pk)
            continue
        resent += 1
    if resent:
        logger.warning("Sent %d pending job(s) again: their messages were lost", resent)
    return resent


def _broker_task_ids(queues: set[str]) -> set[str] | None:
    """Task ids the broker still holds (queued or delivered but not acknowledged), or None
    when this transport cannot be looked into (then every old pending row is sent again)."""
    import json

    from celery import current_app

    ids: set[str] = set()
    try:
        with current_app.connection_for_write() as conn:
            transport = conn.transport.driver_type
            if transport == "redis":
                client = conn.default_channel.client
                keys = [k for q in queues for k in client.keys(f"{q}*")]
                raw = [m for key in keys if client.type(key) == b"list"
                       for m in client.lrange(key, 0, -1)]  # fmt: skip
                raw += client.hvals(conn.default_channel.unacked_key)
            elif transport == "filesystem":
                folder = Path(conn.transport_options["data_folder_out"])
                raw = [f.read_bytes() for f in folder.glob("*.msg")]
            else:
                return None
    except Exception:
        logger.exception("Could not look into the broker; pending jobs are sent again")
        return None
    for message in raw:
        try:
            data = json.loads(message)
        except (ValueError, TypeError):
            continue
        if isinstance(data, list):  # unacked entries are [message, exchange, routing key]
            data = data[0] if data else {}
        task_id = (data.get("headers") or {}).get("id") if isinstance(data, dict) else None
        if task_id:
            ids.add(task_id)
    return ids


def _queue_of(task: str) -> str:
    from embedhub.celery import _route

    return _route(task, (), {}, {})["queue"]


def job_run(*, job: Job, work: Callable[[ProgressReporter], dict | None]) -> None:
    """Run ``work(reporter)`` for a claimed job and end the row whatever happens.

    ``work`` returns the result fields to store on success. Cancellation, the soft time limit
    and any exception end the row as cancelled or failed with a human message.
    """
    from celery.exceptions import SoftTimeLimitExceeded

    reporter = ProgressReporter(job)
    interval = max(1.0, min(60.0, settings.JOB_STALE_AFTER / 4))
    try:
        with Heartbeat(job, interval=interval):
            fields = work(reporter) or {}
    except JobLost:
        logger.warning(
            "%s %s was no longer running; its result is dropped", type(job).__name__, job.pk
        )
    except JobCancelled:
        job_mark_cancelled(job=job)
    except SoftTimeLimitExceeded:
        job_fail(job=job, human_error="The job ran past its time limit and was stopped.")
    except Exception as exc:
        import traceback

        # Pure Python (no ML library): a full disk is one fixed sentence, other OSErrors their
        # reason only, and no page message carries a server path; `error` keeps the detail.
        from workers.common.atomic import human_message_for

        logger.exception("Job %s %s failed", type(job).__name__, job.pk)
        job_fail(job=job, human_error=human_message_for(exc), error=traceback.format_exc())
    else:
        job_succeed(job=job, **fields)
