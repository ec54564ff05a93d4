"""REST API of model upgrades: move a deployment's name to a new model without downtime.

``POST /api/v1/deployments/{name}/upgrades`` starts one (the adapter fit and the compatibility
report, a job); then ``/upgrades/{id}/adapter`` serves the new model's queries on the old index
through the adapter, ``/reembed`` builds the new model's index on the same data, ``/cutover``
swaps the name to it when the paired test allows (``force`` overrides a significantly worse
verdict), ``/rollback`` restores the previous index within the window. Another team's
deployment, model or upgrade is a 404 like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from django.http import HttpRequest, JsonResponse
from ninja import Router, Schema
from pydantic import Field

from apps.accounts.api import ERRORS, error, forbidden_below, not_found
from apps.accounts.models import Role
from apps.core.api_schemas import InputSchema, idempotency_key
from apps.core.models import JobStatus
from apps.core.services import IdempotencyConflict
from apps.indexes.models import ModelUpgrade
from apps.indexes.selectors import deployment_list
from apps.indexes.upgrades import (
    CutoverRefused,
    UpgradeError,
    model_upgrade_create,
    model_upgrade_cutover,
    model_upgrade_gate,
    model_upgrade_list,
    model_upgrade_reembed,
    model_upgrade_reembed_due,
    model_upgrade_rollback,
    model_upgrade_serve_adapter,
    public_report,
)
from apps.registry.models import EmbeddingModel
from workers.common.configs.encoding import Precision, precision_field

router = Router(tags=["upgrades"])


class UpgradeIn(InputSchema):
    model: int = Field(description="the new model: an embedding model of your team")
    adapter: Literal["orthogonal", "linear"] = Field(
        default="orthogonal",
        description="the query adapter: orthogonal (Procrustes; both models of one dimension) "
        "or linear (least squares)",
    )
    split: str | None = Field(
        default=None,
        description="the judged split of the report and of the cutover's paired test "
        "(default: the index's split)",
    )
    precision: Precision = precision_field()


class AdapterIn(InputSchema):
    serve: bool = Field(
        description="true: answer the deployment's queries with the new model through the "
        "adapter, on the old index; false: stop"
    )


class CutoverIn(InputSchema):
    force: bool = Field(
        default=False,
        description="cut over even when the paired test finds the new model significantly worse",
    )


class GateOut(Schema):
    metric: str
    old: float = Field(description="the old model's mean on the split")
    new: float = Field(description="the new model's mean on the split")
    delta: float
    ci_low: float
    ci_high: float
    p_value: float = Field(description="paired randomization test")
    significant: bool
    worse: bool = Field(description="significantly worse: an unforced cutover is refused")
    verdict: str
    queries: int


class UpgradeOut(Schema):
    id: int
    deployment: str
    status: str
    stage: str
    progress: float
    old_index: int
    old_model: int
    new_model: int
    adapter: str = Field(description="orthogonal or linear")
    split: str
    precision: str
    precision_used: str | None
    report: dict[str, Any] = Field(
        description="the compatibility report: recall@10 of each model's queries on the "
        "other's corpus vectors (and through the adapter) against each model's own exact "
        "search, nDCG@10 of each on the split, the adapter's fit and its microseconds per query"
    )
    serving_adapter: bool = Field(description="the deployment answers through this adapter now")
    new_index: int | None = Field(description="the re-embedding: the new model's index build")
    new_index_status: str | None
    new_index_progress: float | None
    old_evaluation: int | None
    old_evaluation_status: str | None
    new_evaluation: int | None
    new_evaluation_status: str | None
    reembed_due: list[str] = Field(
        description="what POST /reembed would start (again): new_index, old_evaluation, "
        "new_evaluation (none yet, failed or cancelled); the cutover needs all three to succeed"
    )
    gate: GateOut | None = Field(description="the paired test now; null until both evaluations")
    verdict: GateOut | None = Field(description="the paired test the cutover went through on")
    forced: bool
    cut_over_at: str | None
    rollback_until: str | None
    rolled_back_at: str | None
    can_roll_back: bool
    error: str
    created_at: str
    finished_at: str | None


class UpgradeListOut(Schema):
    upgrades: list[UpgradeOut]


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _status(job) -> str | None:
    return job.status if job else None


def upgrade_payload(upgrade: ModelUpgrade, *, gate: bool = True) -> dict:
    build = upgrade.new_index
    return {
        "id": upgrade.pk,
        "deployment": upgrade.deployment.name,
        "status": upgrade.status,
        "stage": upgrade.stage,
        "progress": upgrade.progress,
        "old_index": upgrade.old_index_id,
        "old_model": upgrade.old_index.model_id,
        "new_model": upgrade.new_model_id,
        "adapter": upgrade.adapter_kind,
        "split": upgrade.split,
        "precision": upgrade.precision,
        "precision_used": upgrade.precision_used or None,
        "report": public_report(upgrade.report),
        "serving_adapter": (upgrade.deployment.adapter or {}).get("upgrade") == upgrade.pk,
        "new_index": build.pk if build else None,
        "new_index_status": build.status if build else None,
        "new_index_progress": build.progress if build else None,
        "old_evaluation": upgrade.old_evaluation_id,
        "old_evaluation_status": _status(upgrade.old_evaluation),
        "new_evaluation": upgrade.new_evaluation_id,
        "new_evaluation_status": _status(upgrade.new_evaluation),
        "reembed_due": (
            model_upgrade_reembed_due(upgrade=upgrade)
            if upgrade.status == JobStatus.SUCCEEDED and not upgrade.cut_over_at
            else []
        ),
        "gate": model_upgrade_gate(upgrade=upgrade) if gate else None,
        "verdict": upgrade.verdict or None,
        "forced": upgrade.forced,
        "cut_over_at": _iso(upgrade.cut_over_at),
        "rollback_until": _iso(upgrade.rollback_until),
        "rolled_back_at": _iso(upgrade.rolled_back_at),
        "can_roll_back": upgrade.can_roll_back,
        "error": upgrade.human_error,
        "created_at": upgrade.created_at.isoformat(),
        "finished_at": _iso(upgrade.finished_at),
    }


def _upgrade(request: HttpRequest, pk: int) -> ModelUpgrade | None:
    return model_upgrade_list(team=request.team).filter(pk=pk).first()


def _refused(exc: UpgradeError) -> JsonResponse:
    return error(str(exc), status=409 if isinstance(exc, CutoverRefused) else 400)


@router.post(
    "/deployments/{name}/upgrades",
    response={202: UpgradeOut, **ERRORS},
    summary="Start moving a deployment to a new model: adapter and compatibility report "
    "(member role)",
    url_name="upgrade_create",
)
def upgrade_create(request: HttpRequest, name: str, body: UpgradeIn):
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    deployment = deployment_list(team=request.team).filter(name=name).first()
    if deployment is None:
        return not_found()
    model = EmbeddingModel.objects.filter(team=request.team, pk=body.model).first()
    if model is None:
        return error("model: no such model in your team", status=404)
    try:
        upgrade = model_upgrade_create(
            team=request.team, deployment=deployment, new_model=model, adapter_kind=body.adapter,
            split=body.split, precision=body.precision, created_by=request.api_token.user,
            idempotency_key=idempotency_key(request),
        )  # fmt: skip
    except IdempotencyConflict as exc:
        return error(str(exc), 422)
    except UpgradeError as exc:
        return _refused(exc)
    response = JsonResponse(upgrade_payload(upgrade, gate=False), status=202)
    response["Location"] = f"/api/v1/upgrades/{upgrade.pk}"
    return response


@router.get(
    "/upgrades", response={200: UpgradeListOut, **ERRORS}, summary="Model upgrades",
    url_name="upgrades",
)  # fmt: skip
def upgrades(request: HttpRequest):
    rows = model_upgrade_list(team=request.team)[:200]
    return {"upgrades": [upgrade_payload(u, gate=False) for u in rows]}


@router.get(
    "/upgrades/{int:pk}", response={200: UpgradeOut, **ERRORS}, summary="A model upgrade",
    url_name="upgrade_detail",
)  # fmt: skip
def upgrade_detail(request: HttpRequest, pk: int):
    upgrade = _upgrade(request, pk)
    return upgrade_payload(upgrade) if upgrade else not_found()


def _upgrade_step(
    request: HttpRequest,
    pk: int,
    step: Callable[[ModelUpgrade, Any], object],
    *,
    accepted: bool = False,
):
    """One upgrade step: the member role, the team's upgrade (another team's is a 404), the
    service call (its refusal names the field: 400, or 409 for a refused cutover), then the
    upgrade as it is now."""
    if denied := forbidden_below(request, Role.MEMBER):
        return denied
    upgrade = _upgrade(request, pk)
    if upgrade is None:
        return not_found()
    try:
        step(upgrade, request.api_token.user)
    except UpgradeError as exc:
        return _refused(exc)
    upgrade = _upgrade(request, pk)
    if accepted:  # jobs started: 202, before the paired test can say anything
        return JsonResponse(upgrade_payload(upgrade, gate=False), status=202)
    return upgrade_payload(upgrade)


@router.post(
    "/upgrades/{int:pk}/adapter",
    response={200: UpgradeOut, **ERRORS},
    summary="Serve the new model's queries on the old index through the adapter, or stop "
    "(member role)",
    url_name="upgrade_adapter",
)
def upgrade_adapter(request: HttpRequest, pk: int, body: AdapterIn):
    return _upgrade_step(
        request, pk,
        lambda upgrade, user: model_upgrade_serve_adapter(upgrade=upgrade, serve=body.serve,
                                                          user=user),
    )  # fmt: skip


@router.post(
    "/upgrades/{int:pk}/reembed",
    response={202: UpgradeOut, **ERRORS},
    summary="Re-embed the corpus with the new model: an index build and the gate's two "
    "evaluations; called again, it re-runs only what failed or was cancelled (the build, "
    "either evaluation) (member role)",
    url_name="upgrade_reembed",
)
def upgrade_reembed(request: HttpRequest, pk: int):
    return _upgrade_step(
        request, pk,
        lambda upgrade, user: model_upgrade_reembed(upgrade=upgrade, user=user),
        accepted=True,
    )  # fmt: skip


@router.post(
    "/upgrades/{int:pk}/cutover",
    response={200: UpgradeOut, **ERRORS},
    summary="Swap the deployment to the re-embedded index, gated by the paired test; 409 when "
    "the new model is significantly worse and force is not set (member role)",
    url_name="upgrade_cutover",
)
def upgrade_cutover(request: HttpRequest, pk: int, body: CutoverIn):
    return _upgrade_step(
        request, pk,
        lambda upgrade, user: model_upgrade_cutover(upgrade=upgrade, user=user, force=body.force),
    )  # fmt: skip


@router.post(
    "/upgrades/{int:pk}/rollback",
    response={200: UpgradeOut, **ERRORS},
    summary="Restore the index the deployment served before the cutover (member role)",
    url_name="upgrade_rollback",
)
def upgrade_rollback(request: HttpRequest, pk: int):
    return _upgrade_step(
        request, pk, lambda upgrade, user: model_upgrade_rollback(upgrade=upgrade, user=user)
    )
