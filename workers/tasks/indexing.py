"""The index build job: embed a version's documents (or read the evaluations' cache), build the
faiss index, measure it against exact search; and the periodic manifest publish.

Imports no ML library at module level: the web imports :func:`build_index` to enqueue it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.indexes.models import IndexBuild
    from workers.tasks.runtime import ProgressReporter

# Queries used to measure recall and latency when the version has no judged split.
SAMPLE_QUERIES = 500


@shared_task(
    name="workers.tasks.indexing.build_index",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def build_index(build_id: int) -> None:
    """Build and measure one IndexBuild row (index queue). Idempotent: a row that is not
    pending is left alone. The index lands in ARTIFACTS_ROOT/indexes/<id>/."""
    from apps.indexes.models import IndexBuild
    from workers.tasks.runtime import job_claim, job_run

    build = job_claim(model=IndexBuild, pk=build_id)
    if build is None:
        return
    job_run(job=build, work=lambda report: index_build_execute(build=build, report=report))


@shared_task(name="workers.tasks.indexing.publish_deployments")
def publish_deployments() -> None:
    """Rewrite the search manifest from the database when it differs (beat, every minute): a
    web process that died between a deploy's commit and its publish is repaired here."""
    from apps.indexes.services import deployments_publish

    deployments_publish(notify=False)


def index_encoder(*, build: IndexBuild, precision: str) -> dict[str, Any]:
    """The query encoder an index needs: everything that changes a query vector, the
    precision (resolved: fp32 or bf16) its documents were encoded in included."""
    from workers.common.store import artifact_ensure
    from workers.ml.cache import model_fingerprint

    model = build.model
    artifact_ensure(model.path)
    spec = build.spec or {}
    return {
        "model_id": model.pk,
        "model_name": model.name,
        "fingerprint": model_fingerprint(model.path),
        "path": model.path,
        "layout": model.layout,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_length": build.max_seq_length,
        "query_prefix": build.query_prefix,
        "model_dimension": model.dimension,
        "truncate_dim": spec.get("dim"),
        "pca_dim": spec.get("pca_dim"),
        "precision": precision,
        # An optimized variant's vectors are not its parent's: the guard compares these too.
        "backend": model.optimization.get("backend", "torch"),
        "quantization": model.optimization.get("quantization", "none"),
    }


def index_sparse_side(
    *, build: IndexBuild, model_id: int, folder: Path, texts: list[str], report: ProgressReporter
) -> dict[str, Any]:
    """Encode the documents with the build's sparse model and keep its vectors beside the
    index, with the model's fingerprint: the search process encodes queries with the same
    model and refuses the index once its files change. Returns the metrics to record."""
    from apps.registry.models import EmbeddingModel
    from workers.common.fingerprint import model_fingerprint
    from workers.ml.indexing import add_sparse
    from workers.ml.sparse import encode_sparse, load_sparse

    sparse = EmbeddingModel.objects.filter(team_id=build.team_id, pk=model_id).first()
    if sparse is None or not sparse.is_sparse:
        # Checked when the build was made; the model was deleted or changed since.
        raise ValueError(f"sparse_model: model #{model_id} is no longer a sparse model of the team")
    from workers.common.store import artifact_ensure

    artifact_ensure(sparse.path)
    record = {
        "model_id": sparse.pk,
        "model_name": sparse.name,
        "path": sparse.path,
        "fingerprint": model_fingerprint(sparse.path),
        "max_seq_length": sparse.max_seq_length or None,
    }
    model = load_sparse(path=sparse.path, max_seq_length=record["max_seq_length"])

    def progress(done: int, total: int) -> None:
        report("encoding for the sparse side", done, total)
        report.check()  # a cancel lands between blocks

    documents = encode_sparse(model, texts, query=False, on_progress=progress)
    report.check()
    written = add_sparse(folder=folder, documents=documents, model=record)
    return {"sparse_bytes": written, "sparse_model": sparse.name}


