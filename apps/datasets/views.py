from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write, team_scoped_get
from apps.core.responses import htmx_fragment, job_cancel_response
from apps.datasets.charts import histogram_chart, score_chart, token_charts, words_chart
from apps.datasets.curation import (
    CurationError,
    curation_accept,
    curation_create,
    curation_discard,
)
from apps.datasets.exports import beir_zip, training_jsonl
from apps.datasets.forms import CURATION_FORMS, UploadForm
from apps.datasets.ingest import IngestError, ingest_confirm, ingest_create, ingest_preview
from apps.datasets.models import CurationJob, DatasetVersion, IngestJob
from apps.datasets.selectors import (
    DATASET_SORTS,
    dataset_get,
    dataset_list,
    dataset_version_get,
    dataset_version_tree,
    dataset_with_kind,
    document_search,
    query_get,
)
from apps.datasets.services import dataset_version_pairs_from_qrels
from apps.registry.models import EmbeddingModel
from apps.runs.forms import EvaluationForm
from apps.runs.selectors import evaluation_list


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def dataset_index(request):
    from apps.core.listing import Filter, list_page

    listing = list_page(
        request=request,
        rows=dataset_list(team=request.team),
        name="dataset",
        search=("name", "description"),
        search_label="Search datasets",
        sorts=DATASET_SORTS,
        filters=[Filter("kind", "kind", DatasetVersion.Kind.choices, apply=dataset_with_kind)],
    )
    context = {"listing": listing, "datasets": listing.page}
    if listing.partial:
        return render(request, "datasets/list.html#listing", context)
    context["ingests"] = IngestJob.objects.filter(team=request.team)[:10]
    from apps.registry.models import HubImport

    context["hub_imports"] = HubImport.objects.filter(team=request.team, kind="dataset")[:5]
    return render(request, "datasets/list.html", context)


@require_http_methods(["GET", "POST"])
@team_required(Role.MEMBER)
def dataset_upload(request):
    # "Upload again" after a failed ingest keeps the dataset's name.
    initial = {"name": request.GET.get("name", "")[:200]} if request.method == "GET" else None
    form = UploadForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = ingest_create(
                team=request.team,
                user=request.user,
                name=form.cleaned_data["name"],
                files=form.cleaned_data["files"],
            )
        except IngestError as exc:
            for problem in exc.problems:
                form.add_error(None, problem)
        else:
            url = reverse("datasets:ingest", args=[job.pk])
            if request.htmx:
                response = HttpResponse(status=204)
                response["HX-Redirect"] = url
                return response
            return redirect(url)
    # A refused upload (the form, or what the pre-check saw) is a 400 like the API's; the
    # page's script swaps it in all the same.
    status = 400 if request.method == "POST" else 200
    return render(request, "datasets/upload.html", {"form": form}, status=status)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def ingest_detail(request, pk: int):
    job = team_scoped_get(queryset=IngestJob.objects.all(), user=request.user, pk=pk)
    template = (
        "datasets/ingest.html#status"
        if htmx_fragment(request, "ingest-status")
        else "datasets/ingest.html"
    )
    context = {"job": job, "can_write": can_write(user=request.user, team=job.team)}
    if job.awaiting_confirmation:
        context["preview"] = ingest_preview(job=job)
    return render(request, template, context)


@require_POST
@team_required()
def ingest_start(request, pk: int):
    job = team_scoped_get(
        queryset=IngestJob.objects.all(), user=request.user, pk=pk, role=Role.MEMBER
    )
    ingest_confirm(job=job)
    return redirect("datasets:ingest", pk=job.pk)


@require_POST
@team_required()
def version_pairs(request, pk: int):
    version = dataset_version_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        result = dataset_version_pairs_from_qrels(
            version=version, split=request.POST.get("split", "")
        )
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("datasets:version", pk=version.pk)
    return redirect("datasets:version", pk=result.version.pk)


