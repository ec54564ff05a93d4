"""The evaluation job: encode a version's documents and a split's queries (or read them from the
embedding cache), search, score, analyse, and record the results on the row.

Imports no ML library at module level: the web imports :func:`evaluate` to enqueue it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.runs.models import Evaluation
    from workers.tasks.runtime import ProgressReporter


@shared_task(
    name="workers.tasks.evaluation.evaluate",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def evaluate(evaluation_id: int) -> None:
    """Evaluate one Evaluation row. Idempotent: a row that is not pending is left alone.

    Writes the row's progress, metrics and timings, its per-query results and a TREC run file
    under ARTIFACTS_ROOT/evaluations/<id>/.
    """
    from apps.runs.models import Evaluation
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=Evaluation, pk=evaluation_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: evaluation_execute(evaluation=job, report=report))
    job.refresh_from_db()
    if job.status == "succeeded":
        from apps.registry.services import variant_quality_record

        # A derived model's verdict against its parent, once its pair of evaluations is done.
        variant_quality_record(evaluation=job)


def evaluation_execute(*, evaluation: Evaluation, report: ProgressReporter) -> dict[str, Any]:
    """The work of an evaluation: encode (or read the cache), search, score, store per-query
    rows and the run file. Returns the fields that the success transition writes on the row.
    """
    from apps.datasets.selectors import evaluation_inputs
    from apps.runs.services import evaluation_results_record
    from workers.common.configs.evaluation import EvaluationConfig
    from workers.common.store import artifact_publish
    from workers.ml.evaluate import evaluate_bm25, evaluate_dense, evaluate_hybrid
    from workers.ml.metrics import write_trec_run
    from workers.tasks.encoding import embedding_cache, encoding_for
    from workers.tasks.sharding import document_encoder

    if evaluation.method == "rerank" and evaluation.first_stage_id is None:
        from apps.runs.services import EvaluationError

        raise EvaluationError(
            "The first stage of this rerank was deleted: its ranked lists are gone. Rerank "
            "another evaluation."
        )
    config = EvaluationConfig.from_row(evaluation)
    corpus, queries, qrels = evaluation_inputs(
        version=evaluation.dataset_version, split=config.split
    )
    document_key, precision_used, fusion_result = "", "", {}
    if config.method == "rerank":
        out, precision_used = _rerank(evaluation=evaluation, config=config, corpus=corpus,
                                      queries=queries, qrels=qrels, report=report)  # fmt: skip
    elif config.method == "sparse":
        from workers.ml.evaluate import evaluate_sparse

        out = evaluate_sparse(path=evaluation.model.path, corpus=corpus, queries=queries,
                              qrels=qrels, top_k=evaluation.top_k,
                              max_seq_length=evaluation.max_seq_length or None,
                              on_progress=report)  # fmt: skip
        precision_used = "fp32"
    elif config.method == "bm25":
        out = evaluate_bm25(
            corpus=corpus, queries=queries, qrels=qrels, top_k=evaluation.top_k, on_progress=report
        )
    else:
        spec, document_key, query_key = encoding_for(job=evaluation)
        precision_used = spec.precision
        settings_ = config.fusion_settings()
        depth = max(evaluation.top_k, settings_.get("candidates", 0))

        def dense_run(split_queries, split_qrels, key):
            return evaluate_dense(
                model=spec,
                corpus=corpus,
                queries=split_queries,
                qrels=split_qrels,
                top_k=depth,
                on_progress=report,
                cache=embedding_cache(),
                document_key=document_key,
                query_key=key,
                encode_documents=document_encoder(spec=spec, check=report.check),
            )

        out = dense_run(queries, qrels, query_key)
        if config.method == "hybrid":
            lexical = _lexical(config, corpus=corpus, queries=queries, qrels=qrels, depth=depth,
                               report=report)  # fmt: skip
            tune = None
            if config.tune_split:
                report("tuning the weight")
                _, tune_queries, tune_qrels = evaluation_inputs(
                    version=evaluation.dataset_version, split=config.tune_split
                )
                _, _, tune_key = encoding_for(job=evaluation, split=config.tune_split)
                tune = (dense_run(tune_queries, tune_qrels, tune_key),
                        _lexical(config, corpus=corpus, queries=tune_queries, qrels=tune_qrels,
                                 depth=depth, report=None),
                        tune_qrels)  # fmt: skip
            report("fusing")
            out, fusion_result = evaluate_hybrid(dense=out, lexical=lexical, qrels=qrels,
                                                 settings=settings_, top_k=evaluation.top_k,
                                                 tune=tune,
                                                 tune_split=config.tune_split or "")  # fmt: skip
    sweep, diagnostics = _analyse(out=out, corpus=corpus, queries=queries, qrels=qrels,
                                  report=report)  # fmt: skip
    report("saving", 0, 0)
    folder = Path(settings.ARTIFACTS_ROOT) / "evaluations" / str(evaluation.pk)
    folder.mkdir(parents=True, exist_ok=True)
    run_path = folder / "run.trec"
    write_trec_run(run=out.run, path=run_path, tag=f"embedhub-eval-{evaluation.pk}")
    report.check()  # a reaped or cancelled row gets no results
    artifact_publish(run_path)  # with a bucket: the compare page on any host reads it
    evaluation_results_record(evaluation=evaluation, per_query=out.per_query)
    return {
        "metrics": out.metrics,
        "timings": out.timings,
        "document_count": out.documents,
        "query_count": out.queries,
        "run_file": str(run_path),
        "embedding_key": document_key,
        "precision_used": precision_used,
        "fusion_result": fusion_result,
        "cache_hit": out.cache_hit,
        "sweep": sweep,
        "diagnostics": diagnostics,
        "stage": "done",
    }


def _lexical(config, *, corpus, queries, qrels, depth: int, report):
    """A hybrid's lexical side: BM25 (bm25s), or the sparse model ``lexical_model`` names."""
    from workers.ml.evaluate import evaluate_bm25, evaluate_sparse

    if not config.lexical_model:
        return evaluate_bm25(corpus=corpus, queries=queries, qrels=qrels, top_k=depth,
                             on_progress=report)  # fmt: skip
    from apps.registry.models import EmbeddingModel

    sparse = EmbeddingModel.objects.get(pk=config.lexical_model)
    return evaluate_sparse(path=sparse.path, corpus=corpus, queries=queries, qrels=qrels,
                           top_k=depth, max_seq_length=sparse.max_seq_length,
                           on_progress=report)  # fmt: skip


