from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Team
from apps.core.services import ProgressReporter, job_enqueue
from apps.datasets.models import DatasetVersion
from apps.datasets.selectors import evaluation_inputs
from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation, QueryResult


class EvaluationError(ValueError):
    pass


def evaluation_create(
    *,
    team: Team,
    model: EmbeddingModel,
    dataset_version: DatasetVersion,
    split: str,
    created_by=None,
    enqueue: bool = True,
) -> Evaluation:
    """Create a pending evaluation and enqueue it once the transaction commits."""
    from workers.tasks.evaluation import evaluate

    if model.team_id != team.pk or dataset_version.dataset.team_id != team.pk:
        raise EvaluationError("The model and the dataset must belong to the same team.")
    if split not in dataset_version.qrels_counts:
        known = ", ".join(sorted(dataset_version.qrels_counts)) or "none"
        raise EvaluationError(f"{dataset_version} has no split {split!r} (splits: {known}).")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            team=team,
            model=model,
            dataset_version=dataset_version,
            split=split,
            max_seq_length=model.max_seq_length,
            query_prefix=model.query_prefix,
            document_prefix=model.document_prefix,
            created_by=created_by,
        )
        if enqueue:
            job_enqueue(job=evaluation, task=evaluate)
    return evaluation


def evaluation_execute(*, evaluation: Evaluation, report: ProgressReporter) -> dict:
    """The work of an evaluation: encode, search, score, store per-query rows and the run file.

    Returns the fields that the success transition writes on the row.
    """
    from workers.ml.evaluate import EncoderSpec, evaluate_dense
    from workers.ml.metrics import write_trec_run

    model = evaluation.model
    corpus, queries, qrels = evaluation_inputs(
        version=evaluation.dataset_version, split=evaluation.split
    )
    out = evaluate_dense(
        model=EncoderSpec(
            path=model.path,
            layout=model.layout,
            pooling=model.pooling,
            normalize=model.normalize,
            max_seq_length=evaluation.max_seq_length,
            query_prefix=evaluation.query_prefix,
            document_prefix=evaluation.document_prefix,
        ),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        top_k=evaluation.top_k,
        on_progress=report,
    )
    report("saving", 0, 0)
    folder = Path(settings.ARTIFACTS_ROOT) / "evaluations" / str(evaluation.pk)
    folder.mkdir(parents=True, exist_ok=True)
    run_path = folder / "run.trec"
    write_trec_run(run=out.run, path=run_path, tag=f"embedhub-eval-{evaluation.pk}")
    query_pk = dict(
        evaluation.dataset_version.queries.filter(query_id__in=list(out.per_query)).values_list(
            "query_id", "pk"
        )
    )
    report.check()  # a reaped or cancelled row gets no results
    with transaction.atomic():
        QueryResult.objects.filter(evaluation=evaluation).delete()
        QueryResult.objects.bulk_create(
            QueryResult(evaluation=evaluation, query_id=query_pk[qid], metrics=values)
            for qid, values in out.per_query.items()
        )
    return {
        "metrics": out.metrics,
        "timings": out.timings,
        "document_count": out.documents,
        "query_count": out.queries,
        "run_file": str(run_path),
        "stage": "done",
    }