@require_GET
@team_required()
def version_export(request, pk: int):
    version = dataset_version_get(user=request.user, pk=pk)
    stem = f"{version.dataset.name}-v{version.number}".replace(" ", "_")
    if version.kind == DatasetVersion.Kind.TRAINING:
        response = StreamingHttpResponse(training_jsonl(version), content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="{stem}.jsonl"'
        return response
    return FileResponse(beir_zip(version), as_attachment=True, filename=f"{stem}.zip")


@require_GET
@team_required()
def dataset_detail(request, pk: int):
    dataset = dataset_get(user=request.user, pk=pk)
    return render(
        request,
        "datasets/detail.html",
        {
            "dataset": dataset,
            "tree": dataset_version_tree(dataset=dataset),
            "can_write": can_write(user=request.user, team=dataset.team),
        },
    )


PAGE_ROWS = 20


def _page(request, rows, param: str):
    """One page of ``rows`` (``?param=N``, 20 a page): the version page lists every document
    and judged query, a page at a time."""
    from django.core.paginator import Paginator

    return Paginator(rows, PAGE_ROWS).get_page(request.GET.get(param))


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def version_detail(request, pk: int):
    version = dataset_version_get(user=request.user, pk=pk)
    if htmx_fragment(request, "search-results"):
        q = request.GET.get("q", "")
        context = {"version": version, "q": q, "found": document_search(version=version, q=q)}
        return render(request, "datasets/version.html#doc-search", context)
    return render(
        request,
        "datasets/version.html",
        {
            "version": version,
            "dataset": version.dataset,
            # "Change settings and run" from an evaluation's page opens the form filled in.
            "form": EvaluationForm(
                team=version.dataset.team,
                version=version,
                initial={
                    k: request.GET[k][:50]
                    for k in ("method", "model", "split", "precision")
                    if k in request.GET
                },
            ),
            "can_write": can_write(user=request.user, team=version.dataset.team),
            "evaluations": evaluation_list(team=version.dataset.team).filter(
                dataset_version=version
            ),
            "sample_documents": _page(request, version.documents.order_by("pk"), "dp"),
            "q": request.GET.get("q", ""),
            "judged_queries": _page(
                request,
                version.queries.filter(qrels__isnull=False).distinct().order_by("pk"),
                "qp",
            ),
            "found": document_search(version=version, q=request.GET.get("q", "")),
            "sample_training": version.training_rows.order_by("row", "pk")[:5],
            "children": version.children.order_by("number"),
            "words_chart": words_chart(version),
            "token_charts": token_charts(version),
            "models": EmbeddingModel.objects.filter(
                team=version.dataset.team, role="embedding"
            ).order_by("name"),
            "curation_forms": {
                kind: form(version=version) for kind, form in CURATION_FORMS.items()
            },
            "curation_jobs": version.curation_jobs.select_related("model", "version")[:20],
        },
    )


@require_POST
@team_required()
def version_curate(request, pk: int, kind: str):
    version = dataset_version_get(user=request.user, pk=pk, role=Role.MEMBER)
    form_class = CURATION_FORMS.get(kind)
    if form_class is None:
        messages.error(request, f"Unknown curation kind {kind!r}.")
        return redirect("datasets:version", pk=version.pk)
    form = form_class(request.POST, version=version)
    if not form.is_valid():
        for problem in form.problems():
            messages.error(request, problem)
        return redirect("datasets:version", pk=version.pk)
    try:
        job = curation_create(
            team=version.dataset.team,
            source=version,
            kind=kind,
            params=form.config,
            model=form.cleaned_data.get("model"),
            created_by=request.user,
        )
    except CurationError as exc:
        messages.error(request, str(exc))
        return redirect("datasets:version", pk=version.pk)
    return redirect("datasets:curation", pk=job.pk)


def _curation_context(request, job: CurationJob) -> dict:
    similarity = job.result.get("similarity") or {}
    return {
        "similarity_chart": histogram_chart(
            edges=similarity.get("edges") or [],
            series=[("removed items", "s1", similarity.get("counts") or [])],
        ),
        "job": job,
        "can_write": can_write(user=request.user, team=job.team),
        "score_chart": score_chart(job.result.get("histograms") or {})
        if job.kind == CurationJob.Kind.MINE
        else None,
        "token_charts": token_charts(job.source) if job.kind == CurationJob.Kind.TOKENS else [],
    }


def _curation_get(request, pk: int, role: str = Role.VIEWER) -> CurationJob:
    return team_scoped_get(
        queryset=CurationJob.objects.select_related(
            "source__dataset", "model", "version", "baseline_version"
        ),
        user=request.user,
        pk=pk,
        role=role,
    )


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def curation_detail(request, pk: int):
    job = _curation_get(request, pk)
    template = (
        "datasets/curation.html#status"
        if htmx_fragment(request, "curation-status")
        else "datasets/curation.html"
    )
    return render(request, template, _curation_context(request, job))


@require_POST
@team_required()
def curation_review(request, pk: int, decision: str):
    job = _curation_get(request, pk, role=Role.MEMBER)
    try:
        if decision == "accept":
            version = curation_accept(job=job)
            rows = version.document_count or version.training_count
            messages.success(request, f"Accepted: {version} keeps {rows:,} rows.")
            return redirect("datasets:version", pk=version.pk)
        curation_discard(job=job)
    except CurationError as exc:
        messages.error(request, str(exc))
    return redirect("datasets:curation", pk=job.pk)


@require_POST
@team_required()
def curation_cancel(request, pk: int):
    return job_cancel_response(
        request,
        job=_curation_get(request, pk, role=Role.MEMBER),
        partial="datasets/curation.html#status",
        context=lambda job: _curation_context(request, job),
        url=reverse("datasets:curation", args=[pk]),
    )


@require_GET
@team_required()
def query_detail(request, pk: int, query_pk: int):
    version = dataset_version_get(user=request.user, pk=pk)
    query = query_get(version=version, pk=query_pk)
    judgements = query.qrels.select_related("document").order_by("split", "-score", "document__pk")
    return render(
        request,
        "datasets/query.html",
        {"version": version, "dataset": version.dataset, "query": query, "judgements": judgements},
    )


@require_POST
@team_required()
def dataset_delete_view(request, pk: int):
    from apps.core.responses import delete_response
    from apps.datasets.services import DatasetInUse, dataset_delete

    dataset = dataset_get(user=request.user, pk=pk, role=Role.MEMBER)
    return delete_response(
        request, delete=lambda: dataset_delete(dataset=dataset), refused=DatasetInUse,
        done=f"{dataset.name} and all its versions are deleted.",
        back=reverse("datasets:detail", args=[pk]), then=reverse("datasets:list"),
    )  # fmt: skip


@require_POST
@team_required()
def version_delete_view(request, pk: int):
    from apps.core.responses import delete_response
    from apps.datasets.services import DatasetInUse, dataset_version_delete

    version = dataset_version_get(user=request.user, pk=pk, role=Role.MEMBER)
    dataset_pk = version.dataset_id
    return delete_response(
        request, delete=lambda: dataset_version_delete(version=version), refused=DatasetInUse,
        done=f"{version} is deleted.", back=reverse("datasets:version", args=[pk]),
        then=reverse("datasets:detail", args=[dataset_pk]),
    )  # fmt: skip
