"""REST API for datasets: upload, ingest status, datasets and their versions, curation jobs.

A token sees its own team only; another team's object is a 404 like a missing one. The upload
goes through the same services as the page (``apps.datasets.ingest``), so both accept and
refuse the same files. Errors are ``{"error": "...", "problems": ["FILE:LINE: reason", ...]}``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from ninja import Router, Schema, Status
from pydantic import Field

from apps.accounts.api import ERRORS, ErrorOut, error, forbidden_below, not_found
from apps.accounts.models import Role
from apps.core.api_schemas import InputSchema, idempotency_key
from apps.core.services import IdempotencyConflict
from apps.datasets.curation import (
    CurationError,
    curation_accept,
    curation_create,
    curation_discard,
)
from apps.datasets.forms import UploadForm
from apps.datasets.ingest import (
    IngestError,
    UploadTooLarge,
    ingest_confirm,
    ingest_create,
    ingest_discard,
    ingest_preview,
)
from apps.datasets.models import CurationJob, Dataset, DatasetVersion, IngestJob
from apps.datasets.selectors import dataset_list
from apps.registry.models import EmbeddingModel
from workers.common.configs.curation import CurationConfig

router = Router(tags=["datasets"])

# Room for the multipart framing and the other fields around the files themselves.
MULTIPART_OVERHEAD = 1024 * 1024
TRUE = ("1", "true", "yes", "on")


# --- schemas (what the payloads below return) ----------------------------------------------


class VersionSummaryOut(Schema):
    id: int
    dataset: int
    number: int
    kind: str
    document_count: int
    query_count: int
    qrels_counts: dict[str, int]
    training_count: int
    parent: int | None
    params: dict[str, Any]
    content_hash: str
    created_at: str


class DatasetRef(Schema):
    id: int
    name: str


class VersionOut(VersionSummaryOut):
    dataset: DatasetRef  # type: ignore[assignment]  # the detail names the dataset
    source: str
    splits: list[str]
    training_roles: dict[str, Any]
    warnings: list[Any]
    health: dict[str, Any]
    children: list[int]


class DatasetOut(Schema):
    id: int
    name: str
    description: str
    created_at: str
    versions: list[VersionSummaryOut]


class DatasetListOut(Schema):
    datasets: list[DatasetOut]


class IngestProgress(Schema):
    done: int
    total: int


class PreviewRow(Schema):
    line: int
    anchor: str
    positive: str
    negatives: list[str]
    score: float | None


class IngestPreviewOut(Schema):
    roles: dict[str, Any] | None = None
    rows: list[PreviewRow] | None = None
    problems: list[str] | None = None


class IngestOut(Schema):
    id: int
    url: str
    dataset_name: str
    kind: str
    files: list[str]
    total_bytes: int
    status: str
    stage: str
    progress: IngestProgress
    awaiting_confirmation: bool
    problems: list[str]
    error: str | None
    version: VersionSummaryOut | None
    reused: bool
    created_at: str
    finished_at: str | None
    # Only while the job waits for POST …/start to confirm a training file's column roles.
    preview: IngestPreviewOut | None = None
    start_url: str | None = None


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "files"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "maxLength": 200,
                            "description": "A new dataset, or an existing one to add a version to.",
                        },
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "A BEIR folder as one .zip / .tar.gz, or its files "
                            "(corpus.jsonl, queries.jsonl, one <split>.tsv per split); or one "
                            "training file of pairs/triplets (JSONL or CSV).",
                        },
                        "kind": {
                            "type": "string",
                            "enum": list(DatasetVersion.Kind.values),
                            "description": "Detected from the files when left out.",
                        },
                        "confirm": {
                            "type": "boolean",
                            "description": "Import a training file at once instead of waiting "
                            "for POST /api/v1/ingests/{id}/start.",
                        },
                    },
                }
            }
        },
    }
}


# --- payloads ------------------------------------------------------------------------------


def version_summary(version: DatasetVersion) -> dict:
    return {
        "id": version.pk,
        "dataset": version.dataset_id,
        "number": version.number,
        "kind": version.kind,
        "document_count": version.document_count,
        "query_count": version.query_count,
        "qrels_counts": version.qrels_counts,
        "training_count": version.training_count,
        "parent": version.parent_id,
        "params": version.params,
        "content_hash": version.content_hash,
        "created_at": version.created_at.isoformat(),
    }


def version_payload(version: DatasetVersion) -> dict:
    return {
        **version_summary(version),
        "dataset": {"id": version.dataset_id, "name": version.dataset.name},
        "source": version.source,
        "splits": version.splits,
        "training_roles": version.training_roles,
        "warnings": version.warnings,
        "health": version.health,
        "children": list(version.children.order_by("number").values_list("pk", flat=True)),
    }


def dataset_payload(dataset: Dataset) -> dict:
    # ``dataset_list`` prefetches the versions; sort in Python to keep the prefetch.
    versions = sorted(dataset.versions.all(), key=lambda v: v.number, reverse=True)
    return {
        "id": dataset.pk,
        "name": dataset.name,
        "description": dataset.description,
        "created_at": dataset.created_at.isoformat(),
        "versions": [version_summary(v) for v in versions],
    }


def _preview_payload(job: IngestJob) -> dict:
    preview = ingest_preview(job=job)
    if "problems" in preview:
        return {"problems": preview["problems"]}
    return {
        "roles": preview["roles"],
        "rows": [
            {"line": line, "anchor": a, "positive": p, "negatives": n, "score": s}
            for line, a, p, n, s in preview["rows"]
        ],
    }


def ingest_payload(job: IngestJob, *, preview: dict | None = None) -> dict:
    version = job.version
    payload = {
        "id": job.pk,
        "url": reverse("api:ingest", args=[job.pk]),
        "dataset_name": job.dataset_name,
        "kind": job.kind,
        "files": job.file_names,
        "total_bytes": job.total_bytes,
        "status": job.status,
        "stage": job.stage,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "awaiting_confirmation": job.awaiting_confirmation,
        "problems": job.problems,
        "error": job.human_error or None,
        "version": version_summary(version) if version else None,
        "reused": job.reused,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if job.awaiting_confirmation:
        # The column roles the import would use; POST …/start confirms them.
        payload["preview"] = preview if preview is not None else _preview_payload(job)
        payload["start_url"] = reverse("api:ingest-start", args=[job.pk])
    return payload


def _accepted(
    request: HttpRequest, response: HttpResponse, job: IngestJob, *, preview: dict | None = None
) -> Status:
    response["Location"] = request.build_absolute_uri(reverse("api:ingest", args=[job.pk]))
    return Status(202, ingest_payload(job, preview=preview))


def _job_get(request: HttpRequest, pk: int) -> IngestJob | None:
    return IngestJob.objects.select_related("version").filter(team=request.team, pk=pk).first()


# --- operations ----------------------------------------------------------------------------
# ``exclude_unset``: ``preview`` and ``start_url`` appear only while a job awaits confirmation.


@router.post(
    "/datasets/uploads",
    url_name="dataset-upload",
    response={202: IngestOut, 413: ErrorOut, **ERRORS},
    exclude_unset=True,
    openapi_extra=UPLOAD_BODY,
)
def upload(request: HttpRequest, response: HttpResponse) -> Status | JsonResponse:
    """Upload a dataset (multipart: ``name``, ``files``, optional ``kind`` and ``confirm``).

    202 with the ingest job; its ``Location`` is polled for status. A training file waits for
    ``POST /api/v1/ingests/{id}/start`` (or ``confirm=true``) after showing its column roles.
    400 at once, nothing stored, for what shows without reading the whole upload (an archive
    that does not open, a member outside it, a missing or second corpus, missing queries, a
    file that is no dataset, a first line that cannot be read); the job checks the rest.
    """
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    limit = settings.DATASET_UPLOAD_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + MULTIPART_OVERHEAD:
        # Refused before the body is read: no gigabytes spooled to disk only to be dropped.
        message = f"upload of {length:,} bytes is over the limit of {limit:,}"
        return error(message, status=413, problems=[message])
    if not request.content_type.startswith("multipart/form-data"):
        return error("send multipart/form-data with the fields name and files")
    try:
        form = UploadForm(request.POST, request.FILES)
        valid = form.is_valid()
    except RequestDataTooBig as exc:
        return error(str(exc), status=413, problems=[str(exc)])
    except (MultiPartParserError, SuspiciousOperation) as exc:
        return error(f"unreadable upload: {exc}", problems=[str(exc)])
    if not valid:
        problems = [f"{field}: {msg}" for field, msgs in form.errors.items() for msg in msgs]
        return error("invalid upload", problems=problems)
    kind = request.POST.get("kind", "").strip() or None
    confirm = request.POST.get("confirm", "").strip().lower() in TRUE
    try:
        job = ingest_create(
            team=request.team,
            user=request.api_token.user,
            name=form.cleaned_data["name"],
            files=form.cleaned_data["files"],
            kind=kind,
        )
    except UploadTooLarge as exc:
        return error(exc.human_message, status=413, problems=exc.problems)
    except IngestError as exc:
        return error(exc.human_message, problems=exc.problems)
    if not job.awaiting_confirmation:
        return _accepted(request, response, job)
    preview = _preview_payload(job)
    if "problems" in preview:
        # Columns that cannot be read: nothing to confirm, so nothing is kept.
        ingest_discard(job=job)
        return error(IngestError(preview["problems"]).human_message, problems=preview["problems"])
    if confirm:
        return _accepted(request, response, ingest_confirm(job=job))
    return _accepted(request, response, job, preview=preview)


@router.post(
    "/ingests/{int:pk}/start",
    url_name="ingest-start",
    response={202: IngestOut, **ERRORS},
    exclude_unset=True,
)
def ingest_start(request: HttpRequest, response: HttpResponse, pk: int) -> Status | JsonResponse:
    """Confirm a training file's column roles and import it."""
    job = _job_get(request, pk)
    if job is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    if not job.awaiting_confirmation:
        return error(f"ingest {job.pk} is not waiting for confirmation", status=409)
    preview = _preview_payload(job)
    if "problems" in preview:
        return error(IngestError(preview["problems"]).human_message, problems=preview["problems"])
    return _accepted(request, response, ingest_confirm(job=job))


