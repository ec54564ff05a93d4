"""Model upgrades without downtime: writes and reads of :class:`ModelUpgrade`.

The steps, each a service here: start (the job that fits the query adapter and writes the
compatibility report, ``workers.tasks.upgrade``); serve the new model's queries on the old
index through the adapter; re-embed (an index build of the new model on the same data, and
the two evaluations the gate compares); cut over (refused when the paired test finds the new
model significantly worse on the judged split, unless forced); roll back within the window.
Every change of what a name serves goes through ``deployment_deploy`` and the deploy log.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.models import JobStatus, Precision
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.indexes.models import Deployment, DeploymentEvent, IndexBuild, ModelUpgrade
from apps.indexes.services import IndexBuildError, deployment_deploy, deployments_publish_soon
from apps.registry.models import EmbeddingModel

GATE_METRIC = "ndcg@10"


class UpgradeError(IndexBuildError):
    """A user-facing reason why an upgrade step cannot be taken; it names the field."""


class CutoverRefused(UpgradeError):
    """The paired test finds the new model significantly worse, and the cutover was not
    forced."""


# --- reads -----------------------------------------------------------------------------------


def model_upgrade_list(*, team: Team) -> QuerySet[ModelUpgrade]:
    return ModelUpgrade.objects.filter(team=team).select_related(
        "deployment", "old_index__model", "new_model", "new_index", "old_evaluation",
        "new_evaluation",
    )  # fmt: skip


def model_upgrade_get(*, user, pk, role: str = "viewer") -> ModelUpgrade:
    return team_scoped_get(
        queryset=ModelUpgrade.objects.select_related(
            "deployment",
            "old_index__model",
            "new_model",
            "new_index",
            "old_evaluation",
            "new_evaluation",
        ),
        user=user,
        pk=pk,
        role=role,
    )


def model_upgrade_gate(*, upgrade: ModelUpgrade) -> dict | None:
    """The paired test of the new model against the old on the judged split, as the compare
    page runs it (``apps.runs.compare.paired_headline``); None until both evaluations have
    succeeded. ``worse``: significantly worse, which refuses an unforced cutover."""
    from apps.runs.compare import paired_headline

    old, new = upgrade.old_evaluation, upgrade.new_evaluation
    if old is None or new is None:
        return None
    if old.status != JobStatus.SUCCEEDED or new.status != JobStatus.SUCCEEDED:
        return None
    found = paired_headline(baseline=old, other=new, metric=GATE_METRIC)
    cell = found["cell"]
    return {
        "metric": GATE_METRIC,
        "old": found["baseline"],
        "new": found["other"],
        "delta": cell.delta,
        "ci_low": cell.ci_low,
        "ci_high": cell.ci_high,
        "p_value": cell.p_perm_holm,
        "p_label": cell.p_label,
        "significant": bool(cell.significant),
        "worse": bool(cell.significant and cell.delta < 0),
        "better": bool(cell.significant and cell.delta > 0),
        "verdict": cell.verdict,
        "queries": found["queries"],
        "old_evaluation": old.pk,
        "new_evaluation": new.pk,
    }


# --- writes ----------------------------------------------------------------------------------


def model_upgrade_create(
    *,
    team: Team,
    deployment: Deployment,
    new_model: EmbeddingModel,
    adapter_kind: str = ModelUpgrade.Kind.ORTHOGONAL,
    split: str | None = None,
    precision: str = Precision.AUTO,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> ModelUpgrade:
    """Start moving ``deployment`` to ``new_model``: the job that fits the adapter and
    measures both models on the deployment's data. Checked now, each problem naming its
    field."""
    from apps.registry.services import embedding_model_require_role
    from workers.tasks.upgrade import prepare_upgrade

    if deployment.team_id != team.pk or new_model.team_id != team.pk:
        raise UpgradeError("model: no such model in your team")
    embedding_model_require_role(model=new_model, role="embedding", field="model",
                                 error=UpgradeError)  # fmt: skip
    old_index = deployment.index
    if new_model.pk == old_index.model_id:
        raise UpgradeError(f"model: {deployment.name} already serves {new_model.name}")
    if adapter_kind not in ModelUpgrade.Kind.values:
        known = ", ".join(ModelUpgrade.Kind.values)
        raise UpgradeError(f"adapter: unknown kind {adapter_kind!r} (known: {known})")
    if adapter_kind == ModelUpgrade.Kind.ORTHOGONAL and (
        new_model.dimension != old_index.model.dimension
    ):
        raise UpgradeError(
            f"adapter: orthogonal needs one dimension ({new_model.name} has "
            f"{new_model.dimension}, {old_index.model.name} {old_index.model.dimension}); "
            "choose linear"
        )
    if precision not in Precision.values:
        known = ", ".join(Precision.values)
        raise UpgradeError(f"precision: unknown precision {precision!r} (known: {known})")
    upgrade_params_fit(old_index=old_index, new_model=new_model)
    version = old_index.dataset_version
    splits = version.splits
    if split is None:
        split = old_index.split or ("test" if "test" in splits else (splits[0] if splits else ""))
    if not split or split not in splits:
        known = ", ".join(splits) or "none"
        raise UpgradeError(
            f"split: {version} has no judged split {split!r} (judged: {known}); the report "
            "and the cutover's paired test need one"
        )

    def create() -> ModelUpgrade:
        upgrade = ModelUpgrade(
            team=team, deployment=deployment, old_index=old_index, new_model=new_model,
            adapter_kind=adapter_kind, split=split, precision=precision, created_by=created_by,
        )  # fmt: skip
        upgrade.full_clean(exclude=["report", "adapter_encoder", "verdict"])
        upgrade.save()
        if enqueue:
            job_enqueue(job=upgrade, task=prepare_upgrade)
        return upgrade

    return job_create_once(
        model=ModelUpgrade,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(
            kind="upgrade",
            deployment=deployment.pk,
            index=old_index.pk,
            model=new_model.pk,
            adapter=adapter_kind,
            split=split,
            precision=precision,
        ),  # fmt: skip
        idempotency_key=idempotency_key,
        create=create,
    )


def upgrade_params_fit(*, old_index: IndexBuild, new_model: EmbeddingModel) -> None:
    """The re-embedding builds the old index's type with its parameters from the new model's
    vectors: refuse now, naming ``model``, when those parameters cannot hold the new model's
    dimension (``dim``, ``pca_dim`` above it, ``pq_m`` not dividing it), rather than after the
    adapter job, when re-embedding would be refused."""
    from workers.common.configs.indexing import check_dimensions, parse_params

    try:
        config = parse_params(old_index.params)
        check_dimensions(dim=config.dim, pca_dim=config.pca_dim, pq_m=config.pq_m,
                         input_dim=new_model.dimension)  # fmt: skip
    except ValueError as exc:
        raise UpgradeError(
            f"model: {new_model.name} ({new_model.dimension} dimensions) cannot be re-embedded "
            f"with index #{old_index.pk}'s parameters ({exc})"
        ) from None


def public_adapter(adapter: dict) -> dict | None:
    """A deployment's adapter as the API and the log show it: no server path."""
    if not adapter:
        return None
    encoder = adapter.get("encoder") or {}
    return {
        "upgrade": adapter.get("upgrade"),
        "kind": adapter.get("kind"),
        "model": encoder.get("model_id"),
        "model_name": encoder.get("model_name"),
    }


