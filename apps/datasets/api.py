"""JSON API for datasets: upload, ingest status, datasets and their versions.

Plain Django views behind ``token_required`` (``Authorization: Bearer ehk_…``). A token sees
its own team only; another team's object is a 404 like a missing one. The upload goes through
the same services as the page (``apps.datasets.ingest``), so both accept and refuse the same
files. Errors are JSON: ``{"error": "...", "problems": ["FILE:LINE: reason", ...]}``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.api import error, forbidden_below, not_found, token_required
from apps.accounts.models import Role
from apps.datasets.forms import UploadForm
from apps.datasets.ingest import (
    IngestError,
    UploadTooLarge,
    ingest_confirm,
    ingest_create,
    ingest_discard,
    ingest_preview,
)
from apps.datasets.models import Dataset, DatasetVersion, IngestJob
from apps.datasets.selectors import dataset_list

# Room for the multipart framing and the other fields around the files themselves.
MULTIPART_OVERHEAD = 1024 * 1024
TRUE = ("1", "true", "yes", "on")


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
        "url": reverse("api-ingest", args=[job.pk]),
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
        payload["start_url"] = reverse("api-ingest-start", args=[job.pk])
    return payload


def _accepted(request, job: IngestJob, *, preview: dict | None = None) -> JsonResponse:
    response = JsonResponse(ingest_payload(job, preview=preview), status=202)
    response["Location"] = request.build_absolute_uri(reverse("api-ingest", args=[job.pk]))
    return response


def _job_get(request, pk: int) -> IngestJob | None:
    return IngestJob.objects.select_related("version").filter(team=request.team, pk=pk).first()


# --- views ---------------------------------------------------------------------------------


@csrf_exempt  # authenticated by the bearer token only, never by a session cookie
@require_POST
@token_required
def upload(request):
    """``POST /api/v1/datasets/uploads`` (multipart): name, files, optional kind and confirm."""
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
        return _accepted(request, job)
    preview = _preview_payload(job)
    if "problems" in preview:
        # Columns that cannot be read: nothing to confirm, so nothing is kept.
        ingest_discard(job=job)
        return error(IngestError(preview["problems"]).human_message, problems=preview["problems"])
    if confirm:
        return _accepted(request, ingest_confirm(job=job))
    return _accepted(request, job, preview=preview)


@csrf_exempt
@require_POST
@token_required
def ingest_start(request, pk: int):
    """``POST /api/v1/ingests/<id>/start``: confirm a training file's column roles, import."""
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
    return _accepted(request, ingest_confirm(job=job))


@require_GET
@token_required
def ingest_detail(request, pk: int):
    """``GET /api/v1/ingests/<id>``: status, stage, progress, problems, the version made."""
    job = _job_get(request, pk)
    if job is None:
        return not_found()
    return JsonResponse(ingest_payload(job))


@require_GET
@token_required
def datasets(request):
    """``GET /api/v1/datasets``: the team's datasets with their versions."""
    return JsonResponse({"datasets": [dataset_payload(d) for d in dataset_list(team=request.team)]})


@require_GET
@token_required
def dataset_detail(request, pk: int):
    dataset = dataset_list(team=request.team).filter(pk=pk).first()
    if dataset is None:
        return not_found()
    return JsonResponse(dataset_payload(dataset))


@require_GET
@token_required
def version_detail(request, pk: int):
    version = (
        DatasetVersion.objects.select_related("dataset")
        .filter(dataset__team=request.team, pk=pk)
        .first()
    )
    if version is None:
        return not_found()
    return JsonResponse(version_payload(version))
