"""A deployment's relevance calibration pages: fit one (split, method, target), and each
calibration's results: ECE and the reliability diagram on held-out queries, precision and
recall at the chosen threshold against a single global raw-score threshold."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.responses import job_cancel_page, job_page
from apps.indexes.calibrations import (
    CalibrationError,
    calibration_create,
    calibration_get,
    calibration_list,
    calibration_state,
)
from apps.indexes.charts import reliability_chart
from apps.indexes.forms import CalibrationForm
from apps.indexes.selectors import deployment_get

TEMPLATE = "indexes/calibration.html"


def _context(request, deployment, job=None, form=None, error=None) -> dict:
    results = (job.results or {}) if job is not None else {}
    return {
        "deployment": deployment,
        "job": job,
        "results": results,
        "chart": reliability_chart(results.get("reliability") or []) if results else None,
        "state": calibration_state(deployment=deployment),
        "calibrations": calibration_list(deployment=deployment).select_related("index")[:20],
        "form": form,
        "error": error,
        "can_write": can_write(user=request.user, team=deployment.team),
    }


@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def calibration_new(request, name: str):
    """The form, and the deployment's current calibration's results below it."""
    deployment = deployment_get(team=request.team, name=name)
    splits = deployment.index.dataset_version.splits
    error = None
    if request.method == "POST":
        if not can_write(user=request.user, team=deployment.team):
            raise PermissionDenied("Fitting a calibration needs the member role.")
        form = CalibrationForm(request.POST, splits=splits)
        if form.is_valid():
            try:
                job = calibration_create(team=request.team, deployment=deployment,
                                         params=form.config.model_dump(),
                                         created_by=request.user)  # fmt: skip
            except CalibrationError as exc:
                error = str(exc)
            else:
                return redirect("indexes:calibration", name=name, pk=job.pk)
    else:
        form = CalibrationForm(splits=splits)
    job = calibration_state(deployment=deployment)["current"]
    return job_page(request, template=TEMPLATE, target="calibration-status",
                    context=_context(request, deployment, job, form, error))  # fmt: skip


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def calibration_detail(request, name: str, pk: int):
    deployment = deployment_get(team=request.team, name=name)
    job = calibration_get(deployment=deployment, pk=pk)
    form = CalibrationForm(splits=deployment.index.dataset_version.splits, initial=job.params)
    return job_page(request, template=TEMPLATE, target="calibration-status",
                    context=_context(request, deployment, job, form))  # fmt: skip


@require_POST
@team_required(Role.MEMBER)
def calibration_cancel(request, name: str, pk: int):
    deployment = deployment_get(team=request.team, name=name)
    job = calibration_get(deployment=deployment, pk=pk)
    return job_cancel_page(request, job=job, template=TEMPLATE,
                           url=reverse("indexes:calibration", args=[name, pk]),
                           context=lambda j: _context(request, deployment, j))  # fmt: skip


@require_GET
@team_required()
def calibration_by_id(request, pk: int):
    """A calibration by its number alone (the jobs list's link): its deployment's page for it,
    for a member of its team; anyone else gets a 404."""
    from apps.accounts.selectors import team_scoped_get
    from apps.indexes.models import Calibration

    job = team_scoped_get(queryset=Calibration.objects.select_related("deployment"),
                          user=request.user, pk=pk)  # fmt: skip
    return redirect("indexes:calibration", name=job.deployment.name, pk=job.pk)
