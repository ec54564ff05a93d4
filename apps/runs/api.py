"""REST API for evaluations, comparisons and training runs.

A token sees its own team only; another team's object is a 404 like a missing one. Starting an
evaluation or a run goes through the same services as the pages and answers 202 with the new
row, whose ``Location`` is polled for progress.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from apps.accounts.api import ERRORS, error, forbidden_below, not_found, team_object
from apps.accounts.models import Role
from apps.core.api_schemas import InputSchema, idempotency_key
from apps.core.services import IdempotencyConflict, InvalidTransition, job_cancel
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs import compare
from apps.runs.models import Evaluation, TrainingRun
from apps.runs.selectors import evaluation_list
from apps.runs.services import EvaluationError, evaluation_create, evaluation_delete
from apps.runs.training import TrainingError, training_run_create, training_run_delete
from workers.common.configs.evaluation import EvaluationConfig
from workers.common.configs.training import TrainOptions

router = Router(tags=["runs"])


# --- schemas -------------------------------------------------------------------------------


class ModelRef(Schema):
    id: int
    name: str


class DoneTotal(Schema):
    done: int
    total: int


class EvaluationOut(Schema):
    id: int
    status: str
    stage: str
    progress: DoneTotal
    method: str
    model: ModelRef | None
    dataset_version: int
    split: str
    precision: str = Field(description="asked for: auto, fp32 or bf16")
    precision_used: str | None = Field(description="what the encode ran in (once it ran)")
    fusion: dict[str, Any] | None = Field(
        description="hybrid: the fusion settings; rerank: {k_prime}"
    )
    first_stage: int | None = Field(description="rerank: the evaluation whose lists it reorders")
    fusion_result: dict[str, Any] | None = Field(
        description="hybrid, once it ran: the dense weight used, and the tuning curve when the "
        "weight was chosen on another split"
    )
    metrics: dict[str, Any]
    cache_hit: bool
    timings: dict[str, Any]
    sweep: list[Any]
    diagnostics: dict[str, Any]
    error: str | None
    created_at: str
    finished_at: str | None


class EvaluationListOut(Schema):
    evaluations: list[EvaluationOut]


class EvaluationIn(InputSchema, EvaluationConfig):
    """An evaluation's config (method, model, split, precision; for method hybrid the fusion;
    for method rerank the reranker as ``model``, ``first_stage`` and ``k_prime``) and the
    dataset version it runs on."""

    dataset_version: int = Field(description="id of a dataset version of your team")


class StepTotal(Schema):
    step: int
    total: int


class TrainingRunOut(Schema):
    id: int
    name: str
    status: str
    stage: str
    progress: StepTotal
    base_model: int
    train_version: int
    eval_version: int | None
    eval_split: str
    config: dict[str, Any]
    estimate: dict[str, Any]
    curve: list[Any]
    attempts: int
    model: int | None
    evaluation: int | None
    result: dict[str, Any]
    error: str | None
    created_at: str
    finished_at: str | None


class TrainingRunListOut(Schema):
    training_runs: list[TrainingRunOut]


class TrainingRunIn(InputSchema):
    base_model: int
    train_version: int
    eval_version: int | None = None
    eval_split: str = "test"  # used only with ``eval_version``
    name: str = ""
    guide_model: int | None = Field(
        default=None, description="a model of your team that guides the gist loss"
    )
    options: TrainOptions | None = None


class ComparedEvaluation(Schema):
    id: int
    label: str
    method: str
    model: int | None
    metrics: dict[str, float | None]


class Delta(Schema):
    evaluation: int
    metric: str
    delta: float | None
    ci95: list[float | None]
    p_randomization: float | None
    p_randomization_holm: float | None
    p_t_test: float | None
    p_t_test_holm: float | None
    significant: bool
    verdict: str


class ComparisonOut(Schema):
    dataset_version: int
    split: str
    queries: int
    baseline: int
    alpha: float
    tests: dict[str, str]
    evaluations: list[ComparedEvaluation]
    deltas: list[Delta]


# --- payloads ------------------------------------------------------------------------------


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
        "precision": evaluation.precision,
        "precision_used": evaluation.precision_used or None,
        "fusion": evaluation.fusion or None,
        "first_stage": evaluation.first_stage_id,
        "fusion_result": evaluation.fusion_result or None,
        "metrics": evaluation.metrics,
        "cache_hit": evaluation.cache_hit,
        "timings": evaluation.timings,
        "sweep": evaluation.sweep,
        "diagnostics": evaluation.diagnostics,
        "error": evaluation.human_error or None,
        "created_at": evaluation.created_at.isoformat(),
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }


def training_run_payload(run: TrainingRun) -> dict:
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
        "config": run_config_public(run),
        "estimate": run.estimate,
        "curve": run.log,
        "attempts": run.attempts,
        "model": run.result_model_id,
        "evaluation": run.evaluation_id,
        "result": run_result_public(run),
        "error": run.human_error or None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def run_config_public(run: TrainingRun) -> dict:
    """The run's config without server folders: models are named by id on the run."""
    return {k: v for k, v in (run.config or {}).items() if not k.endswith("_path")}


