"""Relevance calibration of a deployment: writes and reads of :class:`Calibration`.

A calibration is fitted as a job (``workers.tasks.calibration``) on a judged split of the
deployed index's dataset version. The deployment's calibration is its latest succeeded one; it
is current while the deployment serves the index it was fitted on, and then the search process
returns each hit's ``relevance`` and honours ``min_relevance``. A swap to another index makes
it stale: the manifest drops it (a probability fitted on one index's scores says nothing of
another's) and the swap enqueues a refit with the same settings on the new index.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404

from apps.accounts.models import Team
from apps.core.models import JobStatus
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.indexes.models import Calibration, Deployment
from apps.indexes.services import IndexBuildError


class CalibrationError(IndexBuildError):
    """A user-facing reason why a calibration cannot be fitted; it names the field."""


# --- reads -----------------------------------------------------------------------------------


def calibration_list(*, deployment: Deployment) -> QuerySet[Calibration]:
    return Calibration.objects.filter(team_id=deployment.team_id, deployment=deployment)


def calibration_get(*, deployment: Deployment, pk: int) -> Calibration:
    """One of ``deployment``'s calibrations; anything else (another team's) is a 404."""
    found = calibration_list(deployment=deployment).select_related("index").filter(pk=pk).first()
    if found is None:
        raise Http404("No such calibration.")
    return found


def calibration_current(*, deployment: Deployment) -> Calibration | None:
    """The deployment's calibration: its latest succeeded one (stale or not)."""
    return (
        calibration_list(deployment=deployment)
        .filter(status=JobStatus.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .first()
    )


def calibration_state(*, deployment: Deployment) -> dict:
    """What the deployment page says: the calibration, whether it is stale (fitted on another
    index than the one served), and the refit in progress, if any."""
    current = calibration_current(deployment=deployment)
    pending = (
        calibration_list(deployment=deployment)
        .filter(status__in=(JobStatus.PENDING, JobStatus.RUNNING))
        .order_by("-pk")
        .first()
    )
    stale = current is not None and current.index_id != deployment.index_id
    return {
        "current": current,
        "stale": stale,
        "pending": pending,
        # Why the stale one cannot be refitted as it was (the new index's data lacks a split).
        "refit_problem": _refit_problem(deployment=deployment, current=current)
        if stale and pending is None
        else "",
        # Served through a model upgrade's query adapter: no relevance meanwhile.
        "adapter": current is not None and bool(deployment.adapter),
    }


def calibration_manifest_entry(*, deployment: Deployment) -> dict:
    """What the search process gets for ``deployment``: the fitted mapping and threshold of
    its current calibration, or {} (none, stale, or queries through an upgrade's adapter)."""
    current = calibration_current(deployment=deployment)
    if current is None or current.index_id != deployment.index_id:
        return {}
    if deployment.adapter:
        # A model upgrade's queries (another model, mapped into this index's space) score
        # otherwise than the queries the calibration was fitted on.
        return {}
    return {"id": current.pk, "model": current.model, "threshold": current.threshold}


# --- writes ----------------------------------------------------------------------------------


def _refit_problem(*, deployment: Deployment, current: Calibration) -> str:
    try:
        _checked(deployment=deployment, params=current.params)
    except CalibrationError as exc:
        return str(exc)
    return ""


def _checked(*, deployment: Deployment, params: dict) -> dict:
    from pydantic import ValidationError

    from workers.common.configs.calibration import CalibrationConfig
    from workers.common.configs.problems import config_problems

    try:
        config = CalibrationConfig.model_validate(params)
    except ValidationError as exc:
        raise CalibrationError(
            "; ".join(f"{f}: {why}" for f, why in config_problems(exc))
        ) from None
    version = deployment.index.dataset_version
    splits = version.splits
    known = ", ".join(splits) or "none"
    for field in ("split", "held_out_split"):
        name = getattr(config, field)
        if name and name not in splits:
            raise CalibrationError(f"{field}: {version} has no judged split {name!r} ({known}).")
    return config.model_dump()


def calibration_create(
    *, team: Team, deployment: Deployment, params: dict, created_by=None, enqueue: bool = True,
    idempotency_key: str = "",
) -> Calibration:  # fmt: skip
    """Fit a calibration for ``deployment`` on the index it serves now (a job on the encode
    queue). ``params`` are :class:`CalibrationConfig` fields; CalibrationError names the
    field that is wrong."""
    from workers.tasks.calibration import calibrate

    if deployment.team_id != team.pk:
        raise CalibrationError("deployment: no such deployment in your team")
    params = _checked(deployment=deployment, params=params)

    def create() -> Calibration:
        job = Calibration.objects.create(
            team=team, deployment=deployment, index_id=deployment.index_id, params=params,
            method=params["method"], created_by=created_by,
        )  # fmt: skip
        if enqueue:
            job_enqueue(job=job, task=calibrate)
        return job

    return job_create_once(
        model=Calibration, team=team, created_by=created_by,
        fingerprint=job_fingerprint(kind="calibration", deployment=deployment.pk,
                                    index=deployment.index_id, params=params),
        idempotency_key=idempotency_key, create=create,
    )  # fmt: skip


def calibration_refit_after_swap(*, deployment_id: int, user=None) -> Calibration | None:
    """After a deployment swapped to another index (once the swap committed): a refit of its
    calibration with the same settings on the new index, enqueued. None when it has no
    calibration (or is gone), or one for this index is already fitted or on its way."""
    from workers.tasks.calibration import calibrate

    deployment = Deployment.objects.filter(pk=deployment_id).first()
    if deployment is None:
        return None
    current = calibration_current(deployment=deployment)
    if current is None or current.index_id == deployment.index_id:
        return None
    if (
        calibration_list(deployment=deployment)
        .filter(index_id=deployment.index_id, status__in=(JobStatus.PENDING, JobStatus.RUNNING))
        .exists()
    ):
        return None
    if _refit_problem(deployment=deployment, current=current):
        # The new index's data lacks a split the settings name: a job bound to fail helps no
        # one; the deployment page says why and offers a fit with other settings.
        return None
    with transaction.atomic():
        job = Calibration.objects.create(
            team_id=deployment.team_id, deployment=deployment, index_id=deployment.index_id,
            params=current.params, method=current.method, created_by=user, refit_of=current,
        )  # fmt: skip
        job_enqueue(job=job, task=calibrate)
    return job


def calibration_publish(*, calibration_id: int) -> None:
    """After a calibration job ended: a success changes what the search process serves for its
    deployment (when it was fitted on the index still served), so the manifest is written."""
    from apps.indexes.services import deployments_publish_soon

    job = Calibration.objects.filter(pk=calibration_id).select_related("deployment").first()
    if job is None or job.status != JobStatus.SUCCEEDED:
        return
    if job.deployment.index_id == job.index_id:
        deployments_publish_soon()
