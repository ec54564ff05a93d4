from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.accounts.models import Team
from apps.registry.models import EmbeddingModel


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
            "normalize": base.normalize,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "parameters": info.parameters,
            "parent": base,
        },
    )
    return model
