from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.registry.models import EmbeddingModel


def embedding_model_list(*, team: Team) -> QuerySet[EmbeddingModel]:
    return EmbeddingModel.objects.filter(team=team).order_by("name")


def embedding_model_get(*, user, pk, role: str = "viewer") -> EmbeddingModel:
    return team_scoped_get(queryset=EmbeddingModel.objects.all(), user=user, pk=pk, role=role)