def model_upgrade_serve_adapter(*, upgrade: ModelUpgrade, serve: bool, user=None) -> Deployment:
    """Serve (or stop serving) the new model's queries on the old index through the fitted
    adapter. Logged as a settings change of the deployment; the search process reloads it
    like a swap, so no query fails meanwhile."""
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=upgrade.team_id).first()
        upgrade = ModelUpgrade.objects.select_for_update().get(pk=upgrade.pk)
        deployment = Deployment.objects.select_for_update().get(pk=upgrade.deployment_id)
        if serve:
            if upgrade.status != JobStatus.SUCCEEDED:
                raise UpgradeError(
                    f"adapter: upgrade #{upgrade.pk} is {upgrade.status}; its adapter is "
                    "fitted when it succeeds"
                )
            if deployment.index_id != upgrade.old_index_id:
                raise UpgradeError(
                    f"adapter: {deployment.name} serves index #{deployment.index_id}, not "
                    f"#{upgrade.old_index_id} that the adapter maps into"
                )
            wanted = {
                "upgrade": upgrade.pk,
                "kind": upgrade.adapter_kind,
                "path": upgrade.adapter_path,
                "sha256": upgrade.adapter_sha256,
                "encoder": upgrade.adapter_encoder,
            }
        else:
            if (deployment.adapter or {}).get("upgrade") != upgrade.pk:
                raise UpgradeError(f"adapter: {deployment.name} is not serving this adapter")
            wanted = {}
        if wanted == (deployment.adapter or {}):
            return deployment
        DeploymentEvent.objects.create(
            team_id=deployment.team_id, name=deployment.name,
            action=DeploymentEvent.Action.SETTINGS, from_index_id=deployment.index_id,
            from_number=deployment.index_id, to_index_id=deployment.index_id,
            to_number=deployment.index_id, user=user,
            changes={"adapter": [public_adapter(deployment.adapter), public_adapter(wanted)]},
        )  # fmt: skip
        deployment.adapter = wanted
        deployment.updated_at = timezone.now()
        deployment.save(update_fields=["adapter", "updated_at"])
        transaction.on_commit(deployments_publish_soon)
    return deployment


