"""REST API of the model registry: base models, their fine-tuned versions, static
distillations and optimized variants (the writes: start a distillation or an optimization).

Everything needed to encode the way a model was trained is here — pooling, normalisation,
prefixes, max length — as well as its lineage: the parent model and the training run that
made it. A token sees its own team's models only; another team's is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, JsonResponse
from ninja import Field, Router, Schema, Status

from apps.accounts.api import ERRORS, error, forbidden_below, not_found
from apps.accounts.models import Role, Team
from apps.core.api_schemas import InputSchema, idempotency_key
from apps.core.services import IdempotencyConflict
from apps.registry.models import (
    DistillJob,
    EmbeddingModel,
    HubImport,
    HubPublish,
    MergeJob,
    OptimizeJob,
)
from apps.registry.selectors import embedding_model_list
from apps.registry.services import (
    DistillError,
    HubImportError,
    MergeError,
    MergeNotFound,
    ModelInUse,
    OptimizeError,
    distill_job_create,
    embedding_model_delete,
    hub_import_create,
    hub_publish_create,
    merge_job_create,
    optimize_job_create,
)
from apps.runs.models import TrainingRun
from workers.common.configs.distill import DistillConfig
from workers.common.configs.merge import MergeConfig
from workers.common.configs.optimize import OptimizeConfig

router = Router(tags=["registry"])


class ModelOut(Schema):
    id: int
    name: str
    kind: str
    role: str = Field(description="embedding, reranker (a cross-encoder) or sparse (SPLADE)")
    source: str
    source_ref: str = Field(
        description="the package name, the run, or the last part of the folder it was "
        "registered from (never a server path)"
    )
    layout: str
    architecture: str
    dimension: int
    max_seq_length: int
    pooling: str
    normalize: bool
    query_prefix: str
    document_prefix: str
    parameters: int | None
    parent: int | None
    training_run: int | None
    optimization: dict[str, Any]
    quality: dict[str, Any]
    created_at: str


class ModelListOut(Schema):
    models: list[ModelOut]


def _models(team: Team) -> QuerySet[EmbeddingModel]:
    # The run whose result a fine-tuned model is: one subquery, not one query per model.
    made_by = TrainingRun.objects.filter(result_model=OuterRef("pk")).order_by("-created_at")
    return embedding_model_list(team=team).annotate(
        training_run_id=Subquery(made_by.values("pk")[:1])
    )


def model_payload(model: EmbeddingModel) -> dict:
    return {
        "id": model.pk,
        "name": model.name,
        "kind": model.kind,
        "role": model.role,
        "source": model.source,
        "source_ref": model.public_source,
        "layout": model.layout,
        "architecture": model.architecture,
        "dimension": model.dimension,
        "max_seq_length": model.max_seq_length,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "query_prefix": model.query_prefix,
        "document_prefix": model.document_prefix,
        "parameters": model.parameters,
        "parent": model.parent_id,
        "training_run": model.training_run_id,
        # The graph file's name and how it was quantised, never the folder it lies in.
        "optimization": {k: v for k, v in model.optimization.items() if k != "path"},
        "quality": model.quality,
        "created_at": model.created_at.isoformat(),
    }


@router.get("/models", url_name="models", response={200: ModelListOut, **ERRORS})
def models(request: HttpRequest) -> dict:
    """The team's models by name: base models and fine-tuned versions."""
    return {"models": [model_payload(m) for m in _models(request.team)]}


@router.get("/models/{int:pk}", url_name="model", response={200: ModelOut, **ERRORS})
def model_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One model: dimension, pooling, normalisation, prefixes, max length, lineage."""
    model = _models(request.team).filter(pk=pk).first()
    if model is None:
        return not_found()
    return model_payload(model)


class DistillIn(InputSchema, DistillConfig):
    """A static (Model2Vec) distillation's settings; versions by id, in your team."""


