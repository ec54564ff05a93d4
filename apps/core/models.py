"""Shared abstract models: team ownership and the long-job row every background job uses."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class TeamOwned(models.Model):
    """Every user-visible object belongs to exactly one team; selectors filter on it."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Precision(models.TextChoices):
    """What an encoding job asked for (``workers.common.configs.encoding``); the worker records
    what it ran in (fp32 or bf16) beside it."""

    AUTO = "auto", "Auto"
    FP32 = "fp32", "fp32"
    BF16 = "bf16", "bf16 (autocast)"


def precision_fields() -> tuple[models.CharField, models.CharField]:
    """(asked, used): the pair every encoding job row carries."""
    return (
        models.CharField(max_length=8, choices=Precision.choices, default=Precision.AUTO),
        models.CharField(max_length=8, blank=True),  # set by the worker: fp32 or bf16
    )


class Job(models.Model):
    """A long operation recorded as a row (NetBox/Baserow style).

    The page reads this row, never the Celery result backend. The worker claims it with a
    conditional UPDATE (pending → running), reports progress at most every few seconds, and
    reads ``cancel_requested`` in the same call so cancellation is cooperative.
    """

    TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    # What progress_done counts, by stage ("" for every other stage): the page's "12 / 80
    # documents". No entry: a bare count.
    PROGRESS_UNITS: dict[str, str] = {}

    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    stage = models.CharField(max_length=64, blank=True)
    progress = models.FloatField(default=0.0)  # 0..1 within the current stage
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)  # traceback, for the log
    human_error = models.CharField(max_length=500, blank=True)  # one line, for the page
    celery_task_id = models.CharField(max_length=64, blank=True)
    # The task's registered name, so a lost message can be sent again (see jobs_resend_lost).
    celery_task_name = models.CharField(max_length=200, blank=True)
    # One click, one job: what was asked (a hash of user, objects and parameters), and the
    # API's Idempotency-Key header if one came (see job_create_once).
    request_fingerprint = models.CharField(max_length=64, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in (JobStatus.PENDING, JobStatus.RUNNING)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def percent(self) -> int:
        if self.status == JobStatus.SUCCEEDED:
            return 100
        return int(round(100 * max(0.0, min(1.0, self.progress))))

    @property
    def progress_unit(self) -> str:
        return self.PROGRESS_UNITS.get(self.stage, self.PROGRESS_UNITS.get("", ""))

    @property
    def eta_seconds(self) -> float | None:
        """Remaining time of the current stage, from its rate so far."""
        if (
            self.status != JobStatus.RUNNING
            or not self.stage_started_at
            or not self.heartbeat_at
            or self.progress_done <= 0
            or self.progress_total <= self.progress_done
        ):
            return None
        elapsed = (self.heartbeat_at - self.stage_started_at).total_seconds()
        rate = self.progress_done / elapsed if elapsed > 0 else 0
        if rate <= 0:
            return None
        return (self.progress_total - self.progress_done) / rate

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class EncodeShard(models.Model):
    """One slice of a large corpus encode (``workers.tasks.sharding``): every worker on the
    encode queue may take one, the job that split the corpus included.

    Claimed by a conditional UPDATE (pending → running) like a job; ``heartbeat_at`` lets the
    splitting job take back a shard whose worker died, ``attempts`` bounds the retries, and
    ``cancelled`` (the splitting job was cancelled or failed) stops the others between chunks.
    The texts and the vectors travel as files under ARTIFACTS_ROOT/shards/<run>/, which every
    worker of a deployment shares with the embedding cache.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    run = models.CharField(max_length=32, db_index=True)  # one corpus encode
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    encoder = models.JSONField()  # the EncoderSpec fields, precision resolved
    batch_size = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    done = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="unique_shard_per_run"),
        ]
        ordering = ["run", "index"]

    def __str__(self) -> str:
        return f"shard {self.index} of {self.run}"


class WorkerPresence(models.Model):
    """A Celery worker that is up and the queues it consumes. Each worker refreshes its row
    every few seconds (``workers.tasks.presence``), so a waiting job's page can say whether
    anything listens to its queue; a row not refreshed for ``WORKER_PRESENCE_STALE_S`` is a
    worker that stopped."""

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.hostname} ({', '.join(self.queues)})"