GONE = (JobStatus.FAILED, JobStatus.CANCELLED)


def model_upgrade_reembed_due(*, upgrade: ModelUpgrade) -> list[str]:
    """What a re-embed would start now: ``new_index`` (none yet, or it failed or was
    cancelled) and each of ``old_evaluation`` / ``new_evaluation`` missing, failed or
    cancelled. Empty once all three are running or done (then re-embedding is a no-op)."""
    return [
        name
        for name in ("new_index", "old_evaluation", "new_evaluation")
        if (job := getattr(upgrade, name)) is None or job.status in GONE
    ]


def model_upgrade_reembed(*, upgrade: ModelUpgrade, user=None, enqueue: bool = True) -> IndexBuild:
    """Re-embed the corpus with the new model: an index build of the old index's type and
    parameters on the same data (its own job and progress, sharded when large), and the two
    evaluations on the judged split that the cutover's paired test compares. A second call
    starts again only what failed or was cancelled (the build, either evaluation) and
    returns the build; the rest is kept as it is."""
    from apps.indexes.services import index_build_create
    from apps.runs.services import EvaluationError, evaluation_create

    with transaction.atomic():
        # Locked (the team first, as every job start does) so that two clicks start one
        # build and one pair of evaluations.
        Team.objects.select_for_update().filter(pk=upgrade.team_id).first()
        locked = ModelUpgrade.objects.select_for_update().get(pk=upgrade.pk)
        if locked.status != JobStatus.SUCCEEDED:
            raise UpgradeError(
                f"upgrade: #{locked.pk} is {locked.status}; re-embed once it succeeds"
            )
        if locked.cut_over_at:
            raise UpgradeError("upgrade: already cut over")
        due = model_upgrade_reembed_due(upgrade=locked)
        if not due:
            return locked.new_index
        old_index = locked.old_index
        version = old_index.dataset_version
        changes = {}
        if "new_index" in due:
            try:
                changes["new_index"] = index_build_create(
                    team=locked.team, model=locked.new_model, dataset_version=version,
                    index_type=old_index.index_type, params=old_index.params,
                    split=locked.split, precision=locked.precision_used or locked.precision,
                    created_by=user, enqueue=enqueue,
                )  # fmt: skip
            except IndexBuildError as exc:
                raise UpgradeError(f"new_index: {exc}") from None
        for name, model, precision in (
            ("old_evaluation", old_index.model, old_index.precision_used or old_index.precision),
            ("new_evaluation", locked.new_model, locked.precision_used or locked.precision),
        ):
            if name not in due:
                continue
            try:
                changes[name] = evaluation_create(
                    team=locked.team, model=model, dataset_version=version,
                    split=locked.split, precision=precision, created_by=user, enqueue=enqueue,
                )  # fmt: skip
            except EvaluationError as exc:
                raise UpgradeError(f"{name}: {exc}") from None
        ModelUpgrade.objects.filter(pk=locked.pk).update(**changes)
    for name, job in changes.items():
        setattr(upgrade, name, job)
    return changes.get("new_index") or locked.new_index


