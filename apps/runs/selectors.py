from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.runs.models import Evaluation


def evaluation_list(*, team: Team) -> QuerySet[Evaluation]:
    return Evaluation.objects.filter(team=team).select_related("model", "dataset_version__dataset")


def evaluation_get(*, user, pk, role: str = "viewer") -> Evaluation:
    return team_scoped_get(
        queryset=Evaluation.objects.select_related("model", "dataset_version__dataset"),
        user=user,
        pk=pk,
        role=role,
    )
