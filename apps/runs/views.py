from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.services import InvalidTransition, job_cancel
from apps.datasets.selectors import dataset_version_get
from apps.runs.forms import EvaluationForm
from apps.runs.selectors import evaluation_get, evaluation_list
from apps.runs.services import EvaluationError, evaluation_create


@require_GET
@team_required()
def evaluation_index(request):
    return render(
        request, "runs/list.html", {"evaluations": evaluation_list(team=request.team)[:200]}
    )


@require_POST
@team_required()
def evaluation_start(request, version_pk: int):
    version = dataset_version_get(user=request.user, pk=version_pk, role=Role.MEMBER)
    form = EvaluationForm(request.POST, team=version.dataset.team, version=version)
    if not form.is_valid():
        messages.error(request, "Choose a model and a split.")
        return redirect("datasets:version", pk=version.pk)
    try:
        evaluation = evaluation_create(
            team=version.dataset.team,
            model=form.cleaned_data["model"],
            dataset_version=version,
            split=form.cleaned_data["split"],
            created_by=request.user,
        )
    except EvaluationError as exc:
        messages.error(request, str(exc))
        return redirect("datasets:version", pk=version.pk)
    return redirect("runs:evaluation", pk=evaluation.pk)


@require_GET
@vary_on_headers("HX-Request")
@team_required()
def evaluation_detail(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk)
    context = {
        "evaluation": evaluation,
        "can_write": can_write(user=request.user, team=evaluation.team),
    }
    if request.htmx:
        # The fragment of a finished job carries no hx-trigger, so polling stops by itself.
        return render(request, "runs/evaluation.html#status", context)
    return render(request, "runs/evaluation.html", context)


@require_POST
@team_required()
def evaluation_cancel(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        job_cancel(job=evaluation)
    except InvalidTransition as exc:
        messages.error(request, str(exc))
    if request.htmx:
        context = {"evaluation": evaluation, "can_write": True}
        return render(request, "runs/evaluation.html#status", context)
    return redirect("runs:evaluation", pk=pk)


@require_GET
@team_required()
def evaluation_run_file(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk)
    path = Path(evaluation.run_file) if evaluation.run_file else None
    root = Path(settings.ARTIFACTS_ROOT).resolve()
    if path is None or not path.resolve().is_relative_to(root) or not path.is_file():
        raise Http404("No run file for this evaluation.")
    return FileResponse(
        open(path, "rb"),  # noqa: SIM115 (FileResponse closes it)
        as_attachment=True,
        filename=f"evaluation-{pk}.trec",
        content_type="text/plain",
    )
