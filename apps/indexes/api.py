"""REST API of index builds, deployments and search.

Search is ``POST /api/v1/deployments/{name}/search`` with ``{"query": "…"}`` or
``{"queries": […]}``, ``k`` and ``filters`` (field → value, applied inside the index search).
Names are per team: another team's deployment is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from ninja import Router, Schema, Status
from pydantic import Field

from apps.accounts.api import ERRORS, ErrorOut, error, forbidden_below, not_found
from apps.accounts.models import Role
from apps.core.api_schemas import InputSchema, idempotency_key
from apps.core.services import IdempotencyConflict
from apps.datasets.models import DatasetVersion
from apps.indexes.calibrations import (
    CalibrationError,
    calibration_create,
    calibration_current,
    calibration_get,
    calibration_list,
)
from apps.indexes.models import Calibration, Deployment, IndexBuild
from apps.indexes.selectors import (
    SearchFailed,
    deployment_events,
    deployment_get,
    deployment_list,
    deployment_query,
    index_build_list,
)
from apps.indexes.services import (
    DeploymentConflict,
    IndexBuildError,
    deployment_deploy,
    deployment_undeploy,
    index_build_create,
)
from apps.indexes.upgrades import public_adapter
from apps.registry.models import EmbeddingModel
from workers.common.configs.calibration import CalibrationConfig
from workers.common.configs.encoding import Precision, precision_field
from workers.common.configs.indexing import (
    DeploymentFusion,
    DeploymentRerank,
    IndexParams,
    IndexTypeName,
)
from workers.serving.schema import (
    DEFAULT_K,
    MAX_FILTER_FIELDS,
    MAX_K,
    MAX_QUERIES,
    Filters,
    Mode,
)

router = Router(tags=["indexes"])


class IndexOut(Schema):
    id: int
    type: str
    label: str
    status: str
    stage: str
    progress: float
    model: int
    dataset_version: int
    spec: dict[str, Any]
    split: str
    precision: str = Field(description="asked for: auto, fp32 or bf16")
    precision_used: str | None = Field(description="what the documents were encoded in")
    encoder: dict[str, Any]
    document_count: int | None
    dimension: int | None
    metrics: dict[str, Any]
    timings: dict[str, Any]
    error: str
    created_at: str
    finished_at: str | None


class IndexListOut(Schema):
    indexes: list[IndexOut]


class IndexIn(InputSchema):
    model: int
    dataset_version: int
    type: IndexTypeName = Field(description="the kind of faiss index")
    params: IndexParams = Field(
        default_factory=IndexParams, description="build parameters; empty: the defaults"
    )
    split: str | None = Field(default=None, description="queries to measure on (default test)")
    precision: Precision = precision_field()


class CalibrationSummary(Schema):
    id: int
    method: str
    index: int = Field(description="the index it was fitted on")
    threshold: float | None = Field(description="the chosen min_relevance; null: unreachable")
    stale: bool = Field(
        description="fitted on another index than the one served now: search gives no "
        "relevance until the refit (enqueued by the swap) succeeds"
    )
    ece: float | None = Field(description="expected calibration error on the held-out queries")


class CalibrationOut(Schema):
    id: int
    deployment: str
    index: int
    status: str
    stage: str
    progress: float
    method: str
    params: CalibrationConfig
    threshold: float | None
    stale: bool
    model: dict[str, Any] = Field(description="the fitted mapping the search process applies")
    results: dict[str, Any] = Field(
        description="ece, reliability bins, and precision/recall at the threshold against a "
        "single global raw-score threshold chosen the same way (held_out, calibration_split)"
    )
    refit_of: int | None
    error: str
    created_at: str
    finished_at: str | None


class CalibrationListOut(Schema):
    calibrations: list[CalibrationOut]


class EventOut(Schema):
    action: str
    from_index: int | None
    to_index: int | None
    user: str | None
    at: str


class DeploymentOut(Schema):
    name: str
    index: int
    model: int
    dataset_version: int
    encoder: dict[str, Any]
    fusion: dict[str, Any]
    rerank: dict[str, Any] | None = Field(
        description="the rerank stage: {model, model_name, k_prime}; null: none"
    )
    adapter: dict[str, Any] | None = Field(
        description="a model upgrade's query adapter in use: {upgrade, kind, model, "
        "model_name}; the new model's queries are mapped into this index's space (each "
        "answer's timings give adapter_ms); null: none"
    )
    calibration: CalibrationSummary | None = Field(
        default=None,
        description="the relevance calibration (its latest succeeded one); null: none",
    )
    deployed_by: str | None
    updated_at: str
    history: list[EventOut]


class DeploymentListOut(Schema):
    deployments: list[DeploymentOut]


class DeployIn(InputSchema):
    name: str
    index: int
    fusion: DeploymentFusion | None = Field(
        default=None,
        description="search mode hybrid: reciprocal rank fusion settings; omitted: keep the "
        "name's current ones (the defaults for a new name)",
    )
    rerank: DeploymentRerank | None = Field(
        default=None,
        description="a rerank stage: a reranker of your team reorders the first stage's top "
        'k_prime hits; {"model": null} removes it; omitted: keep the name\'s current one',
    )


class SearchIn(InputSchema):
    # Bounds from the search process's schema (workers.serving.schema), which checks the
    # queries themselves (a 400 naming the problem) before anything is sent.
    query: str | None = None
    queries: list[str] | None = Field(
        default=None, description=f"several queries at once, at most {MAX_QUERIES}"
    )
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    filters: Filters | None = Field(
        default=None,
        description=(
            "document metadata field → value (a string, number or true/false); all must "
            f"match; at most {MAX_FILTER_FIELDS} fields"
        ),
    )
    documents: bool = Field(default=False, description="include each hit's title and text")
    rerank: bool = Field(
        default=True,
        description="false: the first stage alone, skipping the deployment's rerank stage",
    )
    min_relevance: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="cut hits whose calibrated relevance is under it (0 to 1); needs the "
        "deployment's current calibration, mode dense and no rerank stage applied",
    )
    mode: Mode = Field(
        default="dense",
        description="dense: the model's vectors; bm25: BM25 alone (an index built with bm25); "
        "sparse: the index's sparse model alone (an index built with a sparse_model); hybrid: "
        "dense fused with the lexical side the deployment's fusion names (bm25 or sparse)",
    )


class Hit(Schema):
    id: str
    score: float
    relevance: float | None = Field(
        default=None,
        description="calibrated probability that the hit is relevant (a calibrated "
        "deployment, dense first stage); null otherwise",
    )
    title: str | None = None
    text: str | None = None


class QueryHits(Schema):
    query: str
    hits: list[Hit]


class SearchOut(Schema):
    deployment: str
    index: int
    k: int
    mode: str
    results: list[QueryHits]
    timings: dict[str, float]


def public_rerank(rerank: dict) -> dict | None:
    """A deployment's rerank stage without the reranker's folder or fingerprint."""
    if not rerank:
        return None
    return {k: rerank[k] for k in ("model", "model_name", "k_prime") if k in rerank}


def public_encoder(encoder: dict) -> dict:
    """A recorded query encoder without the model's folder: the API names no server path."""
    return {k: v for k, v in (encoder or {}).items() if k != "path"}