def model_upgrade_cutover(*, upgrade: ModelUpgrade, user=None, force: bool = False) -> Deployment:
    """Point the deployment's name at the re-embedded index, if the paired test allows it:
    a new model significantly worse than the old on the judged split is refused unless
    ``force``. The verdict is recorded either way it goes through; the previous index stays
    one click away for ``UPGRADE_ROLLBACK_HOURS``."""
    upgrade = ModelUpgrade.objects.select_related(
        "deployment", "new_index", "old_evaluation", "new_evaluation"
    ).get(pk=upgrade.pk)
    if upgrade.cut_over_at:
        raise UpgradeError(f"upgrade: already cut over at {upgrade.cut_over_at:%Y-%m-%d %H:%M}")
    build = upgrade.new_index
    if build is None:
        raise UpgradeError("new_index: re-embed the corpus first")
    if build.status != JobStatus.SUCCEEDED:
        raise UpgradeError(f"new_index: the re-embedding (index #{build.pk}) is {build.status}")
    gate = model_upgrade_gate(upgrade=upgrade)
    if gate is None:
        states = ", ".join(
            f"{e.status}" for e in (upgrade.old_evaluation, upgrade.new_evaluation) if e
        )
        again = any(e.status in GONE for e in (upgrade.old_evaluation, upgrade.new_evaluation) if e)
        raise UpgradeError(
            f"verdict: the paired test needs both evaluations on {upgrade.split} to succeed "
            f"({states or 'none started'})"
            + ("; re-embed to run the failed or cancelled one again" if again else "")
        )
    if gate["worse"] and not force:
        raise CutoverRefused(
            f"force: the new model is significantly worse on {upgrade.split} (nDCG@10 "
            f"{gate['old']:.4f} → {gate['new']:.4f}, Δ {gate['delta']:+.4f}, {gate['p_label']}); "
            "cut over with force to override"
        )
    with transaction.atomic():
        locked = ModelUpgrade.objects.select_for_update().get(pk=upgrade.pk)
        if locked.cut_over_at:
            raise UpgradeError("upgrade: already cut over")
        deployment = Deployment.objects.get(pk=upgrade.deployment_id)
        if deployment.index_id != upgrade.old_index_id:
            raise UpgradeError(
                f"deployment: {deployment.name} serves index #{deployment.index_id} now, not "
                f"#{upgrade.old_index_id} as when this upgrade began"
            )
        deployment = deployment_deploy(
            team=upgrade.team, name=deployment.name, index=build, user=user
        )
        now = timezone.now()
        ModelUpgrade.objects.filter(pk=upgrade.pk).update(
            verdict=gate, forced=bool(force and gate["worse"]), cut_over_at=now,
            cut_over_by=user,
            rollback_until=now + timedelta(hours=settings.UPGRADE_ROLLBACK_HOURS),
        )  # fmt: skip
    return deployment


def model_upgrade_rollback(*, upgrade: ModelUpgrade, user=None) -> Deployment:
    """One click back to the index the name served before the cutover, while the window is
    open and the name still serves the upgrade's index."""
    with transaction.atomic():
        upgrade = ModelUpgrade.objects.select_for_update().get(pk=upgrade.pk)
        if not upgrade.cut_over_at:
            raise UpgradeError("rollback: this upgrade was not cut over")
        if upgrade.rolled_back_at:
            raise UpgradeError("rollback: already rolled back")
        if not upgrade.can_roll_back:
            raise UpgradeError(
                f"rollback: the window closed at {upgrade.rollback_until:%Y-%m-%d %H:%M} UTC"
            )
        deployment = Deployment.objects.get(pk=upgrade.deployment_id)
        if deployment.index_id != upgrade.new_index_id:
            raise UpgradeError(
                f"rollback: {deployment.name} serves index #{deployment.index_id} now, not the "
                f"upgrade's #{upgrade.new_index_id}"
            )
        deployment = deployment_deploy(
            team=upgrade.team, name=deployment.name, index=upgrade.old_index, user=user
        )
        ModelUpgrade.objects.filter(pk=upgrade.pk).update(
            rolled_back_at=timezone.now(), rolled_back_by=user
        )
    return deployment


def public_report(report: dict) -> dict:
    """The compatibility report as pages and the API show it: the per-query values (one per
    judged query and side, for the paired tests) stay on the row."""
    return {k: v for k, v in (report or {}).items() if k != "per_query"}
