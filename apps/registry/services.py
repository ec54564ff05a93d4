from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q as models_Q

from apps.accounts.models import Team
from apps.registry.models import (
    DistillJob,
    EmbeddingModel,
    HubImport,
    HubPublish,
    MergeJob,
    OptimizeJob,
)
from workers.common.configs.distill import DistillConfig
from workers.common.configs.merge import MergeConfig
from workers.common.configs.optimize import OptimizeConfig, VariantEvaluation
from workers.common.store import artifact_delete


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
    hub_ref: str = "",
) -> EmbeddingModel:
    """Register a base model from a local folder or an installed package that ships one
    (``hub_ref``, ``ORG/NAME@sha``: a folder a Hub import downloaded).

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
        source=EmbeddingModel.Source.HUB
        if hub_ref
        else EmbeddingModel.Source.PACKAGE
        if package
        else EmbeddingModel.Source.FOLDER,
        source_ref=(hub_ref or package or str(path))[:500],
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
    from workers.common.store import artifact_publish

    # A folder under the artifacts folder (a Hub download) goes to the bucket, when there is
    # one, before its row exists; any other folder is the operator's and stays where it is.
    artifact_publish(model.path)
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
    from workers.common.store import artifact_publish

    # With a bucket: whole there before the row that names it exists.
    artifact_publish(model_dir)
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
            "sparse, use it as the lexical side of a hybrid, or as an index's sparse side"
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
    from workers.common.store import artifact_publish

    # With a bucket: whole there before the row that names it exists.
    artifact_publish(path)
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
    from workers.common.store import artifact_publish

    # With a bucket: whole there before the row that names it exists.
    artifact_publish(path)
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


class MergeError(ValueError):
    """A merge that cannot start; the message names the field."""


class MergeNotFound(MergeError):
    """A model named by id that is not the team's (the API answers 404, as for a missing one)."""


# Methods whose models are task vectors against the common base.
MERGE_NEEDS_BASE = ("ties", "dare", "model_stock")


def _merge_models(
    *, team: Team, config: MergeConfig
) -> tuple[list[EmbeddingModel], EmbeddingModel | None]:
    """The models and the base of ``config``, in its order, resolved in ``team``; each one
    an embedding model with whole torch weights."""
    if len(set(config.models)) != len(config.models):
        raise MergeError("models: a model is listed twice")
    found = EmbeddingModel.objects.filter(team=team).in_bulk(config.models)
    for pk in config.models:
        if pk not in found:
            raise MergeNotFound(f"models: no model {pk} in your team")
    parents = [found[pk] for pk in config.models]
    base = None
    if config.base is not None:
        base = EmbeddingModel.objects.filter(team=team, pk=config.base).first()
        if base is None:
            raise MergeNotFound(f"base: no model {config.base} in your team")
        if base.pk in found:
            raise MergeError(f"base: {base.name} is also one of the models")
    for field, model in [*(("models", m) for m in parents), *([("base", base)] if base else [])]:
        embedding_model_require_role(model=model, role="embedding", field=field, error=MergeError)
        if model.kind in (EmbeddingModel.Kind.STATIC, EmbeddingModel.Kind.OPTIMIZED) or (
            model.layout == "onnx"
        ):
            raise MergeError(
                f"{field}: {model.name} is {model.get_kind_display().lower()}: it has no "
                "transformer weights to merge; merge the models it was made from"
            )
        from workers.common.store import artifact_ensure

        if (artifact_ensure(model.path) / "adapter_config.json").is_file():
            raise MergeError(
                f"{field}: {model.name} is an unmerged LoRA adapter; train it with merge_lora "
                "(its weights are then a whole model's) to merge it"
            )
    first = parents[0]
    others = [*(("models", m) for m in parents[1:]), *([("base", base)] if base else [])]
    for field, model in others:
        # Parameter counts are not compared: a saved integer buffer (position ids) differs
        # between transformers versions. The worker compares every weight tensor by name and
        # shape and names the first that differs.
        if model.dimension != first.dimension:
            raise MergeError(
                f"{field}: {model.name} ({model.dimension} dimensions) is not of {first.name}'s "
                f"architecture ({first.dimension} dimensions): only models of one architecture "
                "merge"
            )
    return parents, base


