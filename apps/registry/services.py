from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q as models_Q

from apps.accounts.models import Team
from apps.registry.models import DistillJob, EmbeddingModel, HubImport, OptimizeJob
from workers.common.configs.distill import DistillConfig
from workers.common.configs.optimize import OptimizeConfig, VariantEvaluation


class ModelRegistrationError(ValueError):
    pass


@transaction.atomic
def embedding_model_register(
    *,
    team: Team,
    name: str,
    path: str = "",
    package: str = "",
    query_prefix: str | None = None,
    document_prefix: str | None = None,
) -> EmbeddingModel:
    """Register a base model from a local folder or an installed package that ships one.

    Reads only the folder's JSON files and weight headers (no torch in the web process) and
    records dimension, max length, pooling, normalisation and prefixes.
    """
    # Pure JSON inspection: importing it never loads torch, and packages are found, not run.
    from workers.common.inspect import ModelFolderError, find_package_model, inspect_model_folder

    if bool(path) == bool(package):
        raise ModelRegistrationError("Give either a folder path or a package name.")
    if package and package not in settings.MODEL_PACKAGES:
        allowed = ", ".join(settings.MODEL_PACKAGES) or "none"
        raise ModelRegistrationError(
            f"{package}: not in MODEL_PACKAGES (allowed: {allowed}); an administrator adds it."
        )
    try:
        folder = find_package_model(package) if package else path
        info = inspect_model_folder(folder)
    except ModelFolderError as exc:
        raise ModelRegistrationError(str(exc)) from exc
    if EmbeddingModel.objects.filter(team=team, name=name).exists():
        raise ModelRegistrationError(f"{team} already has a model named {name!r}.")
    model = EmbeddingModel(
        team=team,
        name=name,
        source=EmbeddingModel.Source.PACKAGE if package else EmbeddingModel.Source.FOLDER,
        source_ref=package or str(path),
        path=info.path,
        layout=info.layout,
        architecture=info.architecture[:100],
        dimension=info.dimension,
        max_seq_length=info.max_seq_length,
        pooling=info.pooling,
        normalize=info.normalize,
        query_prefix=info.query_prefix if query_prefix is None else query_prefix,
        document_prefix=info.document_prefix if document_prefix is None else document_prefix,
        parameters=info.parameters,
        role=info.role,
    )
    try:
        model.full_clean()
    except ValidationError as exc:
        raise ModelRegistrationError("; ".join(exc.messages)) from exc
    model.save()
    return model


def embedding_model_register_trained(
    *,
    team: Team,
    base: EmbeddingModel,
    name: str,
    source_ref: str,
    model_dir: str,
    max_seq_length: int,
    pooling: str,
    query_prefix: str,
    document_prefix: str,
) -> EmbeddingModel:
    """A fine-tune's result as a registry model: encoded as it was trained, its base as parent.

    Called by the training task once the model folder is written; registering the same run
    again (a retried task) updates the model of that name instead of failing.
    """
    from workers.common.inspect import ModelFolderError, inspect_model_folder

    try:
        info = inspect_model_folder(model_dir)
    except ModelFolderError:
        # An unmerged LoRA folder holds the adapter and names the base: same shape as the base.
        info = inspect_model_folder(base.path)
    model, _ = EmbeddingModel.objects.update_or_create(
        team=team,
        name=name,
        defaults={
            "kind": EmbeddingModel.Kind.FINETUNED,
            "source": EmbeddingModel.Source.FOLDER,
            "source_ref": source_ref,
            "path": str(model_dir),
            "layout": info.layout,
            "architecture": info.architecture,
            "dimension": info.dimension,
            "max_seq_length": max_seq_length,
            "pooling": pooling,
            # A reranker scores pairs: no normalisation, and no prefixes are given to it.
            "normalize": base.normalize and info.role != "reranker",
            "query_prefix": "" if info.role == "reranker" else query_prefix,
            "document_prefix": "" if info.role == "reranker" else document_prefix,
            "parameters": info.parameters,
            "parent": base,
            "role": info.role,
        },
    )
    return model


