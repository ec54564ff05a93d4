"""Writes for index builds and deployments.

An index build is a job row on the ``index`` queue, checked and enqueued here; its work (read
the document embeddings from the evaluations' cache or encode them, build the faiss index,
measure it) is ``workers.tasks.indexing``. A deployment points a name at one index; every
change rewrites the search process's manifest after commit and asks the process to reload, and
every change is kept in the audit log.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.accounts.models import Team
from apps.core.models import JobStatus, Precision
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets.models import DatasetVersion
from apps.indexes.models import (
    Deployment,
    DeploymentEvent,
    IndexBuild,
    IndexType,
    ModelUpgrade,
)
from apps.registry.models import EmbeddingModel
from workers.common.configs.indexing import parse_params
from workers.common.store import artifact_delete

logger = logging.getLogger(__name__)


class IndexBuildError(Exception):
    """A user-facing reason why an index cannot be built or deployed."""


def index_build_create(
    *,
    team: Team,
    model: EmbeddingModel,
    dataset_version: DatasetVersion,
    index_type: str,
    params: dict | None = None,
    split: str | None = None,
    precision: str = Precision.AUTO,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> IndexBuild:
    """Validate the parameters now (a typo is a message, not a failed job) and enqueue.

    ``params`` are :class:`~workers.common.configs.indexing.IndexParams` fields (the API's
    typed body, the form's or the command's values); the row records those given, and the full
    spec with every default filled in.
    """
    from workers.tasks.indexing import build_index

    if model.team_id != team.pk or dataset_version.dataset.team_id != team.pk:
        raise IndexBuildError("The model and the dataset must belong to the same team.")
    from apps.registry.services import embedding_model_require_role

    embedding_model_require_role(
        model=model, role="embedding", field="model", error=IndexBuildError
    )
    if index_type not in IndexType.values:
        known = ", ".join(IndexType.values)
        raise IndexBuildError(f"type: unknown index type {index_type!r} (known: {known}).")
    if not dataset_version.document_count:
        raise IndexBuildError(f"dataset_version: {dataset_version} has no documents to index.")
    if precision not in Precision.values:
        known = ", ".join(Precision.values)
        raise IndexBuildError(f"precision: unknown precision {precision!r} (known: {known}).")
    try:
        config = parse_params({k: v for k, v in (params or {}).items() if v not in (None, "")})
        spec = config.spec(index_type)
    except ValueError as exc:
        raise IndexBuildError(str(exc)) from None
    if config.dim and config.dim > model.dimension:
        raise IndexBuildError(f"dim: {config.dim} is more than the model's {model.dimension}.")
    if config.sparse_model is not None:
        index_sparse_model(team=team, model_id=config.sparse_model)
    params = config.given()
    splits = dataset_version.splits
    if split is None:
        split = "test" if "test" in splits else (splits[0] if splits else "")
    elif split and split not in splits:
        known = ", ".join(splits) or "none"
        raise IndexBuildError(f"split: {dataset_version} has no split {split!r} ({known}).")

    def create() -> IndexBuild:
        build = IndexBuild.objects.create(
            team=team,
            model=model,
            dataset_version=dataset_version,
            index_type=index_type,
            params=params,
            spec=spec,
            split=split,
            max_seq_length=model.max_seq_length,
            query_prefix=model.query_prefix,
            document_prefix=model.document_prefix,
            precision=precision,
            created_by=created_by,
        )
        if enqueue:
            job_enqueue(job=build, task=build_index)
        return build

    return job_create_once(
        model=IndexBuild,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(
            kind="index",
            model=model.pk,
            version=dataset_version.pk,
            type=index_type,
            params=params,
            split=split,
            precision=precision,
        ),
        idempotency_key=idempotency_key,
        create=create,
    )


def index_sparse_model(*, team: Team, model_id: int) -> EmbeddingModel:
    """The team's sparse model ``model_id`` for an index's sparse side, or IndexBuildError
    naming ``sparse_model`` (another team's model reads exactly like a missing one)."""
    from apps.registry.services import embedding_model_require_role

    sparse = EmbeddingModel.objects.filter(team=team, pk=model_id).first()
    if sparse is None:
        raise IndexBuildError(f"sparse_model: no model #{model_id} in your team")
    embedding_model_require_role(
        model=sparse, role=EmbeddingModel.Role.SPARSE, field="sparse_model", error=IndexBuildError
    )
    return sparse


def index_build_delete(*, build: IndexBuild) -> None:
    """Delete an index and its files. A deployed or still running index cannot go: undeploy
    or cancel it first. The deploy log keeps its entries (they lose the link only)."""
    folder = index_folder(build=build)
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=build.team_id).first()  # as deploys do
        build = IndexBuild.objects.select_for_update().get(pk=build.pk)
        if build.is_active:
            raise IndexBuildError(f"Index #{build.pk} is {build.status}; cancel it first.")
        names = list(build.deployments.values_list("name", flat=True))
        if names:
            raise IndexBuildError(
                f"Index #{build.pk} is deployed as {', '.join(names)}; undeploy it first."
            )
        upgrade = (
            ModelUpgrade.objects.filter(old_index=build)
            .filter(
                Q(status__in=[JobStatus.PENDING, JobStatus.RUNNING])
                | Q(rolled_back_at__isnull=True, rollback_until__gt=timezone.now())
            )
            .first()
        )
        if upgrade is not None:
            raise IndexBuildError(
                f"Index #{build.pk} is what upgrade #{upgrade.pk} of {upgrade.deployment.name} "
                + (
                    f"rolls back to until {upgrade.rollback_until:%Y-%m-%d %H:%M} UTC."
                    if upgrade.rollback_until
                    else "starts from, and the upgrade is still running."
                )
            )
        # Upgrades that started from this index go with it, and their adapters' folders.
        # Files go only once the row is gone for good: a rolled-back delete keeps both.
        upgrade_folders_delete_on_commit(upgrades=ModelUpgrade.objects.filter(old_index=build))
        build.delete()
        transaction.on_commit(lambda: artifact_delete(folder))