def _merge_shape(*, config: MergeConfig, parents: list, base) -> None:
    """What each method needs: how many models, a base or none, weights of the right count."""
    method, n = config.method, len(parents)
    endpoints = n + (1 if base is not None else 0)
    if method in ("soup", "greedy_soup"):
        if base is not None:
            raise MergeError(f"base: {method} averages the models themselves; leave the base "
                             "empty (or choose linear to include it)")  # fmt: skip
        if n < 2:
            raise MergeError(f"models: {method} needs at least two models")
        if config.weights is not None:
            raise MergeError("weights: a soup weighs every model the same; choose linear")
    if method in MERGE_NEEDS_BASE and base is None:
        raise MergeError(
            f"base: {method} works on task vectors (each model minus the base): choose the "
            "common base model"
        )
    if method == "model_stock" and n < 2:
        raise MergeError("models: Model Stock needs at least two fine-tuned models")
    if method == "linear" and endpoints < 2:
        raise MergeError("models: a linear merge needs two models, or one model and a base")
    if method == "slerp" and endpoints != 2:
        raise MergeError(
            f"models: SLERP takes exactly two end points (two models, or one model and its "
            f"base), not {endpoints}"
        )
    if config.weights is not None:
        expected = endpoints if method in ("linear", "slerp") else n
        if method == "model_stock":
            raise MergeError("weights: Model Stock sets its own ratio per layer; leave empty")
        if len(config.weights) != expected:
            what = "model (the base last)" if method in ("linear", "slerp") and base else "model"
            raise MergeError(f"weights: {len(config.weights)} given, one per {what} is "
                             f"{expected}")  # fmt: skip
        if sum(config.weights) <= 0:
            raise MergeError("weights: at least one weight must be above 0")
    if config.search:
        if method not in ("linear", "slerp") or endpoints != 2:
            raise MergeError(
                "search: the weight search is for linear or SLERP between two end points (two "
                "models, or one model and its base)"
            )
        if config.weights is not None:
            raise MergeError("weights: the search chooses the weights; leave them empty")


