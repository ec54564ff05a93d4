"""The ingest job: unpack an upload, check every line, load it into a new (or reused) dataset
version, and remove the upload's files.

The web stores the upload and runs the quick pre-check (``apps.datasets.ingest``,
``apps.datasets.precheck``) at once; this is the part that reads everything, on the ``ingest``
queue.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

from apps.datasets.archives import (
    ArchiveError,
    beir_roots,
    extract_archive,
    extracted_files,
    is_archive,
    roots_problem,
)
from apps.datasets.beir import BeirError
from apps.datasets.ingest import IngestError, ingest_problems_record, upload_problem_text
from apps.datasets.models import IngestJob
from apps.datasets.services import dataset_import_beir, dataset_import_training

if TYPE_CHECKING:
    from workers.tasks.runtime import ProgressReporter

BEIR_NAMES = ("corpus.jsonl", "queries.jsonl")


@shared_task(
    name="workers.tasks.ingest.ingest",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def ingest(job_id: int) -> None:
    """Validate and load one upload into a new (or reused) dataset version.

    Idempotent: a row that is not pending is left alone. Writes the version's rows in one
    transaction, the job row's progress, result and problems, and removes the upload's files.
    """
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=IngestJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: ingest_execute(job=job, report=report))


def ingest_execute(*, job: IngestJob, report: ProgressReporter) -> dict[str, Any]:
    """Validate and load one upload. Returns the fields of the success transition."""
    folder = Path(job.upload_dir)
    source = f"upload: {', '.join(job.file_names)}"  # not the server's folder, soon removed
    try:
        if job.kind == IngestJob.Kind.TRAINING:
            result = dataset_import_training(
                team=job.team,
                name=job.dataset_name,
                path=folder / "incoming" / job.file_names[0],
                report=report,
                source=source,
            )
        else:
            report("unpacking", 0, 0)
            root = arrange_upload(folder / "incoming", folder / "data")
            result = dataset_import_beir(
                team=job.team, name=job.dataset_name, path=root, report=report, source=source
            )
    except (BeirError, ArchiveError, IngestError) as exc:
        label = job.file_names[0] if len(job.file_names) == 1 else "upload"
        problems = [
            upload_problem_text(p, folder=folder, label=label)
            for p in (exc.problems if isinstance(exc, BeirError | IngestError) else [exc])
        ]
        ingest_problems_record(job=job, problems=problems)
        raise IngestError(problems) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"version": result.version, "reused": not result.created, "stage": "done"}


def arrange_upload(incoming: Path, staging: Path) -> Path:
    """One archive, or loose BEIR files, → a BEIR folder. Returns its root."""
    files = sorted(p for p in incoming.iterdir() if p.is_file())
    if len(files) == 1 and is_archive(files[0].name):
        extract_archive(
            files[0],
            staging,
            max_bytes=settings.DATASET_ARCHIVE_MAX_BYTES,
            max_ratio=settings.DATASET_ARCHIVE_MAX_RATIO,
        )
        roots = beir_roots(extracted_files(staging))
        if problem := roots_problem(roots):
            raise IngestError([f"{files[0].name}: {problem}"])
        return staging / roots[0]
    (staging / "qrels").mkdir(parents=True, exist_ok=True)
    problems = []
    for path in files:
        stem = path.name.removesuffix(".gz")
        if stem in BEIR_NAMES:
            shutil.move(path, staging / path.name)
        elif stem.endswith(".tsv"):
            shutil.move(path, staging / "qrels" / path.name)
        else:
            problems.append(
                f"{path.name}: not a BEIR file (expected corpus.jsonl, queries.jsonl and "
                "<split>.tsv, or one .zip / .tar.gz holding them; a training set is one "
                ".jsonl or .csv file on its own)"
            )
    if problems:
        raise IngestError(problems)
    return staging