def upgrade_folders_delete_on_commit(*, upgrades: QuerySet[ModelUpgrade]) -> None:
    """Delete the adapter folders of ``upgrades`` (a queryset, read now: call it before the
    rows go) once the transaction commits; a rolled-back delete keeps them."""
    for pk in list(upgrades.values_list("pk", flat=True)):
        path = Path(settings.ARTIFACTS_ROOT) / "upgrades" / str(pk)
        transaction.on_commit(lambda path=path: artifact_delete(path))


def index_folder(*, build: IndexBuild) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "indexes" / str(build.pk)


# --- deployments -----------------------------------------------------------------------------


class DeploymentConflict(IndexBuildError):
    """The name already serves that index."""


def deployment_rerank_stage(*, team: Team, rerank: dict, index: IndexBuild) -> dict:
    """The rerank stage as deployed (``DeploymentRerank``'s fields checked, the reranker
    resolved in ``team``, its folder's fingerprint recorded for the search process's guard);
    {} for none. ``IndexBuildError`` naming the field."""
    from pydantic import ValidationError

    from apps.registry.models import EmbeddingModel
    from workers.common.configs.indexing import DeploymentRerank
    from workers.common.configs.problems import config_problems
    from workers.common.fingerprint import model_fingerprint

    try:
        config = DeploymentRerank.model_validate(rerank)
    except ValidationError as exc:
        raise IndexBuildError(
            "; ".join(f"rerank.{f}: {why}" for f, why in config_problems(exc))
        ) from None
    if config.model is None:
        return {}
    model = EmbeddingModel.objects.filter(team=team, pk=config.model).first()
    if model is None:
        raise IndexBuildError("rerank.model: no such model in your team")
    if not model.is_reranker:
        raise IndexBuildError(
            f"rerank.model: {model.name} is an embedding model, not a reranker (a cross-encoder)"
        )
    if not (index.metrics or {}).get("texts_bytes"):
        raise IndexBuildError(
            f"rerank: index #{index.pk} keeps no document texts for a reranker to read (it was "
            "built before they were kept): build it again"
        )
    from workers.common.store import ArtifactMissing, artifact_ensure

    try:
        artifact_ensure(model.path)  # with a bucket: fetched here, to fingerprint it
    except ArtifactMissing:
        pass
    if not Path(model.path).is_dir():
        raise IndexBuildError(f"rerank.model: {model.name}'s folder is gone")
    return {
        "model": model.pk,
        "k_prime": config.k_prime,
        "model_name": model.name,
        "path": model.path,
        "fingerprint": model_fingerprint(model.path),
        "max_length": model.max_seq_length,
    }