def merge_job_create(
    *,
    team: Team,
    config: MergeConfig,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> MergeJob:
    """Check a merge now (a wrong field is a message, not a failed job) and queue it on the
    encode queue once the transaction commits. Models, base and version are resolved in
    ``team``: another team's id reads as missing (``MergeNotFound``)."""
    from apps.core.services import job_create_once, job_enqueue, job_fingerprint
    from apps.datasets.models import DatasetVersion
    from workers.tasks.merge import merge

    parents, base = _merge_models(team=team, config=config)
    _merge_shape(config=config, parents=parents, base=base)
    version, dev, test = None, config.dev_split or "", config.test_split or ""
    if config.evaluate_version is not None:
        version = DatasetVersion.objects.filter(
            dataset__team=team, pk=config.evaluate_version
        ).first()
        if version is None:
            raise MergeError("evaluate_version: no such dataset version in your team")
        known = ", ".join(sorted(version.qrels_counts)) or "none"
        for field, split in (("dev_split", dev), ("test_split", test)):
            if split and split not in version.qrels_counts:
                raise MergeError(f"{field}: {version} has no judged split {split!r} "
                                 f"(splits: {known})")  # fmt: skip
        if not test and "test" in version.qrels_counts and dev != "test":
            test = "test"
    elif dev or test:
        raise MergeError("evaluate_version: choose the dataset version the splits are of")
    if (config.search or config.method == "greedy_soup") and not dev:
        raise MergeError(
            "dev_split: the "
            + ("weight search" if config.search else "greedy soup")
            + " chooses on a dev split: choose a version and a judged split of it"
        )
    if dev and dev == test:
        raise MergeError(
            f"test_split: {test} is the dev split too; the merge is chosen on dev and reported "
            "on test, so they must differ"
        )
    name = (config.name or "").strip()
    if name and EmbeddingModel.objects.filter(team=team, name=name).exists():
        raise MergeError(f"name: {team} already has a model named {name!r}")

    def create() -> MergeJob:
        job = MergeJob.objects.create(
            team=team, base=base, method=config.method, params=config.model_dump(),
            evaluate_version=version, dev_split=dev, test_split=test, created_by=created_by,
        )  # fmt: skip
        job.parents.set(parents)
        if enqueue:
            job_enqueue(job=job, task=merge)
        return job

    return job_create_once(
        model=MergeJob,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(kind="merge", **config.model_dump()),
        idempotency_key=idempotency_key,
        create=create,
    )


@transaction.atomic
def embedding_model_register_merged(
    *, job: MergeJob, path: str, lineage: dict, parameters: int | None = None
) -> EmbeddingModel:
    """A merge's result as a registry model: encoded as its first parent is (its tokenizer,
    pooling and modules are in the folder), the base (else the first parent) as parent, the
    lineage (every parent, the method, the weights) on the model; keyed on the job so that a
    retry updates its own model."""
    from workers.common.store import artifact_publish

    # With a bucket: whole there before the row that names it exists.
    artifact_publish(path)
    by_id = {m.pk: m for m in job.parents.all()}
    parents = [by_id[pk] for pk in job.model_ids]
    first = parents[0]
    name = (job.params.get("name") or "").strip()
    if not name:
        suffix = f" (merge {job.pk})"
        joined = " + ".join(m.name for m in parents) + (f" + {job.base.name}" if job.base else "")
        name = f"{job.method_label} of {joined}"[: 200 - len(suffix)] + suffix
    model, _ = EmbeddingModel.objects.update_or_create(
        team=job.team,
        source_ref=f"merge {job.pk}",
        kind=EmbeddingModel.Kind.MERGED,
        defaults={
            "name": name,
            "source": EmbeddingModel.Source.FOLDER,
            "path": path,
            "layout": first.layout,
            "architecture": first.architecture,
            "dimension": first.dimension,
            "max_seq_length": first.max_seq_length,
            "pooling": first.pooling,
            "normalize": first.normalize,
            "query_prefix": first.query_prefix,
            "document_prefix": first.document_prefix,
            "parameters": first.parameters if parameters is None else parameters,
            "parent": job.base or first,
            "merge": {"job": job.pk, **lineage},
        },
    )
    return model


class ModelInUse(ValueError):
    """A model that something still refers to; the message says what."""


def embedding_model_delete(*, model: EmbeddingModel) -> None:
    """Delete a registered model that nothing refers to (evaluations, index builds, runs,
    curation and derivation jobs, derived models): the message lists what does. The files go
    too, but only those EmbedHub wrote under ARTIFACTS_ROOT (a fine-tune, a distillation, an
    optimized variant); a folder or package a model was registered from is never touched."""
    from pathlib import Path

    from apps.indexes.models import Deployment, IndexBuild, ModelUpgrade
    from apps.runs.models import Evaluation
    from apps.runs.training import _inside_artifacts

    uses = [
        # The model an upgrade moves to (a PROTECT link; the old one is its index's model).
        (ModelUpgrade.objects.filter(new_model=model).count(), "model upgrade"),
        (
            Deployment.objects.filter(team=model.team, rerank__model=model.pk).count(),
            "deployment's rerank stage",
        ),
        (
            Evaluation.objects.filter(team=model.team, fusion__lexical_model=model.pk).count(),
            "hybrid evaluation",
        ),
        (
            IndexBuild.objects.filter(team=model.team, params__sparse_model=model.pk).count(),
            "index's sparse side",
        ),
        (model.evaluations.count(), "evaluation"),
        (model.index_builds.count(), "index"),
        (model.training_runs.count(), "training run"),
        (model.children.count(), "derived model"),
        (model.distill_jobs.count() + model.optimize_jobs.count(), "distillation or optimization"),
        (model.merge_jobs.count() + model.merge_base_jobs.count(), "merge job"),
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
             EmbeddingModel.Kind.OPTIMIZED, EmbeddingModel.Kind.MERGED)  # fmt: skip
    from django.db.models import ProtectedError

    with transaction.atomic():
        try:
            model.delete()
        except ProtectedError as exc:  # a reference added since the count above
            raise ModelInUse(f"{model.name} is still in use ({exc.args[0]})") from None
        # A Hub model's folder is EmbedHub's download (hub/models/<job>/repo) too.
        written = model.kind in kinds or model.source == EmbeddingModel.Source.HUB
        if written and _inside_artifacts(folder):
            transaction.on_commit(lambda: artifact_delete(folder))


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


PUBLISHABLE = (EmbeddingModel.Kind.FINETUNED, EmbeddingModel.Kind.OPTIMIZED,
               EmbeddingModel.Kind.STATIC, EmbeddingModel.Kind.MERGED)  # fmt: skip


def hub_publish_create(
    *, team: Team, model: EmbeddingModel, repo_id: str, private: bool = True, created_by=None,
    enqueue: bool = True,
) -> HubPublish:  # fmt: skip
    """Queue a push of ``model`` (one the team made: fine-tuned, merged, optimized, static) to
    the Hub repo ``repo_id``, with its generated model card."""
    from apps.core.services import job_enqueue
    from workers.common.hub import hub_name_problem
    from workers.tasks.hub import hub_publish

    if model.team_id != team.pk:
        raise HubImportError("model: not found.")
    if model.kind not in PUBLISHABLE:
        raise HubImportError(
            f"model: {model.name} is a {model.get_kind_display().lower()}: publish a model "
            "made here (fine-tuned, merged, optimized or static), not someone else's."
        )
    repo_id = (repo_id or "").strip()
    if problem := hub_name_problem(repo_id=repo_id):
        raise HubImportError(f"repo_id: {problem}")
    with transaction.atomic():
        job = HubPublish.objects.create(team=team, model=model, repo_id=repo_id,
                                        private=private, created_by=created_by)  # fmt: skip
        if enqueue:
            job_enqueue(job=job, task=hub_publish)
    return job


def embedding_model_register_hub(*, job: HubImport, path: str) -> EmbeddingModel:
    """Register the model a Hub import downloaded: read as a folder is, its source the repo
    and the commit it resolved to (shown on its page, used again by nobody's path)."""
    from django.db import IntegrityError

    try:
        with transaction.atomic():
            return embedding_model_register(team=job.team, name=job.name, path=path,
                                            hub_ref=f"{job.repo_id}@{job.sha}")  # fmt: skip
    except IntegrityError as exc:  # the name was taken while the files came down
        raise ModelRegistrationError(
            f"name: {job.team} already has a model named {job.name!r}."
        ) from exc
