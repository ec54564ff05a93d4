"""Uploads become dataset versions through an IngestJob on the ``ingest`` queue.

The web stores the files and runs the quick pre-check here; the job that reads everything and
loads it is ``workers.tasks.ingest``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Team
from apps.core.models import JobStatus
from apps.core.services import job_enqueue
from apps.datasets.beir import BeirError, BeirProblem
from apps.datasets.models import IngestJob
from apps.datasets.precheck import upload_problems
from apps.datasets.training import is_training_file, preview_training_file


class IngestError(ValueError):
    """Rejected input. ``problems`` are FILE:LINE: reason lines; ``human_message`` one line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        n = len(problems)
        self.human_message = problems[0] if n == 1 else f"{n} problems, the first: {problems[0]}"
        super().__init__("\n".join(problems))


class UploadTooLarge(IngestError):
    """The upload is over ``DATASET_UPLOAD_MAX_BYTES`` (the API answers 413)."""


def _safe_name(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    if not base or base in (".", ".."):
        raise IngestError([f"{name!r}: not a usable file name"])
    return base


def ingest_create(
    *, team: Team, user, name: str, files: list, kind: str | None = None
) -> IngestJob:
    """Store uploaded files (Django UploadedFile objects) and enqueue their ingest.

    ``kind`` None detects it as the page does: one .jsonl / .csv that is not corpus / queries
    is a training set (which then waits for ``ingest_confirm``), anything else a BEIR upload.
    A given ``kind`` that the files do not fit is refused before anything is stored, and so
    is whatever the pre-check (``apps.datasets.precheck``) sees without reading it all: a bad
    archive or member name, a missing or second corpus, a file that is no dataset…
    """
    if not files:
        raise IngestError(["no file uploaded"])
    total = sum(f.size for f in files)
    if total > settings.DATASET_UPLOAD_MAX_BYTES:
        limit = settings.DATASET_UPLOAD_MAX_BYTES
        raise UploadTooLarge([f"upload of {total:,} bytes is over the limit of {limit:,}"])
    names = [_safe_name(f.name) for f in files]
    if len(set(names)) != len(names):
        raise IngestError(["two uploaded files have the same name"])
    training = len(names) == 1 and is_training_file(names[0])
    if kind is not None:
        _check_kind(kind, names, training=training)
    if problems := upload_problems(list(zip(names, files, strict=True)), training=training):
        raise IngestError(problems)
    folder = Path(settings.ARTIFACTS_ROOT) / "uploads" / uuid.uuid4().hex
    incoming = folder / "incoming"
    incoming.mkdir(parents=True)
    for f, base in zip(files, names, strict=True):
        with open(incoming / base, "wb") as out:
            for chunk in f.chunks():
                out.write(chunk)
    with transaction.atomic():
        job = IngestJob.objects.create(
            team=team,
            created_by=user,
            dataset_name=name,
            kind=IngestJob.Kind.TRAINING if training else IngestJob.Kind.RETRIEVAL,
            awaiting_confirmation=training,
            upload_dir=str(folder),
            file_names=names,
            total_bytes=total,
        )
        if not training:
            _enqueue(job)
    return job


def _check_kind(kind: str, names: list[str], *, training: bool) -> None:
    if kind not in IngestJob.Kind.values:
        raise IngestError([f"kind {kind!r}: expected one of {', '.join(IngestJob.Kind.values)}"])
    if kind == IngestJob.Kind.TRAINING and not training:
        raise IngestError(
            [
                f"{', '.join(names)}: a training set is one .jsonl or .csv file (gzip allowed) "
                "on its own, not named corpus or queries"
            ]
        )
    if kind == IngestJob.Kind.RETRIEVAL and training:
        raise IngestError(
            [
                f"{names[0]}: not a BEIR file (expected corpus.jsonl, queries.jsonl and "
                "<split>.tsv, or one .zip / .tar.gz holding them); send kind=training for a "
                "training set"
            ]
        )


def ingest_discard(*, job: IngestJob) -> None:
    """Drop an upload that never started (a training file whose columns cannot be read)."""
    deleted, _ = IngestJob.objects.filter(
        pk=job.pk, awaiting_confirmation=True, status=JobStatus.PENDING
    ).delete()
    if deleted:
        shutil.rmtree(job.upload_dir, ignore_errors=True)


def _enqueue(job: IngestJob) -> None:
    from workers.tasks.ingest import ingest

    job_enqueue(job=job, task=ingest)


def ingest_preview(*, job: IngestJob) -> dict:
    """Which column was taken for which role, and the first rows, before anything is imported."""
    path = Path(job.upload_dir) / "incoming" / job.file_names[0]
    try:
        roles, rows = preview_training_file(path)
    except BeirError as exc:
        label = job.file_names[0]
        folder = Path(job.upload_dir)
        return {
            "problems": [upload_problem_text(p, folder=folder, label=label) for p in exc.problems]
        }
    return {"roles": roles.as_dict(), "rows": rows}


def ingest_confirm(*, job: IngestJob) -> IngestJob:
    with transaction.atomic():
        updated = IngestJob.objects.filter(
            pk=job.pk, awaiting_confirmation=True, status=JobStatus.PENDING
        ).update(awaiting_confirmation=False)
        if updated:
            _enqueue(job)
    job.refresh_from_db()
    return job


def ingest_problems_record(*, job: IngestJob, problems: list[str]) -> None:
    """Keep the problems that refused an upload on its row, for the page and the API."""
    IngestJob.objects.filter(pk=job.pk).update(problems=problems)


def upload_problem_text(problem: BeirProblem | Exception | str, *, folder: Path, label: str) -> str:
    """Show paths as the user knows them (inside the upload), never the server's: a file in
    the upload by its name there, the upload's own folder (a "… and N more" line, an error
    from the file system) by ``label``, the uploaded file's name."""
    text = str(problem)
    for base in (folder / "data", folder / "incoming"):
        text = text.replace(f"{base}/", "")
    for base in (folder / "data", folder / "incoming", folder):
        text = text.replace(str(base), label)
    return text
