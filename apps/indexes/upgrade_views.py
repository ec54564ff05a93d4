"""Pages of a model upgrade: start it from a deployment, follow the adapter job and the
re-embedding, read the compatibility report and the paired test's verdict, cut over, roll
back."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.responses import htmx_fragment, job_cancel_response
from apps.indexes.selectors import deployment_get
from apps.indexes.upgrades import (
    UpgradeError,
    model_upgrade_create,
    model_upgrade_cutover,
    model_upgrade_gate,
    model_upgrade_get,
    model_upgrade_reembed,
    model_upgrade_reembed_due,
    model_upgrade_rollback,
    model_upgrade_serve_adapter,
    public_report,
)
from apps.registry.models import EmbeddingModel

PAGE = "indexes/upgrade.html"


def _context(request, upgrade) -> dict:
    evaluations = [e for e in (upgrade.old_evaluation, upgrade.new_evaluation) if e]
    build = upgrade.new_index
    waiting = upgrade.is_active or (build is not None and build.is_active)
    waiting = waiting or any(e.is_active for e in evaluations)
    return {
        "upgrade": upgrade,
        "deployment": upgrade.deployment,
        "report": public_report(upgrade.report),
        "gate": model_upgrade_gate(upgrade=upgrade),
        "reembed_due": model_upgrade_reembed_due(upgrade=upgrade),
        "serving_adapter": (upgrade.deployment.adapter or {}).get("upgrade") == upgrade.pk,
        "waiting": waiting,
        "can_write": can_write(user=request.user, team=upgrade.team),
    }


@require_POST
@team_required(Role.MEMBER)
def upgrade_start(request, name: str):
    deployment = deployment_get(team=request.team, name=name)
    post = request.POST
    try:
        model_id = int(post.get("model") or 0)
    except ValueError:
        model_id = 0
    model = EmbeddingModel.objects.filter(team=request.team, pk=model_id).first()
    if model is None:
        messages.error(request, "model: choose one of your team's embedding models.")
        return redirect("indexes:deployment", name=name)
    try:
        upgrade = model_upgrade_create(
            team=request.team, deployment=deployment, new_model=model,
            adapter_kind=post.get("adapter") or "orthogonal", split=post.get("split") or None,
            created_by=request.user,
        )  # fmt: skip
    except UpgradeError as exc:
        messages.error(request, str(exc))
        return redirect("indexes:deployment", name=name)
    return redirect("indexes:upgrade", pk=upgrade.pk)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def upgrade_detail(request, pk: int):
    upgrade = model_upgrade_get(user=request.user, pk=pk)
    context = _context(request, upgrade)
    if htmx_fragment(request, "upgrade-status"):
        return render(request, f"{PAGE}#status", context)
    return render(request, PAGE, context)


@require_POST
@team_required()
def upgrade_cancel(request, pk: int):
    return job_cancel_response(
        request,
        job=model_upgrade_get(user=request.user, pk=pk, role=Role.MEMBER),
        partial=f"{PAGE}#status",
        context=lambda job: _context(request, model_upgrade_get(user=request.user, pk=job.pk)),
        url=reverse("indexes:upgrade", args=[pk]),
    )


def _step(request, pk: int, step, done: str):
    """Run one upgrade step (a service call); its refusal, which names the field, is the
    page's message."""
    upgrade = model_upgrade_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        step(upgrade)
    except UpgradeError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("indexes:upgrade", pk=pk)


@require_POST
@team_required()
def upgrade_adapter(request, pk: int):
    serve = request.POST.get("serve") == "1"
    return _step(
        request, pk,
        lambda u: model_upgrade_serve_adapter(upgrade=u, serve=serve, user=request.user),
        "The deployment answers new-model queries through the adapter (the search service "
        "reloads it in the background)." if serve else "The adapter is off: the old model "
        "answers again.",
    )  # fmt: skip


@require_POST
@team_required()
def upgrade_reembed(request, pk: int):
    return _step(
        request, pk, lambda u: model_upgrade_reembed(upgrade=u, user=request.user),
        "Re-embedding started: an index build of the new model, and the two evaluations the "
        "cutover's paired test compares (only what failed or was cancelled runs again).",
    )  # fmt: skip


@require_POST
@team_required()
def upgrade_cutover(request, pk: int):
    force = request.POST.get("force") == "1"
    return _step(
        request, pk,
        lambda u: model_upgrade_cutover(upgrade=u, user=request.user, force=force),
        "Cut over: the deployment serves the re-embedded index (rollback stays one click away).",
    )  # fmt: skip


@require_POST
@team_required()
def upgrade_rollback(request, pk: int):
    return _step(
        request, pk, lambda u: model_upgrade_rollback(upgrade=u, user=request.user),
        "Rolled back: the deployment serves its previous index again.",
    )  # fmt: skip