def embedding_model_require_role(
    *, model: EmbeddingModel, role: str, field: str, error: type[ValueError]
) -> None:
    """Raise ``error`` ("FIELD: why") when ``model`` is not of ``role``: a reranker cannot
    embed (no index, evaluation, curation or variant of one), and only a reranker reranks."""
    if model.role == role:
        return
    if role == EmbeddingModel.Role.RERANKER:
        raise error(
            f"{field}: {model.name} is {_role_phrase(model)}, not a reranker (a cross-encoder "
            "folder, or a run trained with a reranker loss)"
        )
    if role == EmbeddingModel.Role.SPARSE:
        raise error(
            f"{field}: {model.name} is {_role_phrase(model)}, not a sparse model (a "
            "sentence-transformers SparseEncoder folder, e.g. SPLADE)"
        )
    if model.is_sparse:
        raise error(
            f"{field}: {model.name} is a sparse model (SPLADE): its vectors are sparse over the "
            "vocabulary, so it has no dense index, curation or variant; evaluate it with method "
            "sparse, or use it as the lexical side of a hybrid"
        )
    raise error(
        f"{field}: {model.name} is a reranker: it scores (query, document) pairs and cannot "
        "embed texts; use it as the reranker of a rerank evaluation or a deployment"
    )


def _role_phrase(model: EmbeddingModel) -> str:
    return {
        "embedding": "an embedding model",
        "reranker": "a reranker",
        "sparse": "a sparse model (SPLADE)",
    }[model.role]


class DistillError(ValueError):
    """A distillation that cannot start; the message names the field."""


def variant_evaluation_target(
    *, team: Team, source: EmbeddingModel, config: VariantEvaluation, error: type[ValueError]
):
    """(dataset version, split) on which a derived model and its ``source`` are evaluated:
    the one asked for (resolved in ``team``: another team's id reads as missing), else the
    source's most recent succeeded dense evaluation's; (None, "") when there is neither.
    A wrong field raises ``error`` naming it."""
    from apps.datasets.models import DatasetVersion
    from apps.runs.models import Evaluation

    evaluate, split = None, config.split or ""
    if config.evaluate_version is not None:
        evaluate = DatasetVersion.objects.filter(
            dataset__team=team, pk=config.evaluate_version
        ).first()
        if evaluate is None:
            raise error("evaluate_version: no such dataset version in your team")
        split = split or ("test" if "test" in evaluate.splits else "")
    else:
        last = (
            Evaluation.objects.filter(model=source, status="succeeded", method="dense")
            .select_related("dataset_version")
            .order_by("-finished_at", "-pk")
            .first()
        )
        if last is not None:
            evaluate, split = last.dataset_version, split or last.split
    if evaluate is not None and split not in evaluate.qrels_counts:
        known = ", ".join(sorted(evaluate.qrels_counts)) or "none"
        raise error(f"split: {evaluate} has no judged split {split!r} (splits: {known})")
    return evaluate, (split if evaluate is not None else "")


