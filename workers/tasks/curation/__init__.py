"""Curation jobs on the worker: semantic dedup, hard-negative mining, DSIR selection, token
lengths. The web validates a request against the kind's config
(``workers.common.configs.curation``) and makes the row; here the row's stored parameters are
validated again, its rows read, ``workers.ml`` called, and what results is recorded through
``apps.datasets.services`` (a new derived version, or the version's stats). One module per kind;
``common`` holds what they share.

Loading this package imports no ML library (and no model): the web imports ``curate`` to
enqueue it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.datasets.models import CurationJob
    from workers.tasks.runtime import ProgressReporter


@shared_task(
    name="workers.tasks.curation.curate",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def curate(job_id: int) -> None:
    """Run one CurationJob row (dedup, mining, DSIR, token lengths). Idempotent: a row that
    is not pending is left alone."""
    from apps.datasets.models import CurationJob
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=CurationJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: curation_execute(job=job, report=report))


def curation_execute(*, job: CurationJob, report: ProgressReporter) -> dict:
    """The work of one curation job; returns the fields the success transition writes."""
    from pydantic import ValidationError

    from apps.datasets.curation import CurationError, validation_problem
    from workers.common.configs.curation import CONFIGS
    from workers.tasks.curation import dsir, mining, semdedup, tokens

    try:
        # Validated again: the row may not be the web's doing (an edit, an older release).
        config = CONFIGS[job.kind].from_stored(job.params)
    except ValidationError as exc:
        raise CurationError(f"The job's parameters: {validation_problem(exc)}") from exc
    runner = {"semdedup": semdedup, "mine": mining, "dsir": dsir, "tokens": tokens}[job.kind]
    return runner.run(job=job, config=config, report=report)
