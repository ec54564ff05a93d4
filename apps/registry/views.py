from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.responses import delete_response, job_cancel_page, job_page
from apps.datasets.models import DatasetVersion
from apps.registry.cards import model_card_text
from apps.registry.forms import DistillForm, HubImportForm, OptimizeForm, RegisterModelForm
from apps.registry.models import DistillJob, EmbeddingModel, HubImport, HubPublish, OptimizeJob
from apps.registry.selectors import (
    MODEL_SORTS,
    distill_job_get,
    embedding_model_get,
    embedding_model_list,
    hub_import_get,
    hub_publish_get,
    optimize_job_get,
    variant_summary,
)
from apps.registry.services import (
    PUBLISHABLE,
    DistillError,
    HubImportError,
    ModelInUse,
    ModelRegistrationError,
    OptimizeError,
    distill_job_create,
    embedding_model_delete,
    embedding_model_register,
    embedding_model_rename,
    hub_import_create,
    hub_publish_create,
    optimize_job_create,
)
from apps.runs.models import TrainingRun
from apps.runs.selectors import evaluation_list, precision_check


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def model_list(request):
    from apps.core.listing import Filter, list_page

    listing = list_page(
        request=request,
        rows=embedding_model_list(team=request.team),
        name="model",
        search=("name",),  # not source_ref: a folder's path stays off the pages
        search_label="Search models",
        sorts=MODEL_SORTS,
        filters=[
            Filter("kind", "kind", EmbeddingModel.Kind.choices),
            Filter("role", "role", EmbeddingModel.Role.choices),
        ],
    )
    context = {"listing": listing, "models": listing.page}
    if listing.partial:
        return render(request, "registry/list.html#listing", context)
    context["hub_imports"] = HubImport.objects.filter(team=request.team, kind="model")[:5]
    return render(request, "registry/list.html", context)


@require_GET
@team_required()
def model_detail(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk)
    return render(request, "registry/detail.html", _detail_context(request, model))


def _detail_context(
    request, model, *, distill_form=None, distill_error=None, optimize_form=None,
    optimize_error=None,
) -> dict:  # fmt: skip
    return {
        "model": model,
        "evaluations": evaluation_list(team=model.team).filter(model=model),
        # Lineage: the run that made this model (fine-tunes) and runs that started from it.
        "made_by": TrainingRun.objects.filter(result_model=model)
        .select_related("train_version__dataset")
        .first(),
        "distilled_by": DistillJob.objects.filter(result_model=model).first(),
        "distillations": DistillJob.objects.filter(source=model)[:10],
        "children": model.children.order_by("name"),
        # Next actions: evaluate on a collection of the team's (the newest few).
        "evaluate_versions": DatasetVersion.objects.filter(
            dataset__team=model.team, kind="retrieval"
        )
        .select_related("dataset")
        .order_by("-created_at")[:3],
        "precision_check": precision_check(model=model),
        "can_write": can_write(user=request.user, team=model.team),
        "distill_form": distill_form or DistillForm(team=model.team, source=model),
        "distill_error": distill_error,
        "optimized_by": OptimizeJob.objects.filter(result_model=model).first(),
        "optimizations": OptimizeJob.objects.filter(source=model).select_related("result_model")[
            :10
        ],
        "optimize_form": optimize_form or OptimizeForm(team=model.team),
        "optimize_error": optimize_error,
        "publishable": model.kind in PUBLISHABLE,
        "card": model_card_text(model=model) if model.kind in PUBLISHABLE else "",
        "publishes": HubPublish.objects.filter(model=model)[:5],
    }


@require_POST
@team_required()
def model_distill(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk, role=Role.MEMBER)
    form = DistillForm(request.POST, team=model.team, source=model)
    error = None
    if form.is_valid():
        try:
            job = distill_job_create(team=model.team, source=model, config=form.config,
                                     created_by=request.user)  # fmt: skip
        except DistillError as exc:
            error = str(exc)
        else:
            return redirect("registry:distillation", pk=job.pk)
    context = _detail_context(request, model, distill_form=form, distill_error=error)
    return render(request, "registry/detail.html", context)


@require_POST
@team_required()
def model_optimize(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk, role=Role.MEMBER)
    form = OptimizeForm(request.POST, team=model.team)
    error = None
    if form.is_valid():
        try:
            job = optimize_job_create(team=model.team, source=model, config=form.config,
                                      created_by=request.user)  # fmt: skip
        except OptimizeError as exc:
            error = str(exc)
        else:
            return redirect("registry:optimization", pk=job.pk)
    context = _detail_context(request, model, optimize_form=form, optimize_error=error)
    return render(request, "registry/detail.html", context)


def _variant_context(request, job) -> dict:
    return {"job": job, "summary": variant_summary(job=job),
            "can_write": can_write(user=request.user, team=job.team)}  # fmt: skip


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def distillation_detail(request, pk: int):
    job = distill_job_get(user=request.user, pk=pk)
    return job_page(request, template="registry/distillation.html", target="distill-status",
                    context=_variant_context(request, job))  # fmt: skip


