from __future__ import annotations

from django.conf import settings
from django.db.models import F, QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.listing import Sort
from apps.registry.models import (
    DistillJob,
    EmbeddingModel,
    HubImport,
    HubPublish,
    MergeJob,
    OptimizeJob,
)


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


def hub_import_get(*, user, pk, role: str = "viewer") -> HubImport:
    return team_scoped_get(
        queryset=HubImport.objects.select_related("result_model", "result_version__dataset"),
        user=user, pk=pk, role=role,
    )  # fmt: skip


def hub_publish_get(*, user, pk, role: str = "viewer") -> HubPublish:
    return team_scoped_get(queryset=HubPublish.objects.select_related("model"), user=user, pk=pk,
                           role=role)  # fmt: skip


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


def merge_job_get(*, user, pk, role: str = "viewer") -> MergeJob:
    return team_scoped_get(
        queryset=MergeJob.objects.select_related("base", "result_model", "evaluate_version"),
        user=user,
        pk=pk,
        role=role,
    )


def merge_summary(*, job: MergeJob) -> dict:
    """The merge against each parent on the test split: the evaluations the job queued (the
    merge's and each parent's) and, once all succeeded, the comparison page's paired test with
    the merge as baseline (Holm across the parents), each parent's row turned round to read
    "merge − parent"; empty parts while they run."""
    from apps.runs.compare import comparison_build
    from apps.runs.models import Evaluation

    ids = job.result.get("evaluations") or {}
    found = {e.pk: e for e in Evaluation.objects.filter(team=job.team, pk__in=ids.values())
             .select_related("model")}  # fmt: skip
    merged = found.get(ids.get("merge"))
    parents = [(label, found.get(pk)) for label, pk in ids.items() if label != "merge"]
    out: dict = {"merge_eval": merged, "parent_evals": [e for _, e in parents if e],
                 "rows": [], "compare_ids": list(ids.values())}  # fmt: skip
    every = [merged, *(e for _, e in parents)]
    out["active"] = any(e is not None and e.is_active for e in every)
    if not merged or any(e is None or e.status != "succeeded" for e in every):
        return out
    comparison = comparison_build(evaluations=every, baseline=merged)
    row = comparison.row("ndcg@10")
    for cell in row.cells:
        if cell.is_baseline:
            continue
        flip = lambda v: None if v is None else -v  # noqa: E731 (parent − merge → merge − parent)
        delta = flip(cell.delta)
        out["rows"].append({
            "evaluation": cell.evaluation,
            "model": cell.evaluation.model,
            "value": cell.value,
            "merge_value": merged.metrics.get("ndcg@10"),
            "delta": delta,
            "ci_low": flip(cell.ci_high),
            "ci_high": flip(cell.ci_low),
            "p": cell.p_perm_holm,
            "p_label": cell.p_label,
            "significant": cell.significant,
            "verdict": ("better" if delta > 0 else "worse") if cell.significant else "no different",
        })  # fmt: skip
    out["queries"] = comparison.n_queries
    out["beats_all"] = bool(out["rows"]) and all(
        r["significant"] and r["delta"] > 0 for r in out["rows"]
    )
    return out