def distill_job_create(
    *,
    team: Team,
    source: EmbeddingModel,
    config: DistillConfig,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> DistillJob:
    """Check a static distillation of ``source`` now (a wrong field is a message, not a failed
    job) and queue it on the encode queue once the transaction commits.

    Versions are resolved in ``team`` (another team's id reads as missing). Without an
    ``evaluate_version`` the source's most recent succeeded evaluation gives the version and
    split; with neither, the static model is registered and measured but not evaluated."""
    from apps.core.services import job_create_once, job_enqueue, job_fingerprint
    from apps.datasets.models import DatasetVersion
    from workers.tasks.distill import distill

    if source.team_id != team.pk:
        raise DistillError("model: no such model in your team")
    embedding_model_require_role(model=source, role="embedding", field="model", error=DistillError)
    if source.kind == EmbeddingModel.Kind.STATIC:
        raise DistillError("model: a static model has nothing left to distill")
    if config.pca_dims is not None and config.pca_dims > source.dimension:
        if "pca_dims" in config.model_fields_set:
            raise DistillError(
                f"pca_dims: {config.pca_dims} is more than the model's {source.dimension} "
                "dimensions"
            )
        config = config.model_copy(update={"pca_dims": None})  # the default, on a small model
    vocabulary = None
    if config.vocabulary_version is not None:
        vocabulary = DatasetVersion.objects.filter(
            dataset__team=team, pk=config.vocabulary_version
        ).first()
        if vocabulary is None:
            raise DistillError("vocabulary_version: no such dataset version in your team")
        if not vocabulary.document_count:
            raise DistillError(f"vocabulary_version: {vocabulary} has no documents")
    evaluate, split = variant_evaluation_target(team=team, source=source, config=config,
                                                error=DistillError)  # fmt: skip

    def create() -> DistillJob:
        job = DistillJob.objects.create(
            team=team,
            source=source,
            params=config.model_dump(),
            vocabulary_version=vocabulary,
            evaluate_version=evaluate,
            split=split,
            created_by=created_by,
        )
        if enqueue:
            job_enqueue(job=job, task=distill)
        return job

    return job_create_once(
        model=DistillJob,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(kind="distill", model=source.pk, **config.model_dump()),
        idempotency_key=idempotency_key,
        create=create,
    )


@transaction.atomic
def embedding_model_register_static(
    *, job: DistillJob, path: str, dimension: int, vocabulary_size: int
) -> EmbeddingModel:
    """A distillation's result as a registry model, the source as parent. Encoded with the
    source's prefixes (the static table was made from its vocabulary); a retried job
    registers the same model again."""
    source = job.source
    pca = job.params.get("pca_dims")
    suffix = f" static{f' {pca}d' if pca else ''} (distillation {job.pk})"
    model, _ = EmbeddingModel.objects.update_or_create(
        team=job.team,
        # Keyed on the job, not the name: a retry updates its own model, never another's.
        source_ref=f"distillation {job.pk}",
        kind=EmbeddingModel.Kind.STATIC,
        defaults={
            "name": source.name[: 200 - len(suffix)] + suffix,
            "source": EmbeddingModel.Source.FOLDER,
            "path": path,
            "layout": "sentence-transformers",
            "architecture": "StaticEmbedding (Model2Vec)",
            "dimension": dimension,
            "max_seq_length": source.max_seq_length,
            "pooling": "mean",
            "normalize": True,
            "query_prefix": source.query_prefix,
            "document_prefix": source.document_prefix,
            "parameters": vocabulary_size * dimension,
            "parent": source,
        },
    )
    return model


class OptimizeError(ValueError):
    """An optimization that cannot start; the message names the field."""


def optimize_job_create(
    *,
    team: Team,
    source: EmbeddingModel,
    config: OptimizeConfig,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> OptimizeJob:
    """Check an optimized variant of ``source`` now (a wrong field is a message, not a failed
    job) and queue it on the encode queue once the transaction commits. Evaluated as a static
    distillation is (``variant_evaluation_target``)."""
    from apps.core.services import job_create_once, job_enqueue, job_fingerprint
    from workers.tasks.optimize import optimize

    if source.team_id != team.pk:
        raise OptimizeError("model: no such model in your team")
    embedding_model_require_role(model=source, role="embedding", field="model", error=OptimizeError)
    if source.kind in (EmbeddingModel.Kind.STATIC, EmbeddingModel.Kind.OPTIMIZED):
        raise OptimizeError(
            f"model: {source.name} is already a {source.get_kind_display().lower()} model; "
            "optimize the model it was made from"
        )
    evaluate, split = variant_evaluation_target(team=team, source=source, config=config,
                                                error=OptimizeError)  # fmt: skip

    def create() -> OptimizeJob:
        job = OptimizeJob.objects.create(team=team, source=source, params=config.model_dump(),
                                         evaluate_version=evaluate, split=split,
                                         created_by=created_by)  # fmt: skip
        if enqueue:
            job_enqueue(job=job, task=optimize)
        return job

    return job_create_once(
        model=OptimizeJob,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(kind="optimize", model=source.pk, **config.model_dump()),
        idempotency_key=idempotency_key,
        create=create,
    )


@transaction.atomic
def embedding_model_register_optimized(
    *, job: OptimizeJob, path: str, optimization: dict
) -> EmbeddingModel:
    """An optimization's result as a registry model, the source as parent: encoded with the
    source's settings (its pooling and normalisation modules are in the folder), keyed on the
    job so that a retry updates its own model."""
    source = job.source
    suffix = f" {job.label} (optimization {job.pk})"
    model, _ = EmbeddingModel.objects.update_or_create(
        team=job.team,
        source_ref=f"optimization {job.pk}",
        kind=EmbeddingModel.Kind.OPTIMIZED,
        defaults={
            "name": source.name[: 200 - len(suffix)] + suffix,
            "source": EmbeddingModel.Source.FOLDER,
            "path": path,
            "layout": "onnx",
            "architecture": f"{source.architecture} (ONNX Runtime)"[:100],
            "dimension": source.dimension,
            "max_seq_length": source.max_seq_length,
            "pooling": source.pooling,
            "normalize": source.normalize,
            "query_prefix": source.query_prefix,
            "document_prefix": source.document_prefix,
            "parameters": source.parameters,
            "parent": source,
            "optimization": optimization,
        },
    )
    return model


def variant_quality_record(*, evaluation) -> None:
    """Once both evaluations of a derived model's job (optimized or static) have succeeded,
    record on the derived model how its nDCG@10 compares with its parent's, and whether it
    dropped more than ``QUALITY_MAX_DROP`` (relative): the mark every list and form shows.
    Called when any evaluation succeeds; does nothing for one that is not a job's."""
    from apps.registry.selectors import variant_summary

    model = evaluation.model
    if model is None:
        return
    jobs = [
        *DistillJob.objects.filter(team=evaluation.team, status="succeeded")
        .filter(models_Q(result_model=model) | models_Q(source=model)),
        *OptimizeJob.objects.filter(team=evaluation.team, status="succeeded")
        .filter(models_Q(result_model=model) | models_Q(source=model)),
    ]  # fmt: skip
    for job in jobs:
        ids = (job.result.get("evaluations") or {}).values()
        if job.result_model is None or evaluation.pk not in ids:
            continue
        summary = variant_summary(job=job)
        if summary.get("cell") is None:
            continue
        drop = summary["drop"]
        job.result_model.quality = {
            "metric": summary["metric"],
            "parent_value": summary["source_value"],
            "value": summary["variant_value"],
            "drop": drop,
            "drop_pct": round(drop * 100, 2),
            "below_bar": summary["below_bar"],
            "bar": settings.QUALITY_MAX_DROP,
            "bar_pct": round(settings.QUALITY_MAX_DROP * 100, 2),
            "p_value": summary["cell"].p_perm_holm,
            "queries": summary["queries"],
            "evaluations": job.result.get("evaluations"),
            "dataset_version": job.evaluate_version_id,
            "split": job.split,
        }
        job.result_model.save(update_fields=["quality"])


class ModelInUse(ValueError):
    """A model that something still refers to; the message says what."""


def embedding_model_delete(*, model: EmbeddingModel) -> None:
    """Delete a registered model that nothing refers to (evaluations, index builds, runs,
    curation and derivation jobs, derived models): the message lists what does. The files go
    too, but only those EmbedHub wrote under ARTIFACTS_ROOT (a fine-tune, a distillation, an
    optimized variant); a folder or package a model was registered from is never touched."""
    import shutil
    from pathlib import Path

    from apps.indexes.models import Deployment
    from apps.runs.models import Evaluation
    from apps.runs.training import _inside_artifacts

    uses = [
        (
            Deployment.objects.filter(team=model.team, rerank__model=model.pk).count(),
            "deployment's rerank stage",
        ),
        (
            Evaluation.objects.filter(team=model.team, fusion__lexical_model=model.pk).count(),
            "hybrid evaluation",
        ),
        (model.evaluations.count(), "evaluation"),
        (model.index_builds.count(), "index"),
        (model.training_runs.count(), "training run"),
        (model.children.count(), "derived model"),
        (model.distill_jobs.count() + model.optimize_jobs.count(), "distillation or optimization"),
        (model.curation_jobs.count(), "curation job"),
    ]
    listed = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in uses if n]
    if listed:
        raise ModelInUse(
            f"{model.name} is used by {', '.join(listed)}; delete those first (their results "
            "name this model)."
        )
    folder = Path(model.path)
    kinds = (EmbeddingModel.Kind.FINETUNED, EmbeddingModel.Kind.STATIC,
             EmbeddingModel.Kind.OPTIMIZED)  # fmt: skip
    from django.db.models import ProtectedError

    with transaction.atomic():
        try:
            model.delete()
        except ProtectedError as exc:  # a reference added since the count above
            raise ModelInUse(f"{model.name} is still in use ({exc.args[0]})") from None
        if model.kind in kinds and _inside_artifacts(folder):
            transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def embedding_model_rename(*, model: EmbeddingModel, name: str) -> EmbeddingModel:
    """A new name, unique in the team (what every list and form shows; nothing else changes:
    evaluations and indexes refer to the model, not its name)."""
    name = (name or "").strip()
    if not name:
        raise ModelRegistrationError("name: give a name")
    if len(name) > 200:
        raise ModelRegistrationError("name: at most 200 characters")
    if EmbeddingModel.objects.filter(team=model.team, name=name).exclude(pk=model.pk).exists():
        raise ModelRegistrationError(f"name: {model.team} already has a model named {name!r}")
    model.name = name
    model.save(update_fields=["name"])
    return model


class HubImportError(ValueError):
    pass


def hub_import_create(
    *,
    team: Team,
    kind: str,
    repo_id: str,
    revision: str = "",
    name: str = "",
    created_by=None,
    enqueue: bool = True,
) -> HubImport:
    """Queue a download of ``repo_id`` (a model or a dataset repo) at ``revision`` for the team.
    The name defaults to the repo's; a model name the team already uses is refused now, not
    after the download. Errors name the field."""
    from apps.core.services import job_enqueue
    from workers.common.hub import hub_name_problem
    from workers.tasks.hub import hub_import

    if kind not in HubImport.Kind.values:
        raise HubImportError(f"kind: {kind!r} is not one of {', '.join(HubImport.Kind.values)}.")
    repo_id, revision = (repo_id or "").strip(), (revision or "").strip()
    if problem := hub_name_problem(repo_id=repo_id, allowed_orgs=settings.HUB_ALLOWED_ORGS):
        raise HubImportError(f"repo_id: {problem}")
    if revision and (problem := hub_name_problem(repo_id=repo_id, revision=revision)):
        raise HubImportError(f"revision: {problem}")
    name = (name or "").strip() or repo_id.split("/", 1)[1]
    if len(name) > 200:
        raise HubImportError("name: at most 200 characters.")
    if (
        kind == HubImport.Kind.MODEL
        and EmbeddingModel.objects.filter(team=team, name=name).exists()
    ):
        raise HubImportError(f"name: {team} already has a model named {name!r}.")
    with transaction.atomic():
        job = HubImport.objects.create(
            team=team, kind=kind, repo_id=repo_id, revision=revision, name=name,
            created_by=created_by,
        )  # fmt: skip
        if enqueue:
            job_enqueue(job=job, task=hub_import)
    return job


def embedding_model_register_hub(*, job: HubImport, path: str) -> EmbeddingModel:
    """Register the model a Hub import downloaded: read as a folder is, its source the repo
    and the commit it resolved to (shown on its page, used again by nobody's path)."""
    model = embedding_model_register(team=job.team, name=job.name, path=path)
    model.source = EmbeddingModel.Source.HUB
    model.source_ref = f"{job.repo_id}@{job.sha}"[:500]
    model.save(update_fields=["source", "source_ref"])
    return model
