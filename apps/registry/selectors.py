from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.registry.models import DistillJob, EmbeddingModel


def embedding_model_list(*, team: Team) -> QuerySet[EmbeddingModel]:
    return EmbeddingModel.objects.filter(team=team).order_by("name")


def embedding_model_get(*, user, pk, role: str = "viewer") -> EmbeddingModel:
    return team_scoped_get(queryset=EmbeddingModel.objects.all(), user=user, pk=pk, role=role)


def distill_job_get(*, user, pk, role: str = "viewer") -> DistillJob:
    return team_scoped_get(
        queryset=DistillJob.objects.select_related("source", "result_model", "evaluate_version"),
        user=user,
        pk=pk,
        role=role,
    )


def distill_summary(*, job: DistillJob) -> dict:
    """What the distillation's speed costs: the two evaluations (source, static) once both
    succeeded, compared query by query as the comparison page does (nDCG@10: delta, interval,
    p-value), beside the measured speed-up; empty parts while they run."""
    from apps.runs.compare import paired_headline
    from apps.runs.models import Evaluation

    ids = job.result.get("evaluations") or {}
    found = {e.pk: e for e in Evaluation.objects.filter(team=job.team, pk__in=ids.values())}
    source, static = found.get(ids.get("source")), found.get(ids.get("static"))
    out: dict = {"speed": job.result.get("speed"), "source_eval": source, "static_eval": static}
    if source and static and source.status == static.status == "succeeded":
        paired = paired_headline(baseline=source, other=static)
        high, low = paired["baseline"], paired["other"]
        out.update(
            metric=paired["metric"],
            source_value=high,
            static_value=low,
            kept=low / high if high else None,
            drop=paired["drop"],
            cell=paired["cell"],
            queries=paired["queries"],
        )
    return out