def index_build_execute(*, build: IndexBuild, report: ProgressReporter) -> dict[str, Any]:
    """Embed (or read the cache), build, measure. Returns the success transition's fields."""
    import numpy as np

    from apps.datasets.selectors import evaluation_inputs
    from apps.indexes.services import index_folder
    from workers.common.configs.indexing import parse_params
    from workers.ml.encode import document_text
    from workers.ml.evaluate import embed_corpus
    from workers.ml.indexing import (
        IndexSpec,
        LoadedIndex,
        add_bm25,
        add_texts,
        build_index,
        measure_index,
    )
    from workers.tasks.encoding import embedding_cache, encoding_for
    from workers.tasks.sharding import document_encoder

    # The stored parameters go through the typed config again: a row written by an older
    # release, or by hand, fails here with the field named, before anything is encoded.
    spec = IndexSpec.from_config(build.index_type, parse_params(build.params))
    version = build.dataset_version
    if build.split:
        corpus, queries, qrels = evaluation_inputs(version=version, split=build.split)
    else:
        corpus = list(version.documents.order_by("pk").values_list("doc_id", "title", "text"))
        queries, qrels = [], {}
    metadata = list(version.documents.order_by("pk").values_list("metadata", flat=True))
    encoder_spec, document_key, query_key = encoding_for(job=build, split=build.split or "-")
    # Recorded now, with the fingerprint and precision the vectors below are made with.
    encoder = index_encoder(build=build, precision=encoder_spec.precision)
    doc_vectors, query_vectors, timings, cache_hit = embed_corpus(
        model=encoder_spec,
        corpus=corpus,
        queries=queries,
        on_progress=report,
        cache=embedding_cache(),
        document_key=document_key,
        query_key=query_key if queries else None,
        encode_documents=document_encoder(spec=encoder_spec, check=report.check),
    )
    doc_ids = [doc_id for doc_id, _, _ in corpus]
    query_ids = [query_id for query_id, _ in queries]
    if not len(query_vectors):
        # No judged queries: documents stand in for queries, for recall and speed only.
        rng = np.random.default_rng(0)
        picks = np.sort(rng.choice(len(doc_vectors), min(SAMPLE_QUERIES, len(doc_vectors)), False))
        query_vectors = np.asarray(doc_vectors)[picks]
        query_ids = [f"doc:{doc_ids[i]}" for i in picks]
        qrels = {}
    report.check()
    folder = index_folder(build=build)
    if folder.exists():  # a retried build starts clean
        shutil.rmtree(folder)
    built = build_index(
        vectors=np.asarray(doc_vectors, dtype=np.float32),
        doc_ids=doc_ids,
        spec=spec,
        out_dir=folder,
        metadata=metadata if any(metadata) else None,
        on_progress=report,
    )
    try:
        _write_json(folder / "encoder.json", encoder)
        texts = [document_text(title, text) for _, title, text in corpus]
        # Kept for a rerank stage, which scores each hit's text with the query.
        built["texts_bytes"] = add_texts(folder=folder, texts=texts)
        if parse_params(build.params).bm25:
            report("indexing BM25", 0, len(corpus))
            started = time.perf_counter()
            built["bm25_bytes"] = add_bm25(folder=folder, texts=texts)
            built["bm25_s"] = time.perf_counter() - started
        sparse_id = parse_params(build.params).sparse_model
        if sparse_id is not None:
            started = time.perf_counter()
            built.update(index_sparse_side(
                build=build, model_id=sparse_id, folder=folder, texts=texts, report=report
            ))  # fmt: skip
            built["sparse_s"] = time.perf_counter() - started
        report("measuring", 0, 0)
        loaded = LoadedIndex.load(folder)
        measured = measure_index(
            loaded=loaded,
            doc_vectors=np.asarray(doc_vectors),
            query_vectors=np.asarray(query_vectors),
            query_ids=query_ids,
            doc_ids=doc_ids,
            qrels=qrels or None,
        )
        report.check()
        from workers.common.store import artifact_publish

        # With a bucket: whole there before the row says succeeded (a replica fetches it).
        report("uploading", 0, 0)
        artifact_publish(folder)
    except BaseException:
        # Cancelled or failed after the files were written: a dead row keeps no index.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    timings = {**timings, "build_s": built["build_s"]}
    metrics = {**_plain(built), **_plain(measured), "queries": len(query_ids)}
    if metrics.get("ndcg_at_10") is not None and metrics.get("exact_ndcg_at_10") is not None:
        metrics["ndcg_loss"] = metrics["exact_ndcg_at_10"] - metrics["ndcg_at_10"]
    return {
        "spec": built.get("spec") or spec.to_dict(),  # nlist and pq_m resolved
        "path": str(folder),
        "embedding_key": document_key,
        "cache_hit": cache_hit,
        "encoder": encoder,
        "precision_used": encoder_spec.precision,
        "document_count": len(doc_ids),
        "dimension": built["dimension"],
        "metrics": metrics,
        "timings": timings,
        "stage": "done",
    }


def _plain(values: dict) -> dict:
    """JSON-safe copies of numpy scalars."""
    out = {}
    for key, value in values.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, int | float | str | bool) or value is None:
            out[key] = value
    return out


def _write_json(path: Path, data: dict) -> None:
    from workers.common.atomic import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True))
