from __future__ import annotations

from django.http import Http404, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from apps.accounts.api import (
    BadRequest,
    error,
    forbidden_below,
    json_object,
    team_object,
    token_required,
)
from apps.accounts.models import Role
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs import compare
from apps.runs.models import Evaluation
from apps.runs.services import EvaluationError, evaluation_create


def evaluation_payload(evaluation: Evaluation) -> dict:
    return {
        "id": evaluation.pk,
        "status": evaluation.status,
        "stage": evaluation.stage,
        "progress": {"done": evaluation.progress_done, "total": evaluation.progress_total},
        "method": evaluation.method,
        "model": {"id": evaluation.model_id, "name": evaluation.model.name}
        if evaluation.model_id
        else None,
        "dataset_version": evaluation.dataset_version_id,
        "split": evaluation.split,
        "metrics": evaluation.metrics,
        "cache_hit": evaluation.cache_hit,
        "timings": evaluation.timings,
        "sweep": evaluation.sweep,
        "diagnostics": evaluation.diagnostics,
        "error": evaluation.human_error or None,
        "created_at": evaluation.created_at.isoformat(),
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }


@csrf_exempt  # authenticated by the bearer token only, never by a session cookie
@require_http_methods(["GET", "POST"])
@token_required
def evaluations(request):
    """``GET /api/v1/evaluations`` lists the team's evaluations (``?dataset_version=&split=``);
    ``POST`` with JSON ``{"dataset_version", "split", "model"}`` or ``{"method": "bm25", …}``
    starts one (202, ``Location`` names it)."""
    if request.method == "GET":
        rows = Evaluation.objects.filter(team=request.team).select_related("model")
        if request.GET.get("dataset_version", "").isdigit():
            rows = rows.filter(dataset_version_id=int(request.GET["dataset_version"]))
        if request.GET.get("split"):
            rows = rows.filter(split=request.GET["split"])
        return JsonResponse({"evaluations": [evaluation_payload(e) for e in rows[:500]]})
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        body = json_object(request)
        version = team_object(
            DatasetVersion.objects.filter(dataset__team=request.team),
            body,
            "dataset_version",
            what="dataset version",
        )
        method = body.get("method", Evaluation.Method.DENSE)
        model = None
        if method != Evaluation.Method.BM25:
            model = team_object(
                EmbeddingModel.objects.filter(team=request.team), body, "model", what="model"
            )
    except BadRequest as exc:
        return exc.response
    try:
        evaluation = evaluation_create(
            team=request.team,
            model=model,
            method=method,
            dataset_version=version,
            split=str(body.get("split", "test")),
            created_by=request.api_token.user,
        )
    except EvaluationError as exc:
        return error(str(exc))
    response = JsonResponse(evaluation_payload(evaluation), status=202)
    response["Location"] = reverse("api-evaluation", args=[evaluation.pk])
    return response


@require_GET
@token_required
def evaluation_detail(request, pk: int):
    # A token sees its own team only; another team's evaluation is a 404 like a missing one.
    evaluation = Evaluation.objects.select_related("model").filter(team=request.team, pk=pk).first()
    if evaluation is None:
        raise Http404
    return JsonResponse(evaluation_payload(evaluation))


@require_GET
@token_required
def comparison_detail(request):
    """GET /api/v1/compare?e=1&e=2&baseline=1: metrics, deltas, p-values and intervals.

    Any evaluation of another team in the request is a 404, as on the pages; a comparison that
    cannot be made (different dataset versions or splits, unfinished runs) is a 400.
    """
    try:
        evaluations, baseline = compare.comparison_evaluations_get(
            pks=request.GET.getlist("e"), baseline=request.GET.get("baseline"), team=request.team
        )
        comparison = compare.comparison_build(evaluations=evaluations, baseline=baseline)
    except compare.ComparisonError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(compare.comparison_payload(comparison))


def training_run_payload(run) -> dict:
    return {
        "id": run.pk,
        "name": run.name,
        "status": run.status,
        "stage": run.stage,
        "progress": {"step": run.progress_done, "total": run.progress_total},
        "base_model": run.base_model_id,
        "train_version": run.train_version_id,
        "eval_version": run.eval_version_id,
        "eval_split": run.eval_split,
        "config": run.config,
        "estimate": run.estimate,
        "curve": run.log,
        "attempts": run.attempts,
        "model": run.result_model_id,
        "evaluation": run.evaluation_id,
        "result": run.result,
        "error": run.human_error or None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


@csrf_exempt  # authenticated by the bearer token only
@require_http_methods(["GET", "POST"])
@token_required
def training_runs(request):
    """``GET /api/v1/training-runs``; ``POST`` JSON ``{"base_model", "train_version",
    "eval_version"?, "eval_split"?, "name"?, "options": {TrainConfig fields}}`` → 202."""
    from apps.runs.models import TrainingRun
    from apps.runs.training import TrainingError, training_run_create

    if request.method == "GET":
        runs = TrainingRun.objects.filter(team=request.team)[:200]
        return JsonResponse({"training_runs": [training_run_payload(r) for r in runs]})
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    versions = DatasetVersion.objects.filter(dataset__team=request.team)
    try:
        body = json_object(request)
        base = team_object(
            EmbeddingModel.objects.filter(team=request.team), body, "base_model", what="model"
        )
        train = team_object(versions, body, "train_version", what="dataset version")
        evaluation_version = None
        if body.get("eval_version") is not None:
            evaluation_version = team_object(versions, body, "eval_version", what="dataset version")
    except BadRequest as exc:
        return exc.response
    try:
        run = training_run_create(
            team=request.team,
            base_model=base,
            train_version=train,
            eval_version=evaluation_version,
            eval_split=str(body.get("eval_split", "test")) if evaluation_version else "",
            options=body.get("options") or {},
            name=str(body.get("name", "")),
            created_by=request.api_token.user,
        )
    except TrainingError as exc:
        return error(str(exc))
    response = JsonResponse(training_run_payload(run), status=202)
    response["Location"] = reverse("api-training-run", args=[run.pk])
    return response


@require_GET
@token_required
def training_run_detail(request, pk: int):
    from apps.runs.models import TrainingRun

    run = TrainingRun.objects.filter(team=request.team, pk=pk).first()
    if run is None:
        raise Http404
    return JsonResponse(training_run_payload(run))


@csrf_exempt
@require_http_methods(["POST"])
@token_required
def training_run_cancel(request, pk: int):
    from apps.core.services import InvalidTransition, job_cancel
    from apps.runs.models import TrainingRun

    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    run = TrainingRun.objects.filter(team=request.team, pk=pk).first()
    if run is None:
        raise Http404
    try:
        run = job_cancel(job=run)
    except InvalidTransition as exc:
        return error(str(exc), status=409)
    return JsonResponse(training_run_payload(run), status=202)