def run_result_public(run: TrainingRun) -> dict:
    """The run's result without server folders (a resume names its checkpoint only)."""
    out = {}
    for key, value in (run.result or {}).items():
        if key.endswith(("_dir", "_path")):
            continue
        if key == "resumed_from" and isinstance(value, str) and value:
            value = value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        out[key] = value
    return out


def _team_versions(request: HttpRequest):
    return DatasetVersion.objects.filter(dataset__team=request.team)


def _team_models(request: HttpRequest):
    return EmbeddingModel.objects.filter(team=request.team)


# --- evaluations ---------------------------------------------------------------------------


@router.get("/evaluations", url_name="evaluations", response={200: EvaluationListOut, **ERRORS})
def evaluations(
    request: HttpRequest, dataset_version: int | None = None, split: str | None = None
) -> dict:
    """The team's evaluations, newest first (at most 500), optionally of one version's split."""
    rows = evaluation_list(team=request.team)
    if dataset_version is not None:
        rows = rows.filter(dataset_version_id=dataset_version)
    if split:
        rows = rows.filter(split=split)
    return {"evaluations": [evaluation_payload(e) for e in rows[:500]]}


@router.post("/evaluations", response={202: EvaluationOut, **ERRORS})
def evaluation_start(
    request: HttpRequest, response: HttpResponse, payload: EvaluationIn
) -> Status | JsonResponse:
    """Start an evaluation of a model (or the BM25 baseline) on a dataset version's split."""
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    body = payload.model_dump()
    version = team_object(_team_versions(request), body, "dataset_version", what="dataset version")
    model = first_stage = None
    if payload.method != Evaluation.Method.BM25:
        model = team_object(_team_models(request), body, "model", what="model")
    if payload.method == Evaluation.Method.HYBRID and payload.lexical_model is not None:
        team_object(_team_models(request), body, "lexical_model", what="model")
    if payload.method == Evaluation.Method.RERANK:
        first_stage = team_object(
            evaluation_list(team=request.team), body, "first_stage", what="evaluation"
        )
    try:
        evaluation = evaluation_create(
            team=request.team,
            model=model,
            method=payload.method,
            dataset_version=version,
            split=payload.split,
            precision=payload.precision,
            fusion=payload.fusion_settings(),
            first_stage=first_stage,
            created_by=request.api_token.user,
            idempotency_key=idempotency_key(request),
        )
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except EvaluationError as exc:
        return error(str(exc))
    response["Location"] = reverse("api:evaluation", args=[evaluation.pk])
    return Status(202, evaluation_payload(evaluation))


