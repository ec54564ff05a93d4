"""REST API of the model registry (read-only): base models and their fine-tuned versions.

Everything needed to encode the way a model was trained is here — pooling, normalisation,
prefixes, max length — as well as its lineage: the parent model and the training run that
made it. A token sees its own team's models only; another team's is a 404 like a missing one.
"""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, JsonResponse
from ninja import Router, Schema

from apps.accounts.api import ERRORS, not_found
from apps.accounts.models import Team
from apps.registry.models import EmbeddingModel
from apps.registry.selectors import embedding_model_list
from apps.runs.models import TrainingRun

router = Router(tags=["registry"])


class ModelOut(Schema):
    id: int
    name: str
    kind: str
    source: str
    source_ref: str
    layout: str
    architecture: str
    dimension: int
    max_seq_length: int
    pooling: str
    normalize: bool
    query_prefix: str
    document_prefix: str
    parameters: int | None
    parent: int | None
    training_run: int | None
    created_at: str


class ModelListOut(Schema):
    models: list[ModelOut]


def _models(team: Team) -> QuerySet[EmbeddingModel]:
    # The run whose result a fine-tuned model is: one subquery, not one query per model.
    made_by = TrainingRun.objects.filter(result_model=OuterRef("pk")).order_by("-created_at")
    return embedding_model_list(team=team).annotate(
        training_run_id=Subquery(made_by.values("pk")[:1])
    )


def model_payload(model: EmbeddingModel) -> dict:
    return {
        "id": model.pk,
        "name": model.name,
        "kind": model.kind,
        "source": model.source,
        "source_ref": model.source_ref,
        "layout": model.layout,
        "architecture": model.architecture,
        "dimension": model.dimension,
        "max_seq_length": model.max_seq_length,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "query_prefix": model.query_prefix,
        "document_prefix": model.document_prefix,
        "parameters": model.parameters,
        "parent": model.parent_id,
        "training_run": model.training_run_id,
        "created_at": model.created_at.isoformat(),
    }


@router.get("/models", url_name="models", response={200: ModelListOut, **ERRORS})
def models(request: HttpRequest) -> dict:
    """The team's models by name: base models and fine-tuned versions."""
    return {"models": [model_payload(m) for m in _models(request.team)]}


@router.get("/models/{int:pk}", url_name="model", response={200: ModelOut, **ERRORS})
def model_detail(request: HttpRequest, pk: int) -> dict | JsonResponse:
    """One model: dimension, pooling, normalisation, prefixes, max length, lineage."""
    model = _models(request.team).filter(pk=pk).first()
    if model is None:
        return not_found()
    return model_payload(model)
