"""What the web does with a job row: create it once, enqueue it after commit, ask it to stop.

What a worker does with it (claim, progress, heartbeat, finish, reap) is in
``workers.tasks.runtime``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.models import Job, JobStatus

logger = logging.getLogger(__name__)
J = TypeVar("J", bound=Job)


class InvalidTransition(Exception):
    pass


def job_models() -> list[type[Job]]:
    return [m for m in apps.get_models() if issubclass(m, Job)]


def job_enqueue(*, job: Job, task, kwargs: dict | None = None) -> None:
    """Send ``task(job.pk)`` once the surrounding transaction commits.

    The task id is chosen here and stored on the row now, so the row names its task even
    before the broker has it; ids only travel through the queue (JSON serializer).
    """
    model = type(job)
    task_id = str(uuid.uuid4())
    model.objects.filter(pk=job.pk).update(
        celery_task_id=task_id, celery_task_name=task.name, queued_at=timezone.now()
    )
    job.celery_task_id, job.celery_task_name = task_id, task.name
    pk = job.pk

    def send() -> None:
        try:
            task.apply_async(args=[pk], kwargs=kwargs or {}, task_id=task_id)
        except Exception as exc:
            # Otherwise the row would wait as "pending" for a message that never left.
            logger.exception("Could not enqueue %s %s", model.__name__, pk)
            model.objects.filter(pk=pk, status=JobStatus.PENDING).update(
                status=JobStatus.FAILED,
                finished_at=timezone.now(),
                human_error="The job queue is unreachable; try again later.",
                error=f"{type(exc).__name__}: {exc}",
            )

    transaction.on_commit(send)


class IdempotencyConflict(ValueError):
    """An Idempotency-Key already used for a different request."""


def job_fingerprint(**parts) -> str:
    """A stable hash of what a start asked for (ids, parameters), to spot a repeat."""
    import hashlib
    import json

    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def job_create_once(
    *,
    model: type[J],
    team,
    created_by,
    fingerprint: str,
    create: Callable[[], J],
    idempotency_key: str = "",
) -> J:
    """``create()`` unless the same start was just made: a double click, or a client retrying.

    Inside one transaction that holds the team's row lock (two identical requests arriving at
    once serialise here): with an ``idempotency_key``, the row made earlier (24 hours) under that
    key by the same user is returned, or :class:`IdempotencyConflict` raised if it asked for
    something else; without one, an active row with the same fingerprint created by the same
    user in the last ``JOB_DEDUPE_WINDOW_S`` seconds is returned. ``create`` must not enqueue
    before this returns (it runs inside the transaction; ``job_enqueue`` waits for commit).
    """
    from apps.accounts.models import Team

    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team.pk).first()
        mine = model.objects.filter(team=team, created_by=created_by)
        if idempotency_key:
            earlier = (
                mine.filter(
                    idempotency_key=idempotency_key,
                    created_at__gte=timezone.now() - timedelta(hours=24),
                )
                .order_by("-pk")
                .first()
            )
            if earlier is not None:
                if earlier.request_fingerprint != fingerprint:
                    raise IdempotencyConflict(
                        "Idempotency-Key: already used for a different request"
                    )
                return earlier
        else:
            window = settings.JOB_DEDUPE_WINDOW_S
            earlier = (
                mine.filter(
                    request_fingerprint=fingerprint,
                    status__in=[JobStatus.PENDING, JobStatus.RUNNING],
                    created_at__gte=timezone.now() - timedelta(seconds=window),
                )
                .order_by("-pk")
                .first()
                if window > 0
                else None
            )
            if earlier is not None:
                return earlier
        job = create()
        model.objects.filter(pk=job.pk).update(
            request_fingerprint=fingerprint, idempotency_key=idempotency_key[:200]
        )
        job.request_fingerprint, job.idempotency_key = fingerprint, idempotency_key[:200]
        return job


def job_cancel(*, job: Job) -> Job:
    """Ask a job to stop. A pending job stops at once; a running one at its next report."""
    model = type(job)
    stopped_pending = model.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(
        status=JobStatus.CANCELLED,
        cancel_requested=True,
        finished_at=timezone.now(),
        human_error="Cancelled before it started.",
    )
    if not stopped_pending and not model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
        cancel_requested=True
    ):
        job.refresh_from_db()
        raise InvalidTransition(f"A {job.status} job cannot be cancelled.")
    job.refresh_from_db()
    return job


def objects_delete_many(
    *, rows, pks: list[int], delete: Callable[[Any], None], refused: type[Exception],
    noun: str = "",
) -> tuple[list[int], list[str]]:  # fmt: skip
    """Delete the rows among ``pks`` of ``rows`` (a queryset already scoped to one team) one by
    one with ``delete(row)``: returns the deleted ids and, for each refusal, why. An id that is
    not in ``rows`` (another team's, or none) reads as not found, never as someone else's."""
    deleted, why = [], []
    for pk in sorted(set(pks)):
        row = rows.filter(pk=pk).first()
        if row is None:
            why.append(f"{noun}#{pk}: not found")
            continue
        try:
            delete(row)
        except refused as exc:
            why.append(str(exc))
        else:
            deleted.append(pk)
    return deleted, why