def deployment_deploy(
    *, team: Team, name: str, index: IndexBuild, user=None, fusion: dict | None = None,
    rerank: dict | None = None,
) -> Deployment:  # fmt: skip
    """Point ``name`` at ``index`` (creating the alias or swapping it) and log it. ``fusion``
    (``DeploymentFusion``'s fields) sets how search mode hybrid fuses, ``rerank``
    (``DeploymentRerank``'s) the rerank stage ({"model": None} removes it); None keeps the
    name's current settings (the defaults, and no rerank stage, for a new name)."""
    from pydantic import ValidationError

    from workers.common.configs.indexing import DeploymentFusion
    from workers.common.configs.problems import config_problems

    lexical_given = bool(fusion and "lexical" in fusion)
    if fusion is not None:
        try:
            fusion = DeploymentFusion.model_validate(fusion).model_dump()
        except ValidationError as exc:
            raise IndexBuildError(
                "; ".join(f"fusion.{f}: {why}" for f, why in config_problems(exc))
            ) from None
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_slug

    from apps.indexes.models import NAME_MAX

    name = (name or "").strip()
    try:
        validate_slug(name)
    except ValidationError:
        raise IndexBuildError(
            "name: use letters, numbers, hyphens or underscores (e.g. scifact-prod)."
        ) from None
    if len(name) > NAME_MAX:
        raise IndexBuildError(f"name: at most {NAME_MAX} characters.")
    if index.team_id != team.pk:
        raise IndexBuildError("index: no such index in your team.")
    with transaction.atomic():
        # Deploys of one team queue behind each other: two first deploys of one new name (no
        # row to lock yet) or a deploy racing a delete of the index cannot both go through.
        Team.objects.select_for_update().filter(pk=team.pk).first()
        index = IndexBuild.objects.select_for_update().get(pk=index.pk)
        if index.status != JobStatus.SUCCEEDED:
            raise IndexBuildError(
                f"index: #{index.pk} is {index.status}; only a built index deploys."
            )
        current = Deployment.objects.filter(team=team, name=name).first()
        previous = current.index if current else None
        sides = {"bm25": bool((index.metrics or {}).get("bm25_bytes")),
                 "sparse": bool((index.metrics or {}).get("sparse_bytes"))}  # fmt: skip
        # A dense-only index has no lexical side to choose: its fusion settings are inert.
        if lexical_given and not sides[fusion["lexical"]] and any(sides.values()):
            what = "BM25 index" if fusion["lexical"] == "bm25" else "sparse side"
            raise IndexBuildError(
                f"fusion.lexical: index #{index.pk} has no {what} to fuse with the dense one"
            )
        if current is None and not lexical_given:
            fusion = fusion or DeploymentFusion().model_dump()
            if sides["sparse"] and not sides["bm25"]:
                fusion["lexical"] = "sparse"  # the only lexical side this index has
        if rerank is not None:
            rerank = deployment_rerank_stage(team=team, rerank=rerank, index=index)
        elif current and current.rerank and not (index.metrics or {}).get("texts_bytes"):
            # The name keeps its stage as it was approved (its fingerprint too) across a swap,
            # so the new index must keep texts for it.
            raise IndexBuildError(
                f"rerank: {name} reranks, and index #{index.pk} keeps no document texts for "
                "it (built before they were kept): build it again, or remove the rerank stage"
            )
        if current and current.index_id == index.pk:
            changed = (fusion is not None and fusion != current.fusion) or (
                rerank is not None and rerank != current.rerank
            )
            if not changed:
                raise DeploymentConflict(f"{name} already serves index #{index.pk}.")
            # The same index, fused or reranked another way: logged like a deploy, with what
            # changed from what.
            changes = {}
            if fusion is not None and fusion != current.fusion:
                changes["fusion"] = [current.fusion, fusion]
                current.fusion = fusion
            if rerank is not None and rerank != current.rerank:
                changes["rerank"] = [current.rerank, rerank]
                current.rerank = rerank
            current.updated_at = timezone.now()
            current.save(update_fields=["fusion", "rerank", "updated_at"])
            DeploymentEvent.objects.create(
                team=team, name=name, action=DeploymentEvent.Action.SETTINGS,
                from_index=index, from_number=index.pk, to_index=index, to_number=index.pk,
                user=user, changes=changes,
            )  # fmt: skip
            transaction.on_commit(deployments_publish_soon)
            return current
        if current:
            current.index = index
            current.encoder = index.encoder
            current.deployed_by = user
            current.updated_at = timezone.now()
            if fusion is not None:
                current.fusion = fusion
            if rerank is not None:
                current.rerank = rerank
            # An adapter maps into the space of the index it was fitted for: a swap ends it.
            current.adapter = {}
            current.save(update_fields=["index", "encoder", "deployed_by", "updated_at", "fusion",
                                        "rerank", "adapter"])  # fmt: skip
            deployment = current
        else:
            deployment = Deployment.objects.create(
                team=team, name=name, index=index, encoder=index.encoder, deployed_by=user,
                fusion=fusion, rerank=rerank or {},
            )  # fmt: skip
        DeploymentEvent.objects.create(
            team=team,
            name=name,
            action=DeploymentEvent.Action.SWAP if previous else DeploymentEvent.Action.DEPLOY,
            from_index=previous,
            from_number=previous.pk if previous else None,
            to_index=index,
            to_number=index.pk,
            user=user,
        )
        transaction.on_commit(deployments_publish_soon)
        if previous:
            from apps.indexes.calibrations import calibration_refit_after_swap

            # A calibration is of one index's scores: the new index gets its own, refitted,
            # after the swap's commit (the swap holds the team's lock: it stays short).
            transaction.on_commit(
                lambda: calibration_refit_after_swap(deployment_id=deployment.pk, user=user)
            )
    return deployment


