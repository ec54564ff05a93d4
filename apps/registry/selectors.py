from __future__ import annotations

from django.conf import settings
from django.db.models import F, QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.listing import Sort
from apps.registry.models import DistillJob, EmbeddingModel, OptimizeJob


def embedding_model_list(*, team: Team, role: str | None = None) -> QuerySet[EmbeddingModel]:
    """The team's models by name; ``role`` ("embedding" or "reranker") keeps one kind: every
    choice that encodes offers embedding models only, a rerank stage rerankers only."""
    models = EmbeddingModel.objects.filter(team=team).order_by("name")
    return models.filter(role=role) if role else models


# The models list's sort keys (``apps.core.listing``): by name by default.
MODEL_SORTS = {
    "name": Sort("name", ("name", "pk"), "▲"),
    "new": Sort("newest first", ("-created_at", "-pk"), "▼"),
    "old": Sort("oldest first", ("created_at", "pk"), "▲"),
    "params": Sort("parameters, most first",
                   (F("parameters").desc(nulls_last=True), "name", "pk"), "▼"),
    "params_asc": Sort("parameters, fewest first",
                       (F("parameters").asc(nulls_last=True), "name", "pk"), "▲"),
}  # fmt: skip


def embedding_model_get(*, user, pk, role: str = "viewer") -> EmbeddingModel:
    return team_scoped_get(queryset=EmbeddingModel.objects.all(), user=user, pk=pk, role=role)


def distill_job_get(*, user, pk, role: str = "viewer") -> DistillJob:
    return team_scoped_get(
        queryset=DistillJob.objects.select_related("source", "result_model", "evaluate_version"),
        user=user,
        pk=pk,
        role=role,
    )


def optimize_job_get(*, user, pk, role: str = "viewer") -> OptimizeJob:
    return team_scoped_get(
        queryset=OptimizeJob.objects.select_related("source", "result_model", "evaluate_version"),
        user=user,
        pk=pk,
        role=role,
    )


def variant_summary(*, job: DistillJob | OptimizeJob) -> dict:
    """What a derived model's speed costs: the two evaluations (source, variant) once both
    succeeded, compared query by query as the comparison page does (nDCG@10: delta, interval,
    p-value), beside the measured speed-up; empty parts while they run. A distillation records
    its variant as "static", an optimization as "variant"."""
    from apps.runs.compare import paired_headline
    from apps.runs.models import Evaluation

    ids = job.result.get("evaluations") or {}
    variant_id = ids.get("variant", ids.get("static"))
    found = {e.pk: e for e in Evaluation.objects.filter(team=job.team, pk__in=ids.values())}
    source, variant = found.get(ids.get("source")), found.get(variant_id)
    speed = dict(job.result.get("speed") or {})
    if speed:
        speed.setdefault("variant_docs_per_s", speed.get("static_docs_per_s"))
    out: dict = {"speed": speed or None, "source_eval": source, "variant_eval": variant,
                 "bar_pct": settings.QUALITY_MAX_DROP * 100}  # fmt: skip
    if source and variant and source.status == variant.status == "succeeded":
        paired = paired_headline(baseline=source, other=variant)
        high, low = paired["baseline"], paired["other"]
        out.update(
            metric=paired["metric"],
            source_value=high,
            variant_value=low,
            kept=low / high if high else None,
            kept_pct=low / high * 100 if high else None,
            drop=paired["drop"],
            drop_pct=None if paired["drop"] is None else paired["drop"] * 100,
            below_bar=paired["drop"] is not None and paired["drop"] > settings.QUALITY_MAX_DROP,
            cell=paired["cell"],
            queries=paired["queries"],
        )
    return out