@require_POST
@team_required()
def distillation_cancel(request, pk: int):
    job = distill_job_get(user=request.user, pk=pk, role=Role.MEMBER)
    return job_cancel_page(request, job=job, template="registry/distillation.html",
                           url=reverse("registry:distillation", args=[pk]),
                           context=lambda j: _variant_context(request, j))  # fmt: skip


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def optimization_detail(request, pk: int):
    job = optimize_job_get(user=request.user, pk=pk)
    return job_page(request, template="registry/optimization.html", target="optimize-status",
                    context=_variant_context(request, job))  # fmt: skip


@require_POST
@team_required()
def optimization_cancel(request, pk: int):
    job = optimize_job_get(user=request.user, pk=pk, role=Role.MEMBER)
    return job_cancel_page(request, job=job, template="registry/optimization.html",
                           url=reverse("registry:optimization", args=[pk]),
                           context=lambda j: _variant_context(request, j))  # fmt: skip


@require_http_methods(["GET", "POST"])
@team_required(Role.ADMIN)
def model_register(request):
    # It reads folders of the server, so it is for the site's operators (staff), who also run
    # manage.py register_model; a team admin alone must not probe the server's disk.
    if not request.user.is_staff:
        raise PermissionDenied("Registering a model from the server needs a staff account.")
    form = RegisterModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = embedding_model_register(
                team=request.team,
                name=form.cleaned_data["name"],
                path=form.cleaned_data["path"],
                package=form.cleaned_data["package"],
            )
        except ModelRegistrationError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("registry:detail", pk=model.pk)
    return render(request, "registry/register.html", {"form": form})


@require_POST
@team_required()
def model_delete(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk, role=Role.MEMBER)
    return delete_response(
        request, delete=lambda: embedding_model_delete(model=model), refused=ModelInUse,
        done=f"{model.name} is deleted.", back=reverse("registry:detail", args=[pk]),
        then=reverse("registry:list"),
    )  # fmt: skip


@require_POST
@team_required()
def model_rename(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        embedding_model_rename(model=model, name=request.POST.get("name", ""))
    except ModelRegistrationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Renamed to {model.name}.")
    return redirect("registry:detail", pk=pk)


@require_POST
@team_required(Role.MEMBER)
def hub_import_start(request):
    """The models list's and the datasets list's "From the Hub" forms."""
    form = HubImportForm(request.POST)
    back = "datasets:list" if request.POST.get("kind") == "dataset" else "registry:list"
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return redirect(back)
    d = form.cleaned_data
    try:
        job = hub_import_create(team=request.team, kind=d["kind"], repo_id=d["repo_id"],
                                revision=d["revision"], name=d["name"],
                                created_by=request.user)  # fmt: skip
    except HubImportError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    return redirect("registry:hub_import", pk=job.pk)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def hub_import_detail(request, pk: int):
    job = hub_import_get(user=request.user, pk=pk)
    context = {"job": job, "can_write": can_write(user=request.user, team=job.team)}
    return job_page(request, template="registry/hub_import.html", target="hub-status",
                    context=context)  # fmt: skip


@require_POST
@team_required()
def hub_import_cancel(request, pk: int):
    job = hub_import_get(user=request.user, pk=pk, role=Role.MEMBER)
    return job_cancel_page(request, job=job, template="registry/hub_import.html",
                           url=reverse("registry:hub_import", args=[pk]),
                           context=lambda j: {"job": j, "can_write": True})  # fmt: skip


@require_POST
@team_required(Role.MEMBER)
def hub_publish_start(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        job = hub_publish_create(team=model.team, model=model,
                                 repo_id=request.POST.get("repo_id", "")[:200],
                                 private=request.POST.get("private") == "on",
                                 created_by=request.user)  # fmt: skip
    except HubImportError as exc:
        messages.error(request, str(exc))
        return redirect("registry:detail", pk=pk)
    return redirect("registry:hub_publish", pk=job.pk)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def hub_publish_detail(request, pk: int):
    return job_page(
        request,
        template="registry/hub_publish.html",
        target="publish-status",
        context=_publish_context(request, hub_publish_get(user=request.user, pk=pk)),
    )


def _publish_context(request, job) -> dict:
    import os

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return {"job": job, "can_write": can_write(user=request.user, team=job.team),
            "repo_url": f"{endpoint}/{job.repo_id}"}  # fmt: skip


@require_POST
@team_required()
def hub_publish_cancel(request, pk: int):
    job = hub_publish_get(user=request.user, pk=pk, role=Role.MEMBER)
    return job_cancel_page(request, job=job, template="registry/hub_publish.html",
                           url=reverse("registry:hub_publish", args=[pk]),
                           context=lambda j: _publish_context(request, j))  # fmt: skip