def _rerank(*, evaluation: Evaluation, config, corpus, queries, qrels, report: ProgressReporter):
    """The first stage's run file, its top k′ reordered by the row's reranker."""
    from apps.runs.services import EvaluationError
    from workers.ml.evaluate import evaluate_rerank
    from workers.ml.metrics import read_trec_run

    first = evaluation.first_stage
    from workers.common.store import artifact_inside

    path = artifact_inside(first.run_file if first is not None else None, settings.ARTIFACTS_ROOT)
    if path is None or not path.is_file():
        raise EvaluationError(
            "The first stage's ranked lists are gone (its evaluation was deleted or its run "
            "file removed); run that evaluation again, then this rerank."
        )
    from workers.ml.encode import pick_device
    from workers.ml.precision import bf16_supported

    # bf16 only when asked for by name and native here; auto stays fp32 (no quality check
    # exists for a reranker's bf16 scores).
    precision = "bf16" if config.precision == "bf16" and bf16_supported(pick_device()) else "fp32"
    report("reading the first stage")
    out = evaluate_rerank(
        reranker_path=evaluation.model.path,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        first_stage=read_trec_run(path),
        k_prime=config.k_prime,
        top_k=evaluation.top_k,
        max_length=evaluation.max_seq_length or None,
        on_progress=report,
        precision=precision,
    )
    return out, precision


def _analyse(*, out, corpus, queries, qrels, report: ProgressReporter) -> tuple[list, dict]:
    """The what-if sweep and the diagnostics, on the embeddings the evaluation already holds
    (a few seconds next to the encode); BM25 has no embeddings and gets neither."""
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
