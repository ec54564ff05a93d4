from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Team
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets.models import DatasetVersion
from apps.datasets.selectors import evaluation_inputs
from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation, QueryResult
from workers.tasks.runtime import ProgressReporter


class EvaluationError(ValueError):
    pass


def evaluation_create(
    *,
    team: Team,
    model: EmbeddingModel | None,
    dataset_version: DatasetVersion,
    split: str,
    method: str = Evaluation.Method.DENSE,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> Evaluation:
    """Create a pending evaluation and enqueue it once the transaction commits.

    ``method="bm25"`` is the lexical baseline and takes no model.
    """
    from workers.tasks.evaluation import evaluate

    if method not in Evaluation.Method.values:
        raise EvaluationError(f"Unknown method {method!r}.")
    if method == Evaluation.Method.BM25:
        model = None
    elif model is None:
        raise EvaluationError("Choose a model to evaluate.")
    if (
        model is not None and model.team_id != team.pk
    ) or dataset_version.dataset.team_id != team.pk:
        raise EvaluationError("The model and the dataset must belong to the same team.")
    if split not in dataset_version.qrels_counts:
        known = ", ".join(sorted(dataset_version.qrels_counts)) or "none"
        raise EvaluationError(f"{dataset_version} has no split {split!r} (splits: {known}).")

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
        ),
        idempotency_key=idempotency_key,
        create=create,
    )
    return evaluation


def embedding_cache():
    from workers.ml.cache import EmbeddingCache

    return EmbeddingCache(Path(settings.ARTIFACTS_ROOT) / "embeddings")


def embedding_keys(
    *,
    model: EmbeddingModel,
    version: DatasetVersion,
    split: str,
    max_seq_length: int,
    query_prefix: str,
    document_prefix: str,
) -> tuple[str, str]:
    """Cache keys of a version's documents and of a split's queries under one encoding setup.

    Everything that changes a vector is in the key, so a hit is always the right vectors; the
    same keys serve evaluations and index builds.
    """
    from workers.ml.cache import embedding_key, model_fingerprint

    common = {
        "model": model_fingerprint(model.path),
        "layout": model.layout,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_length": max_seq_length,
        "data": version.content_hash,
    }
    return (
        embedding_key(kind="documents", prefix=document_prefix, **common),
        embedding_key(kind="queries", split=split, prefix=query_prefix, **common),
    )


def encoding_for(*, job, split: str | None = None):
    """(EncoderSpec, document cache key, query cache key) of a job that encodes a version with
    a model as it records them (an Evaluation or an IndexBuild: model, dataset_version, split,
    max_seq_length and both prefixes): one encoding setup, one pair of cache entries."""
    from workers.ml.evaluate import EncoderSpec

    model = job.model
    document_key, query_key = embedding_keys(
        model=model,
        version=job.dataset_version,
        split=job.split if split is None else split,
        max_seq_length=job.max_seq_length,
        query_prefix=job.query_prefix,
        document_prefix=job.document_prefix,
    )
    spec = EncoderSpec(
        path=model.path,
        layout=model.layout,
        pooling=model.pooling,
        normalize=model.normalize,
        max_seq_length=job.max_seq_length,
        query_prefix=job.query_prefix,
        document_prefix=job.document_prefix,
    )
    return spec, document_key, query_key


def evaluation_execute(*, evaluation: Evaluation, report: ProgressReporter) -> dict:
    """The work of an evaluation: encode (or read the cache), search, score, store per-query
    rows and the run file. Returns the fields that the success transition writes on the row.
    """
    from workers.ml.evaluate import evaluate_bm25, evaluate_dense
    from workers.ml.metrics import write_trec_run

    corpus, queries, qrels = evaluation_inputs(
        version=evaluation.dataset_version, split=evaluation.split
    )
    document_key = ""
    if evaluation.method == Evaluation.Method.BM25:
        out = evaluate_bm25(
            corpus=corpus, queries=queries, qrels=qrels, top_k=evaluation.top_k, on_progress=report
        )
    else:
        spec, document_key, query_key = encoding_for(job=evaluation)
        out = evaluate_dense(
            model=spec,
            corpus=corpus,
            queries=queries,
            qrels=qrels,
            top_k=evaluation.top_k,
            on_progress=report,
            cache=embedding_cache(),
            document_key=document_key,
            query_key=query_key,
        )
    sweep, diagnostics = _analyse(out=out, corpus=corpus, queries=queries, qrels=qrels,
                                  report=report)  # fmt: skip
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
        "embedding_key": document_key,
        "cache_hit": out.cache_hit,
        "sweep": sweep,
        "diagnostics": diagnostics,
        "stage": "done",
    }


def _analyse(*, out, corpus, queries, qrels, report: ProgressReporter) -> tuple[list, dict]:
    """The what-if sweep and the diagnostics, on the embeddings the evaluation already holds
    (a few seconds next to the encode); BM25 has no embeddings and gets neither."""
    import time

    from workers.ml.diagnostics import embedding_diagnostics
    from workers.ml.sweep import whatif_sweep

    if out.doc_vectors is None or out.query_vectors is None or not len(out.doc_vectors):
        return [], {}
    doc_ids = [doc_id for doc_id, _, _ in corpus]
    query_ids = [query_id for query_id, _ in queries]
    t = time.perf_counter()
    sweep = whatif_sweep(
        doc_embeddings=out.doc_vectors,
        query_embeddings=out.query_vectors,
        doc_ids=doc_ids,
        query_ids=query_ids,
        qrels=qrels,
        on_progress=lambda done, total: report("what-if sweep", done, total),
    )
    out.timings["sweep_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report("diagnostics")
    diagnostics = embedding_diagnostics(
        doc_embeddings=out.doc_vectors,
        query_embeddings=out.query_vectors,
        doc_ids=doc_ids,
        query_ids=query_ids,
        qrels=qrels,
        run=out.run,
        per_query_ndcg={qid: m["ndcg@10"] for qid, m in out.per_query.items()},
        query_texts=dict(queries),
    )
    out.timings["diagnostics_s"] = time.perf_counter() - t
    return sweep, diagnostics
