from __future__ import annotations

from django.conf import settings
from django.db.models import F, QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.listing import Sort
from apps.core.models import JobStatus
from apps.runs.models import Evaluation, TrainingRun

QUALITY_METRIC = "ndcg@10"


def evaluation_list(*, team: Team) -> QuerySet[Evaluation]:
    return Evaluation.objects.filter(team=team).select_related(
        "model", "dataset_version__dataset", "first_stage__model"
    )


# The list page's sort keys (``apps.core.listing``): newest first by default; a metric best
# first, unscored last.
EVALUATION_SORTS = {
    "new": Sort("newest first", ("-created_at", "-pk"), "▼"),
    "old": Sort("oldest first", ("created_at", "pk"), "▲"),
    **{
        metric: Sort(f"{label}, best first",
                     (F(f"metrics__{metric}").desc(nulls_last=True), "-pk"), "▼")
        for metric, label in (("ndcg@10", "nDCG@10"), ("mrr@10", "MRR@10"),
                              ("recall@100", "Recall@100"))
    },
}  # fmt: skip


# The training runs list's sort keys: newest first by default.
TRAINING_SORTS = {
    "new": Sort("newest first", ("-created_at", "-pk"), "▼"),
    "old": Sort("oldest first", ("created_at", "pk"), "▲"),
    "name": Sort("name", ("name", "pk"), "▲"),
}


def training_run_list(*, team: Team) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(team=team).select_related("base_model", "result_model")


def evaluation_get(*, user, pk, role: str = "viewer") -> Evaluation:
    return team_scoped_get(
        queryset=Evaluation.objects.select_related("model", "dataset_version__dataset"),
        user=user,
        pk=pk,
        role=role,
    )


def precision_check(*, model) -> dict | None:
    """How the model's bf16 encode ranks against its fp32 encode: the newest pair of succeeded
    dense evaluations of the model on one dataset version and split, one in each precision,
    compared query by query as the comparison page does (nDCG@10: delta, bootstrap interval,
    randomization-test p-value). It passes when the relative drop is within
    ``QUALITY_MAX_DROP`` and bf16 is not significantly worse. None while no such pair exists.
    """
    from apps.runs.compare import paired_headline

    done = Evaluation.objects.filter(
        model=model, method=Evaluation.Method.DENSE, status=JobStatus.SUCCEEDED
    ).order_by("-finished_at", "-pk")
    for bf16 in done.filter(precision_used="bf16"):
        fp32 = done.filter(
            precision_used="fp32",
            dataset_version_id=bf16.dataset_version_id,
            split=bf16.split,
            # The same encoding setup but the precision: otherwise the pair compares two things.
            max_seq_length=bf16.max_seq_length,
            query_prefix=bf16.query_prefix,
            document_prefix=bf16.document_prefix,
        ).first()
        if fp32 is None:
            continue
        if not fp32.metrics.get(QUALITY_METRIC) or QUALITY_METRIC not in bf16.metrics:
            continue
        paired = paired_headline(baseline=fp32, other=bf16, metric=QUALITY_METRIC)
        cell, drop = paired["cell"], paired["drop"]
        allowed = settings.QUALITY_MAX_DROP
        worse = cell.significant and (cell.delta or 0.0) < 0
        return {
            "metric": QUALITY_METRIC,
            "bf16": paired["other"],
            "fp32": paired["baseline"],
            "drop": drop,
            "allowed": allowed,
            "delta": cell.delta,
            "interval": cell.ci_text,
            "p_value": cell.p_perm_holm,
            "significantly_worse": worse,
            "queries": paired["queries"],
            "passed": drop <= allowed and not worse,
            "evaluations": [bf16.pk, fp32.pk],
        }
    return None


def model_bf16_proven(*, model) -> bool:
    """Whether precision "auto" may encode with ``model`` in bf16 (see precision_check)."""
    check = precision_check(model=model)
    return bool(check and check["passed"])


def evaluation_same(*, version, model, config) -> Evaluation | None:
    """A succeeded evaluation of the same model (none for BM25), version, split, asked
    precision and fusion settings as ``config`` (an EvaluationConfig): its figures are what a
    new one would give."""
    rows = Evaluation.objects.filter(
        dataset_version=version,
        method=config.method,
        split=config.split,
        status=JobStatus.SUCCEEDED,
        fusion=config.fusion_settings(),
    )
    if config.method == "bm25":
        rows = rows.filter(model__isnull=True)
    elif config.method == "rerank":
        rows = rows.filter(model=model, first_stage_id=config.first_stage,
                           precision="bf16" if config.precision == "bf16" else "fp32")  # fmt: skip
    elif config.method == "sparse":
        rows = rows.filter(model=model)  # fp32 always, whatever was asked
    else:
        rows = rows.filter(model=model, precision=config.precision)
    return rows.order_by("-finished_at", "-pk").first()