class VariantJobOut(Schema):
    id: int
    status: str
    stage: str
    source: int
    params: dict[str, Any]
    evaluate_version: int | None
    split: str
    model: int | None
    result: dict[str, Any]
    quality: dict[str, Any]
    error: str | None
    created_at: str
    finished_at: str | None


class DistillOut(VariantJobOut):
    vocabulary_version: int | None


def variant_job_payload(job: DistillJob | OptimizeJob) -> dict:
    """What a derived-model job (distillation, optimization) answers: the same fields for
    both, the variant's quality verdict once its two evaluations ran."""
    return {
        "id": job.pk,
        "status": job.status,
        "stage": job.stage,
        "source": job.source_id,
        "params": job.params,
        "evaluate_version": job.evaluate_version_id,
        "split": job.split,
        "model": job.result_model_id,
        "result": job.result,
        "quality": job.result_model.quality if job.result_model else {},
        "error": job.human_error or None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def distill_payload(job: DistillJob) -> dict:
    return {**variant_job_payload(job), "vocabulary_version": job.vocabulary_version_id}


@router.post(
    "/models/{int:pk}/distill",
    url_name="model_distill",
    response={202: DistillOut, **ERRORS},
    summary="Distill a static (Model2Vec) model (member role)",
)
def model_distill(request: HttpRequest, pk: int, body: DistillIn):
    """Start a static distillation of one of your models: the result is registered with the
    model as parent, its speed measured against it, and both evaluated on one version."""
    source = embedding_model_list(team=request.team).filter(pk=pk).first()
    if source is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    config = DistillConfig.model_validate(body.model_dump())
    try:
        job = distill_job_create(team=request.team, source=source, config=config,
                                 created_by=request.api_token.user,
                                 idempotency_key=idempotency_key(request))  # fmt: skip
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except DistillError as exc:
        return error(str(exc))
    response = JsonResponse(distill_payload(job), status=202)
    response["Location"] = f"/api/v1/distillations/{job.pk}"
    return response


@router.get(
    "/distillations/{int:pk}", url_name="distillation", response={200: DistillOut, **ERRORS}
)
def distillation(request: HttpRequest, pk: int):
    """One distillation: its status, the model it registered, speed and evaluations."""
    job = DistillJob.objects.filter(team=request.team, pk=pk).first()
    if job is None:
        return not_found()
    return distill_payload(job)


class OptimizeIn(InputSchema, OptimizeConfig):
    """An optimized variant's settings (backend, quantization); the version by id, in your
    team."""


@router.post(
    "/models/{int:pk}/optimize",
    url_name="model_optimize",
    response={202: VariantJobOut, **ERRORS},
    summary="Build an optimized (ONNX, int8) variant (member role)",
)
def model_optimize(request: HttpRequest, pk: int, body: OptimizeIn):
    """Start an optimized variant of one of your models: exported, checked against the model's
    vectors, registered with it as parent, its speed measured against it and both evaluated on
    one version; ``quality`` says, once both ran, whether it stays within the bar."""
    source = embedding_model_list(team=request.team).filter(pk=pk).first()
    if source is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    config = OptimizeConfig.model_validate(body.model_dump())
    try:
        job = optimize_job_create(team=request.team, source=source, config=config,
                                  created_by=request.api_token.user,
                                  idempotency_key=idempotency_key(request))  # fmt: skip
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except OptimizeError as exc:
        return error(str(exc))
    response = JsonResponse(variant_job_payload(job), status=202)
    response["Location"] = f"/api/v1/optimizations/{job.pk}"
    return response


@router.get(
    "/optimizations/{int:pk}", url_name="optimization", response={200: VariantJobOut, **ERRORS}
)
def optimization(request: HttpRequest, pk: int):
    """One optimization: its status, the variant it registered, the export check, speed,
    evaluations and the quality verdict."""
    job = OptimizeJob.objects.filter(team=request.team, pk=pk).select_related("result_model")
    job = job.first()
    if job is None:
        return not_found()
    return variant_job_payload(job)


@router.delete(
    "/models/{int:pk}",
    url_name="model_delete",
    response={204: None, **ERRORS},
    summary="Delete a model nothing uses (member role)",
)
def model_remove(request: HttpRequest, pk: int):
    model = _models(request.team).filter(pk=pk).first()
    if model is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        embedding_model_delete(model=model)
    except ModelInUse as exc:
        return error(str(exc), 409)
    return Status(204, None)


class HubImportIn(InputSchema):
    kind: str = Field(description="model or dataset")
    repo_id: str = Field(description="ORG/NAME on the Hub")
    revision: str = Field("", description="a branch, tag or commit sha; empty: main")
    name: str = Field("", description="the name here; empty: the repo's name")


class HubImportOut(Schema):
    id: int
    status: str
    stage: str
    kind: str
    repo_id: str
    revision: str
    sha: str = Field(description="the commit the revision resolved to, once known")
    name: str
    model: int | None
    dataset_version: int | None
    progress_done: int = Field(description="bytes downloaded")
    progress_total: int
    result: dict[str, Any]
    error: str | None
    created_at: str
    finished_at: str | None


def hub_import_payload(job: HubImport) -> dict:
    return {
        "id": job.pk, "status": job.status, "stage": job.stage, "kind": job.kind,
        "repo_id": job.repo_id, "revision": job.revision, "sha": job.sha, "name": job.name,
        "model": job.result_model_id, "dataset_version": job.result_version_id,
        "progress_done": job.progress_done, "progress_total": job.progress_total,
        "result": job.result, "error": job.human_error or None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }  # fmt: skip


@router.post(
    "/hub-imports",
    url_name="hub_imports",
    response={202: HubImportOut, **ERRORS},
    summary="Bring a model or a dataset in from the Hugging Face Hub (member role)",
)
def hub_import_start(request: HttpRequest, body: HubImportIn):
    """Download a Hub repo at one commit and register the model, or import the dataset
    through the upload's validation. Refused at once: a bad repo id or revision, an
    organisation not on HUB_ALLOWED_ORGS, a model name already used. Refused by the job: a
    gated or private repo without access, a model that needs trust_remote_code."""
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        job = hub_import_create(
            team=request.team, kind=body.kind, repo_id=body.repo_id, revision=body.revision,
            name=body.name, created_by=request.api_token.user,
        )  # fmt: skip
    except HubImportError as exc:
        return error(str(exc))
    response = JsonResponse(hub_import_payload(job), status=202)
    response["Location"] = f"/api/v1/hub-imports/{job.pk}"
    return response


@router.get("/hub-imports/{int:pk}", url_name="hub_import", response={200: HubImportOut, **ERRORS})
def hub_import_detail(request: HttpRequest, pk: int):
    """One Hub import: its progress in bytes, the commit it resolved to, and what it made."""
    job = HubImport.objects.filter(team=request.team, pk=pk).first()
    if job is None:
        return not_found()
    return hub_import_payload(job)


class MergeIn(InputSchema, MergeConfig):
    """A merge's settings: models, base and version by id, in your team."""


class MergeOut(Schema):
    id: int
    status: str
    stage: str
    method: str
    models: list[int]
    base: int | None
    params: dict[str, Any]
    evaluate_version: int | None
    dev_split: str
    test_split: str
    model: int | None = Field(description="the merged model, once registered")
    lineage: dict[str, Any] = Field(description="every parent with its weight, the method")
    search: dict[str, Any] = Field(
        description="the weight search: points {weight, dev, test} (nDCG@10) and the chosen"
    )
    greedy: dict[str, Any]
    dev: dict[str, Any] = Field(description="the merge's metrics on the dev split")
    evaluations: dict[str, int] = Field(
        description="test-split evaluations: 'merge' and each parent's id as label"
    )
    error: str | None
    created_at: str
    finished_at: str | None


def merge_payload(job: MergeJob) -> dict:
    result = job.result or {}
    return {
        "id": job.pk,
        "status": job.status,
        "stage": job.stage,
        "method": job.method,
        "models": job.model_ids,
        "base": job.base_id,
        "params": job.params,
        "evaluate_version": job.evaluate_version_id,
        "dev_split": job.dev_split,
        "test_split": job.test_split,
        "model": job.result_model_id,
        "lineage": result.get("lineage") or {},
        "search": result.get("search") or {},
        "greedy": result.get("greedy") or {},
        "dev": result.get("dev") or {},
        "evaluations": result.get("evaluations") or {},
        "error": job.human_error or None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


@router.post(
    "/merges",
    url_name="merges",
    response={201: MergeOut, **ERRORS},
    summary="Merge models in weight space (member role)",
)
def merge_start(request: HttpRequest, body: MergeIn):
    """Start a merge of your models (soup, greedy soup, linear, SLERP, TIES, DARE, Model
    Stock; a weight search for two end points): the result is registered as a merged model,
    compared with each parent on the test split. Another team's model is a 404."""
    config = MergeConfig.model_validate(body.model_dump())
    asked = {*config.models, *([config.base] if config.base else [])}
    if embedding_model_list(team=request.team).filter(pk__in=asked).count() != len(asked):
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        job = merge_job_create(team=request.team, config=config,
                               created_by=request.api_token.user,
                               idempotency_key=idempotency_key(request))  # fmt: skip
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except MergeNotFound:
        return not_found()
    except MergeError as exc:
        return error(str(exc), 422)
    response = JsonResponse(merge_payload(job), status=201)
    response["Location"] = f"/api/v1/merges/{job.pk}"
    return response


@router.get("/merges/{int:pk}", url_name="merge", response={200: MergeOut, **ERRORS})
def merge_detail(request: HttpRequest, pk: int):
    """One merge: its status, the model it registered with its lineage, the weight search's
    dev and test figures and the test evaluations of the merge and each parent."""
    job = MergeJob.objects.filter(team=request.team, pk=pk).first()
    if job is None:
        return not_found()
    return merge_payload(job)


class PublishIn(InputSchema):
    repo_id: str = Field(description="ORG/NAME on the Hub; made if it does not exist")
    private: bool = True


class PublishOut(Schema):
    id: int
    status: str
    model: int
    repo_id: str
    private: bool
    sha: str = Field(description="the commit the push made, once done")
    card: str = Field(description="the model card it was published with")
    error: str | None
    created_at: str
    finished_at: str | None


def publish_payload(job: HubPublish) -> dict:
    return {
        "id": job.pk, "status": job.status, "model": job.model_id, "repo_id": job.repo_id,
        "private": job.private, "sha": job.sha, "card": job.result.get("card", ""),
        "error": job.human_error or None, "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }  # fmt: skip


@router.post(
    "/models/{int:pk}/publish",
    url_name="model_publish",
    response={202: PublishOut, **ERRORS},
    summary="Publish a model made here to the Hugging Face Hub (member role)",
)
def model_publish(request: HttpRequest, pk: int, body: PublishIn):
    """Push one of your fine-tuned, merged, optimized or static models to a Hub repo as one
    commit, with a model card made from its lineage and evaluations."""
    model = embedding_model_list(team=request.team).filter(pk=pk).first()
    if model is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        job = hub_publish_create(
            team=request.team, model=model, repo_id=body.repo_id, private=body.private,
            created_by=request.api_token.user,
        )  # fmt: skip
    except HubImportError as exc:
        return error(str(exc))
    response = JsonResponse(publish_payload(job), status=202)
    response["Location"] = f"/api/v1/hub-publishes/{job.pk}"
    return response


@router.get("/hub-publishes/{int:pk}", url_name="hub_publish", response={200: PublishOut, **ERRORS})
def hub_publish_detail(request: HttpRequest, pk: int):
    """One publish: its status and, once pushed, the commit and the card."""
    job = HubPublish.objects.filter(team=request.team, pk=pk).first()
    if job is None:
        return not_found()
    return publish_payload(job)