@router.get("/evaluations/{int:pk}", url_name="evaluation", response={200: EvaluationOut, **ERRORS})
def evaluation_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One evaluation: status, progress, metrics, timings, diagnostics."""
    evaluation = evaluation_list(team=request.team).filter(pk=pk).first()
    if evaluation is None:
        return not_found()
    return evaluation_payload(evaluation)


@router.get("/compare", url_name="compare", response={200: ComparisonOut, **ERRORS})
def comparison_detail(
    request: HttpRequest,
    e: Annotated[list[int] | None, Query(description="Evaluations, in order (repeat e).")] = None,
    baseline: Annotated[int | None, Query(description="One of e; by default the earliest.")] = None,
) -> dict | JsonResponse:
    """Metrics, deltas against the baseline, p-values and 95% intervals.

    Any evaluation of another team is a 404, as on the pages; a comparison that cannot be made
    (different dataset versions or splits, unfinished runs) is a 400.
    """
    try:
        evaluations, base = compare.comparison_evaluations_get(
            pks=[str(pk) for pk in e or []],
            baseline=str(baseline) if baseline is not None else None,
            team=request.team,
        )
        comparison = compare.comparison_build(evaluations=evaluations, baseline=base)
    except compare.ComparisonError as exc:
        return error(str(exc))
    return compare.comparison_payload(comparison)


# --- training runs -------------------------------------------------------------------------


@router.get(
    "/training-runs", url_name="training-runs", response={200: TrainingRunListOut, **ERRORS}
)
def training_runs(request: HttpRequest) -> dict:
    """The team's training runs, newest first (at most 200)."""
    runs = TrainingRun.objects.filter(team=request.team)[:200]
    return {"training_runs": [training_run_payload(r) for r in runs]}


@router.post("/training-runs", response={202: TrainingRunOut, **ERRORS})
def training_run_start(
    request: HttpRequest, response: HttpResponse, payload: TrainingRunIn
) -> Status | JsonResponse:
    """Validate, estimate and queue a fine-tuning run of ``base_model`` on ``train_version``."""
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    body = payload.model_dump()
    base = team_object(_team_models(request), body, "base_model", what="model")
    train = team_object(_team_versions(request), body, "train_version", what="dataset version")
    evaluation_version = guide = None
    if payload.eval_version is not None:
        evaluation_version = team_object(
            _team_versions(request), body, "eval_version", what="dataset version"
        )
    if payload.guide_model is not None:
        guide = team_object(_team_models(request), body, "guide_model", what="model")
    try:
        run = training_run_create(
            team=request.team,
            base_model=base,
            train_version=train,
            eval_version=evaluation_version,
            eval_split=payload.eval_split if evaluation_version else "",
            options=payload.options,
            guide_model=guide,
            name=payload.name,
            created_by=request.api_token.user,
            idempotency_key=idempotency_key(request),
        )
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except TrainingError as exc:
        return error(str(exc), 422 if exc.problems else 400, exc.problems)
    response["Location"] = reverse("api:training-run", args=[run.pk])
    return Status(202, training_run_payload(run))


@router.get(
    "/training-runs/{int:pk}", url_name="training-run", response={200: TrainingRunOut, **ERRORS}
)
def training_run_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One training run: status, progress, config, estimate, loss curve, result model."""
    run = TrainingRun.objects.filter(team=request.team, pk=pk).first()
    if run is None:
        return not_found()
    return training_run_payload(run)


@router.post(
    "/training-runs/{int:pk}/cancel",
    url_name="training-run-cancel",
    response={202: TrainingRunOut, **ERRORS},
)
def training_run_cancel(request: HttpRequest, pk: int) -> Status | JsonResponse:
    """Cancel a pending or running training run (its worker frees the GPU at once)."""
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    run = TrainingRun.objects.filter(team=request.team, pk=pk).first()
    if run is None:
        return not_found()
    try:
        run = job_cancel(job=run)
    except InvalidTransition as exc:
        return error(str(exc), status=409)
    return Status(202, training_run_payload(run))


@router.delete(
    "/evaluations/{int:pk}",
    url_name="evaluation_delete",
    response={204: None, **ERRORS},
    summary="Delete an evaluation, its per-query results and run file (member role)",
)
def evaluation_remove(request: HttpRequest, pk: int):
    evaluation = evaluation_list(team=request.team).filter(pk=pk).first()
    if evaluation is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        evaluation_delete(evaluation=evaluation)
    except EvaluationError as exc:
        return error(str(exc), 409)
    return Status(204, None)


@router.delete(
    "/training-runs/{int:pk}",
    url_name="training_run_delete",
    response={204: None, **ERRORS},
    summary="Delete a run that is not running, with its checkpoints and log (member role)",
)
def training_run_remove(request: HttpRequest, pk: int):
    run = TrainingRun.objects.filter(team=request.team, pk=pk).first()
    if run is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        training_run_delete(run=run)
    except TrainingError as exc:
        return error(str(exc), 409)
    return Status(204, None)