def deployment_undeploy(*, deployment: Deployment, user=None) -> None:
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=deployment.team_id).first()
        DeploymentEvent.objects.create(
            team=deployment.team,
            name=deployment.name,
            action=DeploymentEvent.Action.UNDEPLOY,
            from_index_id=deployment.index_id,
            from_number=deployment.index_id,
            user=user,
        )
        # The deployment's upgrades go with it (a cascade), and their adapters' folders.
        upgrade_folders_delete_on_commit(
            upgrades=ModelUpgrade.objects.filter(deployment_id=deployment.pk)
        )
        deployment.delete()
        transaction.on_commit(deployments_publish_soon)


def deployments_manifest() -> dict:
    """What the search process should serve: every deployment of every team."""
    from apps.indexes.calibrations import calibration_manifest_entry

    rows = Deployment.objects.select_related("index").order_by("team_id", "name")
    return {
        d.serving_key: {
            "team": d.team_id,
            "name": d.name,
            "index_id": d.index_id,
            "path": d.index.path,
            "encoder": d.encoder,
            "fusion": d.fusion,
            "rerank": d.rerank,
            "calibration": calibration_manifest_entry(deployment=d),
            "adapter": d.adapter,
            "updated_at": d.updated_at.isoformat(),
        }
        for d in rows
    }


def deployments_publish_soon() -> None:
    """What a deploy, swap or undeploy does after commit: the manifest is written now (the
    change is on disk when the page says so), and the search process is told from a thread.
    A request must not wait on the search process: one busy loading a large index or a model
    answers late, and the deploy would wait that long (up to SEARCH_HEALTH_TIMEOUT, retried
    once). A notification that never arrives only delays the swap until the process's next
    poll of the manifest."""
    deployments_publish(notify=False)
    threading.Thread(target=_notify_search, daemon=True, name="search-notify").start()


def _notify_search() -> None:
    from apps.indexes.selectors import search_call

    try:
        search_call("POST", "/reload", {"wait": False}, timeout=settings.SEARCH_HEALTH_TIMEOUT)
    except OSError as exc:
        logger.warning("search process not told about the new manifest: %s", exc)


def deployments_publish(*, notify: bool = True, wait: bool = False) -> dict | None:
    """Rewrite the manifest from the database (under a lock, so two deploys cannot interleave
    their writes; unchanged content is not rewritten), then tell the search process, which
    reloads in the background (``wait``: answer only once loaded, with what it refused). The
    process also polls the file, so a missed notification only delays the swap by a second, a
    down process loads it on start, and the periodic publish repairs a web process that died
    between commit and this call. Returns the process's answer, or None."""
    path = Path(settings.SEARCH_MANIFEST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deployments = deployments_manifest()
        try:
            current = json.loads(path.read_text(encoding="utf-8")).get("deployments")
        except (FileNotFoundError, ValueError):
            current = None
        if current != deployments:
            fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"written_at": time.time(), "deployments": deployments}, out, indent=1)
            os.replace(tmp, path)
        from workers.common.store import store

        if (bucket := store()) is not None:
            # Replicas on other hosts follow the bucket's copy; it is rewritten every time, so
            # the periodic publish repairs one that a failed upload left behind.
            try:
                bucket.put_manifest(path.read_bytes())
            except Exception:  # noqa: BLE001 (the local process still gets it; logged)
                logger.warning("search manifest not uploaded to the bucket", exc_info=True)
    if not notify:
        return None
    from apps.indexes.selectors import search_call

    timeout = settings.SEARCH_RELOAD_TIMEOUT if wait else settings.SEARCH_HEALTH_TIMEOUT
    try:
        return search_call("POST", "/reload", {"wait": wait}, timeout=timeout)
    except OSError as exc:
        logger.warning("search process not told about the new manifest: %s", exc)
        return None
