"""Pages of fine-tuning runs: new (form + estimate preview), list, live run page, cancel, resume,
download of the resulting model."""

from __future__ import annotations

import tempfile
import zipfile

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write, team_scoped_get
from apps.core.responses import delete_response, htmx_fragment, job_cancel_response
from apps.runs.analysis import curve_chart
from apps.runs.forms import TrainingRunForm, training_groups
from apps.runs.models import TrainingRun
from apps.runs.training import (
    TrainingError,
    training_run_create,
    training_run_delete,
    training_run_preview,
    training_run_resume,
)


def _initial(request) -> dict:
    """The form filled in from a link: ``?base_model=`` (a model's "Fine-tune"),
    ``?train_version=`` (a training set's "Fine-tune on this"), or ``?from_run=`` (a run's
    "Run again with changes": its model, data and every setting)."""
    initial: dict = {}
    if source := request.GET.get("from_run", "").strip():
        if source.isdigit():
            run = _run_get(request, int(source))
            initial.update({k: v for k, v in run.config.items() if not isinstance(v, dict)})
            initial.update(base_model=run.base_model_id, train_version=run.train_version_id,
                           eval_version=run.eval_version_id, eval_split=run.eval_split,
                           name=f"{run.name} (again)")  # fmt: skip
            config = run.config
            initial["precision"] = "bf16" if config.get("bf16") else (
                "fp16" if config.get("fp16") else "fp32")  # fmt: skip
    for name in ("base_model", "train_version"):
        if (value := request.GET.get(name, "").strip()).isdigit():
            initial[name] = int(value)
    from workers.common.configs.training import LOSSES

    if (loss := request.GET.get("loss", "")) in LOSSES:
        initial["loss"] = loss  # a reranker's "Fine-tune" starts on a reranker loss
    return initial


def _run_get(request, pk: int, role: str = Role.VIEWER) -> TrainingRun:
    return team_scoped_get(
        queryset=TrainingRun.objects.select_related(
            "base_model", "train_version__dataset", "eval_version__dataset", "result_model",
            "evaluation",
        ),
        user=request.user,
        pk=pk,
        role=role,
    )  # fmt: skip


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def training_index(request):
    from apps.core.listing import Filter, list_page
    from apps.core.models import JobStatus
    from apps.registry.selectors import embedding_model_list
    from apps.runs.selectors import TRAINING_SORTS, training_run_list
    from workers.common.configs.training import LOSSES, METHODS

    bases = embedding_model_list(team=request.team).filter(training_runs__isnull=False)
    listing = list_page(
        request=request,
        rows=training_run_list(team=request.team),
        name="run",
        search=("name",),
        search_label="Search runs",
        sorts=TRAINING_SORTS,
        filters=[
            Filter("status", "status", JobStatus.choices),
            Filter("method", "method", [(m, m) for m in METHODS], field="config__method"),
            Filter("loss", "loss", [(n, n) for n in LOSSES], field="config__loss"),
            Filter("base", "base model", bases.values_list("pk", "name").distinct(),
                   field="base_model_id"),
        ],
    )  # fmt: skip
    context = {"listing": listing, "runs": listing.page}
    if listing.partial:
        return render(request, "runs/training_list.html#listing", context)
    return render(request, "runs/training_list.html", context)


@require_http_methods(["GET", "POST"])
@team_required(Role.MEMBER)
def training_new(request):
    initial = _initial(request) if request.method == "GET" else None
    form = TrainingRunForm(request.POST or None, team=request.team, initial=initial)
    preview = error = None
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            if request.POST.get("action") == "preview":
                preview = _preview(request, form)
            else:
                run = training_run_create(
                    team=request.team,
                    base_model=d["base_model"],
                    train_version=d["train_version"],
                    eval_version=d.get("eval_version"),
                    eval_split=d.get("eval_split") or "",
                    options=form.config,
                    guide_model=d.get("guide_model"),
                    name=d.get("name") or "",
                    created_by=request.user,
                )
                return redirect("runs:training", pk=run.pk)
        except TrainingError as exc:
            error = str(exc)
    if request.htmx and request.POST.get("action") == "preview":
        return render(
            request,
            "runs/training_new.html#preview",
            {"preview": preview, "error": error, "form": form},
        )
    return render(
        request,
        "runs/training_new.html",
        {"form": form, "groups": training_groups(form), "preview": preview, "error": error},
    )


