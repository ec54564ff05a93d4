from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.models import JobStatus
from apps.runs.models import Evaluation

QUALITY_METRIC = "ndcg@10"


def evaluation_list(*, team: Team) -> QuerySet[Evaluation]:
    return Evaluation.objects.filter(team=team).select_related("model", "dataset_version__dataset")


def evaluation_get(*, user, pk, role: str = "viewer") -> Evaluation:
    return team_scoped_get(
        queryset=Evaluation.objects.select_related("model", "dataset_version__dataset"),
        user=user,
        pk=pk,
        role=role,
    )


def precision_check(*, model) -> dict | None:
    """How the model's bf16 encode ranks against its fp32 encode: the newest pair of succeeded
    dense evaluations of the model on one dataset version and split, one in each precision, as
    {bf16, fp32, drop (relative), allowed, passed, evaluations}; None while no such pair exists.
    """
    done = Evaluation.objects.filter(
        model=model, method=Evaluation.Method.DENSE, status=JobStatus.SUCCEEDED
    ).order_by("-finished_at", "-pk")
    for bf16 in done.filter(precision_used="bf16").only("dataset_version", "split", "metrics"):
        fp32 = (
            done.filter(
                precision_used="fp32", dataset_version_id=bf16.dataset_version_id, split=bf16.split
            )
            .only("metrics")
            .first()
        )
        if fp32 is None:
            continue
        low, high = bf16.metrics.get(QUALITY_METRIC), fp32.metrics.get(QUALITY_METRIC)
        if low is None or not high:
            continue
        drop = (high - low) / high
        allowed = settings.QUALITY_MAX_DROP
        return {
            "metric": QUALITY_METRIC,
            "bf16": low,
            "fp32": high,
            "drop": drop,
            "allowed": allowed,
            "passed": drop <= allowed,
            "evaluations": [bf16.pk, fp32.pk],
        }
    return None


def model_bf16_proven(*, model) -> bool:
    """Whether precision "auto" may encode with ``model`` in bf16 (see precision_check)."""
    check = precision_check(model=model)
    return bool(check and check["passed"])