def index_payload(build: IndexBuild) -> dict:
    return {
        "id": build.pk,
        "type": build.index_type,
        "label": build.label,
        "status": build.status,
        "stage": build.stage,
        "progress": build.progress,
        "model": build.model_id,
        "dataset_version": build.dataset_version_id,
        "spec": build.spec,
        "split": build.split,
        "precision": build.precision,
        "precision_used": build.precision_used or None,
        "encoder": public_encoder(build.encoder),
        "document_count": build.document_count,
        "dimension": build.dimension,
        "metrics": build.metrics,
        "timings": build.timings,
        "error": build.human_error,
        "created_at": build.created_at.isoformat(),
        "finished_at": build.finished_at.isoformat() if build.finished_at else None,
    }


def calibration_summary(deployment: Deployment) -> dict | None:
    current = calibration_current(deployment=deployment)
    if current is None:
        return None
    return {"id": current.pk, "method": current.method, "index": current.index_id,
            "threshold": current.threshold, "stale": current.index_id != deployment.index_id,
            "ece": (current.results or {}).get("ece")}  # fmt: skip


def calibration_payload(job: Calibration) -> dict:
    return {
        "id": job.pk,
        "deployment": job.deployment.name,
        "index": job.index_id,
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "method": job.method,
        "params": job.params,
        "threshold": job.threshold,
        "stale": job.index_id != job.deployment.index_id,
        "model": job.model,
        "results": job.results,
        "refit_of": job.refit_of_id,
        "error": job.human_error,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def deployment_payload(deployment: Deployment, *, history: bool = False) -> dict:
    events = deployment_events(team=deployment.team, name=deployment.name)[:50] if history else []
    return {
        "name": deployment.name,
        "index": deployment.index_id,
        "model": deployment.index.model_id,
        "dataset_version": deployment.index.dataset_version_id,
        "encoder": public_encoder(deployment.encoder),
        "fusion": deployment.fusion,
        "rerank": public_rerank(deployment.rerank),
        "adapter": public_adapter(deployment.adapter),
        "calibration": calibration_summary(deployment),
        "deployed_by": deployment.deployed_by.username if deployment.deployed_by else None,
        "updated_at": deployment.updated_at.isoformat(),
        "history": [
            {
                "action": e.action,
                "from_index": e.from_index_id,
                "to_index": e.to_index_id,
                "user": e.user.username if e.user else None,
                "at": e.at.isoformat(),
            }
            for e in events
        ],
    }


@router.get(
    "/indexes",
    response={200: IndexListOut, **ERRORS},
    summary="List index builds",
    url_name="indexes",
)
def indexes(request: HttpRequest):
    return {"indexes": [index_payload(b) for b in index_build_list(team=request.team)[:500]]}


@router.post(
    "/indexes",
    response={202: IndexOut, **ERRORS},
    summary="Build an index (member role)",
    url_name="index_create",
)
def index_create(request: HttpRequest, body: IndexIn):
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    model = EmbeddingModel.objects.filter(team=request.team, pk=body.model).first()
    version = DatasetVersion.objects.filter(
        dataset__team=request.team, pk=body.dataset_version
    ).first()
    if model is None:
        return error("model: no such model in your team", status=404)
    if version is None:
        return error("dataset_version: no such dataset version in your team", status=404)
    sparse = body.params.sparse_model
    if sparse and not EmbeddingModel.objects.filter(team=request.team, pk=sparse).exists():
        # Another team's sparse model reads exactly like a missing one.
        return error("params.sparse_model: no such model in your team", status=404)
    try:
        build = index_build_create(
            team=request.team,
            model=model,
            dataset_version=version,
            index_type=body.type,
            params=body.params.given(),
            split=body.split,
            precision=body.precision,
            created_by=request.api_token.user,
            idempotency_key=idempotency_key(request),
        )
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except IndexBuildError as exc:
        return error(str(exc), 422 if "unknown parameter" in str(exc) else 400)
    response = JsonResponse(index_payload(build), status=202)
    response["Location"] = f"/api/v1/indexes/{build.pk}"
    return response


@router.get(
    "/indexes/{int:pk}",
    response={200: IndexOut, **ERRORS},
    summary="An index build",
    url_name="index_detail",
)
def index_detail(request: HttpRequest, pk: int):
    build = index_build_list(team=request.team).filter(pk=pk).first()
    return index_payload(build) if build else not_found()


@router.get(
    "/deployments",
    response={200: DeploymentListOut, **ERRORS},
    summary="Deployments",
    url_name="deployments",
)
def deployments(request: HttpRequest):
    return {"deployments": [deployment_payload(d) for d in deployment_list(team=request.team)]}


@router.post(
    "/deployments",
    response={200: DeploymentOut, **ERRORS},
    summary="Deploy an index under a name, or swap the name to another index (member role)",
    url_name="deployment_create",
)
def deployment_create(request: HttpRequest, body: DeployIn):
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    build = index_build_list(team=request.team).filter(pk=body.index).first()
    if build is None:
        return error("index: no such index in your team", status=404)
    if body.rerank is not None and body.rerank.model is not None:
        if not EmbeddingModel.objects.filter(team=request.team, pk=body.rerank.model).exists():
            # Another team's reranker reads exactly like a missing one.
            return error("rerank.model: no such model in your team", status=404)
    try:
        deployment = deployment_deploy(
            team=request.team, name=body.name, index=build, user=request.api_token.user,
            fusion=body.fusion.model_dump() if body.fusion is not None else None,
            rerank=body.rerank.model_dump() if body.rerank is not None else None,
        )  # fmt: skip
    except DeploymentConflict as exc:
        return error(str(exc), status=409)
    except IndexBuildError as exc:
        return error(str(exc))
    return deployment_payload(deployment, history=True)


@router.get(
    "/deployments/{name}",
    response={200: DeploymentOut, **ERRORS},
    summary="A deployment",
    url_name="deployment_detail",
)
def deployment_detail(request: HttpRequest, name: str):
    # Another team's name raises Http404 like a missing one; the API answers it as not_found().
    return deployment_payload(deployment_get(team=request.team, name=name), history=True)


@router.delete(
    "/deployments/{name}",
    response={204: None, **ERRORS},
    summary="Undeploy (member role)",
    url_name="deployment_delete",
)
def deployment_delete(request: HttpRequest, name: str):
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    deployment = deployment_get(team=request.team, name=name)
    deployment_undeploy(deployment=deployment, user=request.api_token.user)
    return Status(204, None)


@router.post(
    "/deployments/{name}/search",
    response={200: SearchOut, **ERRORS, 503: ErrorOut},
    summary="Search a deployment",
    url_name="search",
)
def search(request: HttpRequest, name: str, body: SearchIn):
    if (body.query is None) == (body.queries is None):
        return error("give either query (one string) or queries (a list of strings)")
    queries = [body.query] if body.query is not None else body.queries
    try:
        # Filter values go as JSON gave them: the index matches true, 2020 and "2020" itself.
        found = deployment_query(team=request.team, name=name, queries=queries, k=body.k,
                                 filters=body.filters, documents=body.documents,
                                 mode=body.mode, rerank=body.rerank,
                                 min_relevance=body.min_relevance)  # fmt: skip
    except SearchFailed as exc:
        return error(str(exc), status=exc.status)
    for result in found["results"]:
        for hit in result["hits"]:
            doc = hit.pop("document", None)
            if doc is not None:
                hit.update(title=doc.title, text=doc.text)
    return {"deployment": name, "k": body.k, "mode": body.mode, **found}


@router.post(
    "/deployments/{name}/calibrations",
    response={202: CalibrationOut, **ERRORS},
    summary="Fit a relevance calibration on the index the deployment serves (member role)",
    url_name="calibration_create",
)
def calibration_start(request: HttpRequest, name: str, body: CalibrationConfig):
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    deployment = deployment_get(team=request.team, name=name)  # another team's: 404
    try:
        job = calibration_create(
            team=request.team, deployment=deployment, params=body.model_dump(),
            created_by=request.api_token.user, idempotency_key=idempotency_key(request),
        )  # fmt: skip
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except CalibrationError as exc:
        return error(str(exc))
    response = JsonResponse(calibration_payload(job), status=202)
    response["Location"] = f"/api/v1/deployments/{name}/calibrations/{job.pk}"
    return response


@router.get(
    "/deployments/{name}/calibrations",
    response={200: CalibrationListOut, **ERRORS},
    summary="A deployment's relevance calibrations, newest first",
    url_name="calibrations",
)
def calibrations(request: HttpRequest, name: str):
    deployment = deployment_get(team=request.team, name=name)
    rows = calibration_list(deployment=deployment).select_related("deployment")[:100]
    return {"calibrations": [calibration_payload(c) for c in rows]}


@router.get(
    "/deployments/{name}/calibrations/{int:pk}",
    response={200: CalibrationOut, **ERRORS},
    summary="A relevance calibration",
    url_name="calibration_detail",
)
def calibration_detail(request: HttpRequest, name: str, pk: int):
    deployment = deployment_get(team=request.team, name=name)
    return calibration_payload(calibration_get(deployment=deployment, pk=pk))