@router.get(
    "/ingests/{int:pk}",
    url_name="ingest",
    response={200: IngestOut, **ERRORS},
    exclude_unset=True,
)
def ingest_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """An ingest job: status, stage, progress, problems, the version it made."""
    job = _job_get(request, pk)
    if job is None:
        return not_found()
    return ingest_payload(job)


@router.get("/datasets", url_name="datasets", response={200: DatasetListOut, **ERRORS})
def datasets(request: HttpRequest) -> dict:
    """The team's datasets with their versions, newest version first."""
    return {"datasets": [dataset_payload(d) for d in dataset_list(team=request.team)]}


@router.get("/datasets/{int:pk}", url_name="dataset", response={200: DatasetOut, **ERRORS})
def dataset_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One dataset with its versions."""
    dataset = dataset_list(team=request.team).filter(pk=pk).first()
    if dataset is None:
        return not_found()
    return dataset_payload(dataset)


@router.get(
    "/dataset-versions/{int:pk}", url_name="dataset-version", response={200: VersionOut, **ERRORS}
)
def version_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One dataset version: counts, splits, lineage (parent, children, params), health."""
    version = (
        DatasetVersion.objects.select_related("dataset")
        .filter(dataset__team=request.team, pk=pk)
        .first()
    )
    if version is None:
        return not_found()
    return version_payload(version)


