from __future__ import annotations

from django.db import transaction

from apps.accounts.models import Team
from apps.core.models import JobStatus, Precision
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation, QueryResult
from workers.common.store import artifact_delete


class EvaluationError(ValueError):
    pass


def evaluation_create(
    *,
    team: Team,
    model: EmbeddingModel | None,
    dataset_version: DatasetVersion,
    split: str,
    method: str = Evaluation.Method.DENSE,
    precision: str = Precision.AUTO,
    fusion: dict | None = None,
    first_stage: Evaluation | None = None,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> Evaluation:
    """Create a pending evaluation and enqueue it once the transaction commits.

    ``method="bm25"`` is the lexical baseline and takes no model (nor a precision).
    ``method="hybrid"`` fuses the model's list with BM25's as ``fusion`` says
    (``EvaluationConfig.fusion_settings()``; the config's defaults when None).
    ``method="rerank"``: ``model`` is a reranker that reorders the top ``fusion["k_prime"]``
    (default 100) of ``first_stage``'s lists, a succeeded evaluation of the same version and
    split.
    ``precision`` is what the encode is asked to run in; the worker records what it used.
    """
    from workers.common.configs.evaluation import EvaluationConfig
    from workers.tasks.evaluation import evaluate

    if method not in Evaluation.Method.values:
        raise EvaluationError(f"Unknown method {method!r}.")
    if precision not in Precision.values:
        raise EvaluationError(f"Unknown precision {precision!r}.")
    if method == Evaluation.Method.BM25:
        model, precision = None, Precision.FP32
    elif method == Evaluation.Method.SPARSE:
        precision = Precision.FP32
    elif model is None:
        raise EvaluationError(
            "model: choose a reranker" if method == Evaluation.Method.RERANK
            else "Choose a model to evaluate."
        )  # fmt: skip
    from apps.registry.services import embedding_model_require_role

    if model is not None and model.team_id != team.pk:
        raise EvaluationError("The model and the dataset must belong to the same team.")
    if model is not None:
        roles = {Evaluation.Method.RERANK: "reranker", Evaluation.Method.SPARSE: "sparse"}
        embedding_model_require_role(
            model=model, role=roles.get(method, "embedding"), field="model", error=EvaluationError
        )
    if (
        model is not None and model.team_id != team.pk
    ) or dataset_version.dataset.team_id != team.pk:
        raise EvaluationError("The model and the dataset must belong to the same team.")
    if split not in dataset_version.qrels_counts:
        known = ", ".join(sorted(dataset_version.qrels_counts)) or "none"
        raise EvaluationError(f"{dataset_version} has no split {split!r} (splits: {known}).")
    fusion_settings = {}
    if method == Evaluation.Method.RERANK:
        fusion_settings = _rerank_settings(
            team=team, first_stage=first_stage, version=dataset_version, split=split,
            options=fusion or {},
        )  # fmt: skip
        # bf16 when asked for by name (and native where it runs); auto means fp32 here.
        precision = Precision.BF16 if precision == Precision.BF16 else Precision.FP32
    else:
        first_stage = None
    if method == Evaluation.Method.HYBRID:
        from pydantic import ValidationError

        from workers.common.configs.problems import config_problems

        try:
            config = EvaluationConfig(
                method="hybrid", model=model.pk, split=split, **(fusion or {})
            )
        except ValidationError as exc:
            raise EvaluationError(
                "; ".join(f"{f}: {why}" for f, why in config_problems(exc))
            ) from None
        fusion_settings = config.fusion_settings()
        if lexical := fusion_settings.get("lexical_model"):
            sparse = EmbeddingModel.objects.filter(team=team, pk=lexical).first()
            if sparse is None:
                raise EvaluationError("lexical_model: no such model in your team")
            embedding_model_require_role(
                model=sparse, role="sparse", field="lexical_model", error=EvaluationError
            )
        tune = fusion_settings.get("tune_split")
        if tune and tune not in dataset_version.qrels_counts:
            known = ", ".join(sorted(dataset_version.qrels_counts)) or "none"
            raise EvaluationError(
                f"tune_split: {dataset_version} has no split {tune!r} (splits: {known})."
            )

    def create() -> Evaluation:
        evaluation = Evaluation.objects.create(
            team=team,
            method=method,
            model=model,
            dataset_version=dataset_version,
            split=split,
            max_seq_length=model.max_seq_length if model else 0,
            query_prefix=model.query_prefix if model else "",
            document_prefix=model.document_prefix if model else "",
            precision=precision,
            fusion=fusion_settings,
            first_stage=first_stage,
            created_by=created_by,
        )
        if enqueue:
            job_enqueue(job=evaluation, task=evaluate)
        return evaluation

    evaluation = job_create_once(
        model=Evaluation,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(
            kind="evaluation",
            method=method,
            model=model.pk if model else None,
            version=dataset_version.pk,
            split=split,
            precision=precision,
            **({"fusion": fusion_settings} if fusion_settings else {}),
            **({"first_stage": first_stage.pk} if first_stage is not None else {}),
        ),
        idempotency_key=idempotency_key,
        create=create,
    )
    return evaluation


def _rerank_settings(
    *, team: Team, first_stage: Evaluation | None, version: DatasetVersion, split: str,
    options: dict,
) -> dict:  # fmt: skip
    """A rerank's {k_prime}, once its first stage is known to be rerankable: the team's,
    succeeded, with a run file, on the same version and split (so the paired test against it
    is over the same queries)."""
    from pydantic import ValidationError

    from workers.common.configs.evaluation import EvaluationConfig
    from workers.common.configs.problems import config_problems

    if first_stage is None or first_stage.team_id != team.pk:
        raise EvaluationError("first_stage: no such evaluation in your team")
    if first_stage.status != "succeeded" or not first_stage.run_file:
        raise EvaluationError(
            f"first_stage: evaluation #{first_stage.pk} has not succeeded, so it has no ranked "
            "lists to rerank yet"
        )
    if first_stage.dataset_version_id != version.pk or first_stage.split != split:
        raise EvaluationError(
            f"first_stage: evaluation #{first_stage.pk} ran on {first_stage.dataset_version} "
            f"{first_stage.split}; rerank it on the same version and split"
        )
    try:
        config = EvaluationConfig(
            method="rerank", model=1, split=split, first_stage=first_stage.pk,
            **{k: v for k, v in options.items() if k == "k_prime"},
        )  # fmt: skip
    except ValidationError as exc:
        raise EvaluationError("; ".join(f"{f}: {why}" for f, why in config_problems(exc))) from None
    return config.fusion_settings()


def evaluation_results_record(
    *, evaluation: Evaluation, per_query: dict[str, dict[str, float]]
) -> None:
    """Replace an evaluation's per-query results (query id → metric values) in one
    transaction: a retried evaluation never keeps a mix of two runs' rows."""
    query_pk = dict(
        evaluation.dataset_version.queries.filter(query_id__in=list(per_query)).values_list(
            "query_id", "pk"
        )
    )
    with transaction.atomic():
        QueryResult.objects.filter(evaluation=evaluation).delete()
        QueryResult.objects.bulk_create(
            QueryResult(evaluation=evaluation, query_id=query_pk[qid], metrics=values)
            for qid, values in per_query.items()
        )


def evaluation_rerun(*, evaluation: Evaluation, created_by=None) -> Evaluation:
    """A failed or cancelled evaluation, run again with the same model, data and settings (a
    new row: the failed one stays, with its error, until deleted). A succeeded one is refused:
    the same settings give the same figures."""
    if evaluation.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise EvaluationError(
            f"Evaluation #{evaluation.pk} is {evaluation.status}: only a failed or cancelled "
            "evaluation is run again (change a setting on the data's page for a new one)."
        )
    if evaluation.method == Evaluation.Method.RERANK and evaluation.first_stage_id is None:
        raise EvaluationError(
            f"Evaluation #{evaluation.pk} reranked a first stage that was deleted since."
        )
    return evaluation_create(
        team=evaluation.team,
        model=evaluation.model,
        dataset_version=evaluation.dataset_version,
        split=evaluation.split,
        method=evaluation.method,
        precision=evaluation.precision,
        fusion=evaluation.fusion or None,
        first_stage=evaluation.first_stage,
        created_by=created_by,
    )


def evaluation_delete(*, evaluation: Evaluation) -> None:
    """Delete an evaluation, its per-query rows and its run file. A running one must be
    cancelled first. The embedding cache it filled stays: other jobs share it."""
    from pathlib import Path

    from django.conf import settings

    folder = Path(settings.ARTIFACTS_ROOT) / "evaluations" / str(evaluation.pk)
    with transaction.atomic():
        row = Evaluation.objects.select_for_update().get(pk=evaluation.pk)
        if row.is_active:
            raise EvaluationError(f"Evaluation #{row.pk} is {row.status}; cancel it first.")
        waiting = row.reranks.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING])
        if waiting.exists():
            raise EvaluationError(
                f"Evaluation #{row.pk} is the first stage of rerank #{waiting.first().pk}, which "
                "has not finished; wait for it or cancel it first."
            )
        row.delete()
        # Files go only once the row is gone for good: a rolled-back delete keeps both.
        transaction.on_commit(lambda: artifact_delete(folder))