def _preview(request, form: TrainingRunForm) -> dict:
    """What would run: the resolved config and the estimate, against the worker's GPU."""
    from django.conf import settings

    d = form.cleaned_data
    preview = training_run_preview(
        team=request.team,
        base_model=d["base_model"],
        train_version=d["train_version"],
        options=form.config,
        guide_model=d.get("guide_model"),
    )
    gpu = settings.TRAINING_GPU_MEMORY_GIB
    return {
        **preview,
        "gpu_gib": gpu,
        "fits": gpu <= 0 or preview["estimate"]["total_gib"] <= gpu,
    }


def _context(request, run: TrainingRun) -> dict:
    evals = sorted({k for p in run.log for k in (p.get("eval") or {})})
    headline = next((k for k in evals if "ndcg@10" in k), evals[0] if evals else None)
    return {
        "run": run,
        "can_write": can_write(user=request.user, team=run.team),
        "loss_chart": curve_chart(run.log, key="loss", label="training loss", smooth=0.8),
        "eval_chart": curve_chart(run.log, key=headline, label=headline) if headline else None,
        "last": run.log[-1] if run.log else {},
        "checkpoint": _checkpoint_step(run),
    }


def _checkpoint_step(run: TrainingRun) -> int | None:
    """The step of the checkpoint a resume would start from; None when there is none."""
    from workers.common.checkpoints import last_checkpoint

    if run.is_active or not run.output_dir:
        return None
    found = last_checkpoint(run.output_dir)
    return int(found.rsplit("-", 1)[1]) if found else None


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def training_detail(request, pk: int):
    run = _run_get(request, pk)
    template = (
        "runs/training.html#live" if htmx_fragment(request, "run-live") else "runs/training.html"
    )
    return render(request, template, _context(request, run))


@require_POST
@team_required()
def training_cancel(request, pk: int):
    return job_cancel_response(
        request,
        job=_run_get(request, pk, role=Role.MEMBER),
        partial="runs/training.html#live",
        context=lambda run: _context(request, run),
        url=reverse("runs:training", args=[pk]),
    )


@require_POST
@team_required()
def training_resume(request, pk: int):
    run = _run_get(request, pk, role=Role.MEMBER)
    try:
        training_run_resume(run=run)
    except TrainingError as exc:
        messages.error(request, str(exc))
    return redirect("runs:training", pk=run.pk)


@require_GET
@team_required()
def training_model_zip(request, pk: int):
    """The resulting model folder (and the LoRA adapter when there is one) as a zip."""
    run = _run_get(request, pk)
    from workers.common.store import artifact_inside

    # Only folders inside the artifacts folder (fetched from the bucket when there is one).
    model_dir = artifact_inside(run.result.get("model_dir"), settings.ARTIFACTS_ROOT)
    if not run.result_model_id or model_dir is None or not model_dir.is_dir():
        raise Http404
    buffer = tempfile.TemporaryFile()  # on disk: a model is tens to hundreds of MB
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, prefix in (
            (model_dir, "model"),
            (artifact_inside(run.result.get("adapter_dir"), settings.ARTIFACTS_ROOT), "adapter"),
        ):
            if folder is not None and folder.is_dir():
                for f in sorted(folder.rglob("*")):
                    if f.is_file():
                        zf.write(f, f"{prefix}/{f.relative_to(folder)}")
    buffer.seek(0)
    return FileResponse(buffer, as_attachment=True, filename=f"{run.result_model.name}.zip")


@require_POST
@team_required()
def training_delete(request, pk: int):
    run = _run_get(request, pk, role=Role.MEMBER)
    return delete_response(
        request, delete=lambda: training_run_delete(run=run), refused=TrainingError,
        done=f"Run #{pk}, its checkpoints and its log are deleted.",
        back=reverse("runs:training", args=[pk]), then=reverse("runs:training_runs"),
    )  # fmt: skip


@require_POST
@team_required(Role.MEMBER)
def training_delete_selected(request):
    from apps.core.responses import delete_selected_response
    from apps.core.services import objects_delete_many

    pks = [int(v) for v in request.POST.getlist("r") if v.isdigit()]
    deleted, refused = objects_delete_many(
        rows=TrainingRun.objects.filter(team=request.team), pks=pks, noun="run ",
        delete=lambda r: training_run_delete(run=r), refused=TrainingError,
    )  # fmt: skip
    return delete_selected_response(request, deleted=deleted, refused=refused, noun="run",
                                    then=reverse("runs:training_runs"))  # fmt: skip