# --- curation jobs ----------------------------------------------------------------------------


class CurationIn(InputSchema):
    dataset_version: int = Field(description="The version to curate (of your team).")
    model: int | None = Field(
        default=None,
        description="The embedding model (of your team) that encodes or tokenizes: needed by "
        "semdedup, tokens, and mine unless its candidates are bm25; dsir uses none.",
    )
    config: CurationConfig = Field(
        description="The kind (semdedup, mine, dsir or tokens) and its parameters; a parameter "
        "left out takes its default."
    )


class CurationOut(Schema):
    id: int
    url: str
    kind: str
    status: str
    stage: str
    progress: float
    dataset_version: int
    model: int | None
    params: dict[str, Any]
    review: str
    result: dict[str, Any]
    version: int | None
    baseline_version: int | None
    error: str
    created_at: str
    finished_at: str | None


class CurationListOut(Schema):
    curation_jobs: list[CurationOut]


def curation_payload(job: CurationJob) -> dict:
    return {
        "id": job.pk,
        "url": reverse("api:curation-job", args=[job.pk]),
        "kind": job.kind,
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "dataset_version": job.source_id,
        "model": job.model_id,
        "params": job.params,
        "review": job.review,
        "result": job.result,
        "version": job.version_id,
        "baseline_version": job.baseline_version_id,
        "error": job.human_error,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _curation_jobs(request: HttpRequest):
    return CurationJob.objects.filter(team=request.team)


@router.get("/curation-jobs", url_name="curation-jobs", response={200: CurationListOut, **ERRORS})
def curation_jobs(request: HttpRequest, dataset_version: int | None = None) -> dict:
    """The team's curation jobs, newest first (optionally of one source version)."""
    jobs = _curation_jobs(request)
    if dataset_version is not None:
        jobs = jobs.filter(source_id=dataset_version)
    return {"curation_jobs": [curation_payload(j) for j in jobs[:500]]}


@router.post("/curation-jobs", response={202: CurationOut, **ERRORS})
def curation_job_start(
    request: HttpRequest, response: HttpResponse, payload: CurationIn
) -> Status | JsonResponse:
    """Start a curation job on a dataset version (member role): semantic dedup, hard-negative
    mining, DSIR selection or token lengths. A result that is data becomes a new version with
    the source as parent; a dedup first waits for ``POST …/accept`` or ``…/discard``."""
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    version = (
        DatasetVersion.objects.filter(dataset__team=request.team, pk=payload.dataset_version)
        .select_related("dataset")
        .first()
    )
    if version is None:
        return error("dataset_version: no such dataset version in your team", status=404)
    model = None
    if payload.model is not None:
        model = EmbeddingModel.objects.filter(team=request.team, pk=payload.model).first()
        if model is None:
            return error("model: no such model in your team", status=404)
    try:
        job = curation_create(
            team=request.team,
            source=version,
            kind=payload.config.kind,
            params=payload.config,
            model=model,
            created_by=request.api_token.user,
            idempotency_key=idempotency_key(request),
        )
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except CurationError as exc:
        return error(str(exc))
    response["Location"] = reverse("api:curation-job", args=[job.pk])
    return Status(202, curation_payload(job))


@router.get(
    "/curation-jobs/{int:pk}", url_name="curation-job", response={200: CurationOut, **ERRORS}
)
def curation_job_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One curation job: status, progress, parameters, result, the version(s) it made."""
    job = _curation_jobs(request).filter(pk=pk).first()
    return curation_payload(job) if job else not_found()


@router.post(
    "/curation-jobs/{int:pk}/accept",
    url_name="curation-job-accept",
    response={200: CurationOut, **ERRORS},
)
def curation_job_accept(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """Accept a semantic dedup waiting for review (member role): its version is written."""
    job = _curation_jobs(request).select_related("source__dataset", "model").filter(pk=pk).first()
    if job is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        curation_accept(job=job)
    except CurationError as exc:
        return error(str(exc), status=409)
    return curation_payload(job)


@router.post(
    "/curation-jobs/{int:pk}/discard",
    url_name="curation-job-discard",
    response={200: CurationOut, **ERRORS},
)
def curation_job_discard(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """Discard a semantic dedup waiting for review (member role): nothing is written."""
    job = _curation_jobs(request).filter(pk=pk).first()
    if job is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        curation_discard(job=job)
    except CurationError as exc:
        return error(str(exc), status=409)
    return curation_payload(job)


@router.delete(
    "/datasets/{int:pk}",
    url_name="dataset_delete",
    response={204: None, **ERRORS},
    summary="Delete a dataset and all its versions, when nothing uses them (member role)",
)
def dataset_remove(request: HttpRequest, pk: int):
    from apps.datasets.services import DatasetInUse, dataset_delete

    dataset = dataset_list(team=request.team).filter(pk=pk).first()
    if dataset is None:
        return not_found()
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    try:
        dataset_delete(dataset=dataset)
    except DatasetInUse as exc:
        return error(str(exc), 409)
    return Status(204, None)
