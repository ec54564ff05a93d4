"""Dense retrieval evaluation: encode corpus and queries, exact top-k, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.ml.cache import EmbeddingCache
from workers.ml.encode import document_text, encode_texts, free_memory, load_encoder
from workers.ml.metrics import compute_metrics
from workers.ml.search import exact_search

Progress = Callable[[str, int, int], None]
# (loaded encoder, texts, batch size, on_progress(done, total)) → float32 (n, dim)
DocumentEncoder = Callable[[Any, list[str], int, Callable[[int, int], None]], np.ndarray]

STAGES = ("loading model", "encoding documents", "encoding queries", "searching", "scoring")


@dataclass(frozen=True)
class EncoderSpec:
    """How to encode with a model; prefixes are prepended to every query / document text."""

    path: str
    layout: str
    pooling: str
    normalize: bool
    max_seq_length: int
    query_prefix: str = ""
    document_prefix: str = ""
    device: str | None = None
    precision: str = "fp32"  # resolved: fp32 or bf16 (``workers.ml.precision``)

    def load(self) -> Any:
        """The SentenceTransformer this spec encodes with (prefixes and precision are applied
        by the caller at encode time)."""
        return load_encoder(path=self.path, layout=self.layout, pooling=self.pooling,
                            normalize=self.normalize, max_seq_length=self.max_seq_length,
                            device=self.device)  # fmt: skip


@dataclass
class EvalOutput:
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    run: dict[str, dict[str, float]]  # the top_k documents of every evaluated query
    timings: dict[str, float] = field(default_factory=dict)
    documents: int = 0
    queries: int = 0
    cache_hit: bool = False  # the document embeddings came from the cache
    # Kept for the what-if sweep and the diagnostics; not serialised.
    doc_vectors: np.ndarray | None = field(default=None, repr=False)
    query_vectors: np.ndarray | None = field(default=None, repr=False)


def evaluate_dense(
    *,
    model: EncoderSpec,
    corpus: Sequence[tuple[str, str, str]],
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    top_k: int = 100,
    batch_size: int = 32,
    on_progress: Progress | None = None,
    cache: EmbeddingCache | None = None,
    document_key: str | None = None,
    query_key: str | None = None,
    encode_documents: DocumentEncoder | None = None,
) -> EvalOutput:
    """Evaluate ``model`` on (doc_id, title, text) documents and (query_id, text) queries.

    ``on_progress(stage, done, total)`` runs at each stage and after every encoded chunk; an
    exception it raises (a cancel) stops the evaluation and still frees the model.
    """

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if on_progress:
            on_progress(stage, done, total)

    doc_vectors, query_vectors, timings, cache_hit = embed_corpus(
        model=model,
        corpus=corpus,
        queries=queries,
        batch_size=batch_size,
        on_progress=on_progress,
        cache=cache,
        document_key=document_key,
        query_key=query_key,
        encode_documents=encode_documents,
    )
    t = time.perf_counter()
    report("searching", 0, len(queries))
    scores, indices = exact_search(
        doc_embeddings=doc_vectors, query_embeddings=query_vectors, k=top_k
    )
    run: dict[str, dict[str, float]] = {}
    for row, (query_id, _) in enumerate(queries):
        run[query_id] = {
            corpus[j][0]: float(s) for s, j in zip(scores[row], indices[row], strict=True) if j >= 0
        }
    report("searching", len(queries), len(queries))
    timings["search_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report("scoring", 0, len(qrels))
    metrics, per_query = compute_metrics(qrels=qrels, run=run)
    report("scoring", len(qrels), len(qrels))
    timings["metrics_s"] = time.perf_counter() - t
    return EvalOutput(
        metrics=metrics,
        per_query=per_query,
        run=run,
        timings=timings,
        documents=len(corpus),
        queries=len(queries),
        cache_hit=cache_hit,
        doc_vectors=doc_vectors,
        query_vectors=query_vectors,
    )


def embed_corpus(
    *,
    model: EncoderSpec,
    corpus: Sequence[tuple[str, str, str]],
    queries: Sequence[tuple[str, str]],
    batch_size: int = 32,
    on_progress: Progress | None = None,
    cache: EmbeddingCache | None = None,
    document_key: str | None = None,
    query_key: str | None = None,
    encode_documents: DocumentEncoder | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float], bool]:
    """(document vectors, query vectors, timings, documents came from the cache).

    ``encode_documents`` replaces the in-process document encode (the worker passes one that
    splits a large corpus over every worker, ``workers.tasks.sharding``); it must give the
    vectors ``encode_texts`` would.

    Reads the cache first and loads the model only for what is missing, then caches what it
    encoded; evaluations and index builds share it, so a corpus is encoded once.
    """

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if on_progress:
            on_progress(stage, done, total)

    timings: dict[str, float] = {}
    doc_ids = [doc_id for doc_id, _, _ in corpus]
    query_ids = [query_id for query_id, _ in queries]
    doc_vectors = _cached(cache, document_key, doc_ids)
    query_vectors = _cached(cache, query_key, query_ids)
    if not query_ids and doc_vectors is not None:
        # No queries (an index build without a judged split) need no model.
        query_vectors = np.empty((0, doc_vectors.shape[1]), dtype=np.float32)
    cache_hit = doc_vectors is not None
    if doc_vectors is None or query_vectors is None:
        t = time.perf_counter()
        report("loading model")
        encoder = model.load()
        timings["load_s"] = time.perf_counter() - t
        try:
            if doc_vectors is None:
                t = time.perf_counter()
                texts = [
                    model.document_prefix + document_text(title, text) for _, title, text in corpus
                ]
                progress = lambda done, total: report("encoding documents", done, total)  # noqa: E731
                if encode_documents is not None:
                    doc_vectors = encode_documents(encoder, texts, batch_size, progress)
                else:
                    doc_vectors = encode_texts(
                        encoder=encoder,
                        texts=texts,
                        normalize=model.normalize,
                        batch_size=batch_size,
                        on_progress=progress,
                        precision=model.precision,
                    )
                timings["encode_documents_s"] = time.perf_counter() - t
                if cache is not None and document_key:
                    cache.put(document_key, doc_vectors, doc_ids, {"kind": "documents"})
            if query_vectors is None:
                t = time.perf_counter()
                query_vectors = encode_texts(
                    encoder=encoder,
                    texts=[model.query_prefix + text for _, text in queries],
                    normalize=model.normalize,
                    batch_size=batch_size,
                    on_progress=lambda done, total: report("encoding queries", done, total),
                    precision=model.precision,
                )
                timings["encode_queries_s"] = time.perf_counter() - t
                if cache is not None and query_key:
                    cache.put(query_key, query_vectors, query_ids, {"kind": "queries"})
        finally:
            # Free the model before searching: on a shared GPU the next job should not wait.
            device = str(encoder.device)
            del encoder
            free_memory(device)
    return doc_vectors, query_vectors, timings, cache_hit


def _cached(cache: EmbeddingCache | None, key: str | None, ids: list[str]) -> np.ndarray | None:
    """The cached vectors for exactly these ids in this order, else None (encode them)."""
    if cache is None or not key:
        return None
    hit = cache.get(key)
    if hit is None or hit[1] != ids:
        return None
    return hit[0]


def evaluate_bm25(
    *,
    corpus: Sequence[tuple[str, str, str]],
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    top_k: int = 100,
    on_progress: Progress | None = None,
) -> EvalOutput:
    """The lexical baseline: bm25s (Lucene BM25, k1=1.5, b=0.75, English stopwords)."""
    from workers.ml.lexical import bm25_index, bm25_search

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if on_progress:
            on_progress(stage, done, total)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    report("indexing documents", 0, len(corpus))
    retriever = bm25_index([document_text(title, text) for _, title, text in corpus])
    timings["index_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report("searching", 0, len(queries))
    indices, scores = bm25_search(retriever, [text for _, text in queries], k=max(1, top_k))
    run: dict[str, dict[str, float]] = {}
    for row, (query_id, _) in enumerate(queries):
        # A document sharing no term with the query scores 0: it was not retrieved.
        run[query_id] = {
            corpus[int(j)][0]: float(sc)
            for sc, j in zip(scores[row], indices[row], strict=True)
            if j >= 0
        }
    timings["search_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report("scoring", 0, len(qrels))
    metrics, per_query = compute_metrics(qrels=qrels, run=run)
    timings["metrics_s"] = time.perf_counter() - t
    return EvalOutput(
        metrics=metrics,
        per_query=per_query,
        run=run,
        timings=timings,
        documents=len(corpus),
        queries=len(queries),
    )


def evaluate_hybrid(
    *,
    dense: EvalOutput,
    lexical: EvalOutput,
    qrels: dict[str, dict[str, int]],
    settings: dict,
    top_k: int = 100,
    tune: tuple[EvalOutput, EvalOutput, dict[str, dict[str, int]]] | None = None,
    tune_split: str = "",
) -> tuple[EvalOutput, dict]:
    """The dense and lexical runs (each ``settings["candidates"]`` deep) fused
    (``workers.ml.fusion.fuse``) and scored like any run. With ``tune`` (the two runs and the
    judgements of another split), the dense weight is the one that scores best there by mean
    nDCG@10. Returns the output and what the fusion used: {weight, tuned: {split, curve}}."""
    from workers.ml.fusion import fuse, tune_weight

    t = time.perf_counter()
    weight = settings.get("dense_weight", 0.5)
    info: dict = {"weight": weight}
    if tune is not None:

        def mean_ndcg(judged: dict, run: dict) -> float:
            return compute_metrics(qrels=judged, run=run)[0]["ndcg@10"]

        weight, curve = tune_weight(dense=tune[0].run, lexical=tune[1].run, qrels=tune[2],
                                    settings=settings, score=mean_ndcg)  # fmt: skip
        info = {"weight": weight, "tuned": {"split": tune_split, "curve": curve}}
    run = fuse(dense=dense.run, lexical=lexical.run, settings=settings, weight=weight,
               top_k=top_k)  # fmt: skip
    fuse_s = time.perf_counter() - t
    t = time.perf_counter()
    metrics, per_query = compute_metrics(qrels=qrels, run=run)
    timings = {f"dense_{k}": v for k, v in dense.timings.items()}
    timings.update({f"bm25_{k}": v for k, v in lexical.timings.items()})
    timings.update(fuse_s=fuse_s, metrics_s=time.perf_counter() - t)
    out = EvalOutput(metrics=metrics, per_query=per_query, run=run, timings=timings,
                     documents=dense.documents, queries=dense.queries,
                     cache_hit=dense.cache_hit)  # fmt: skip
    return out, info


def evaluate_rerank(
    *,
    reranker_path: str,
    corpus: Sequence[tuple[str, str, str]],
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    first_stage: dict[str, dict[str, float]],
    k_prime: int = 100,
    top_k: int = 100,
    max_length: int | None = None,
    device: str | None = None,
    on_progress: Progress | None = None,
    scorer: Any = None,
    precision: str = "fp32",
) -> EvalOutput:
    """The first stage's lists, their top ``k_prime`` reordered by the cross-encoder in
    ``reranker_path`` (or by ``scorer``, a ``workers.ml.rerank.Scorer``), scored like any run.
    Timings: load_s, rerank_s, ms_per_query (the reranker's time per query), metrics_s."""
    from workers.ml.fusion import ranked
    from workers.ml.rerank import cross_encoder_scorer, load_reranker, rerank_run

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if on_progress:
            on_progress(stage, done, total)

    timings: dict[str, float] = {}
    model = None
    if scorer is None:
        t = time.perf_counter()
        report("loading reranker")
        model = load_reranker(path=reranker_path, max_length=max_length, device=device)
        timings["load_s"] = time.perf_counter() - t
        scorer = cross_encoder_scorer(model, precision=precision)
    try:
        documents = {doc_id: document_text(title, text) for doc_id, title, text in corpus}
        run, rerank_timings = rerank_run(
            first_stage=first_stage,
            queries=dict(queries),
            documents=documents,
            scorer=scorer,
            k_prime=k_prime,
            on_progress=on_progress,
        )
    finally:
        if model is not None:
            device_used = str(model.device)
            del model, scorer
            free_memory(device_used)
    timings.update(rerank_timings)
    run = {qid: {doc: docs[doc] for doc in ranked(docs, top_k)} for qid, docs in run.items()}
    t = time.perf_counter()
    report("scoring", 0, len(qrels))
    metrics, per_query = compute_metrics(qrels=qrels, run=run)
    timings["metrics_s"] = time.perf_counter() - t
    return EvalOutput(metrics=metrics, per_query=per_query, run=run, timings=timings,
                      documents=len(corpus), queries=len(queries))  # fmt: skip


def evaluate_sparse(
    *,
    path: str,
    corpus: Sequence[tuple[str, str, str]],
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    top_k: int = 100,
    max_seq_length: int | None = None,
    device: str | None = None,
    on_progress: Progress | None = None,
) -> EvalOutput:
    """A sparse model (``workers.ml.sparse``): documents and queries encoded into sparse
    vectors over the vocabulary, each query's top ``top_k`` by dot product, scored like any
    run. Timings: load_s, encode_documents_s, encode_queries_s, search_s, metrics_s."""
    from workers.ml.sparse import encode_sparse, load_sparse, sparse_top_k

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if on_progress:
            on_progress(stage, done, total)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    report("loading model")
    model = load_sparse(path=path, max_seq_length=max_seq_length, device=device)
    timings["load_s"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        docs = encode_sparse(
            model, [document_text(title, text) for _, title, text in corpus], query=False,
            on_progress=lambda done, total: report("encoding documents", done, total),
        )  # fmt: skip
        timings["encode_documents_s"] = time.perf_counter() - t
        t = time.perf_counter()
        encoded = encode_sparse(
            model, [text for _, text in queries], query=True,
            on_progress=lambda done, total: report("encoding queries", done, total),
        )  # fmt: skip
        timings["encode_queries_s"] = time.perf_counter() - t
    finally:
        device_used = str(model.device)
        del model
        free_memory(device_used)
    t = time.perf_counter()
    report("searching", 0, len(queries))
    scores, positions = sparse_top_k(encoded, docs, top_k)
    run = {
        query_id: {corpus[int(p)][0]: float(s) for s, p in zip(scores[row], positions[row],
                                                               strict=True) if p >= 0}
        for row, (query_id, _) in enumerate(queries)
    }  # fmt: skip
    timings["search_s"] = time.perf_counter() - t
    timings["active_dims_per_document"] = float(docs.nnz / max(docs.shape[0], 1))
    t = time.perf_counter()
    metrics, per_query = compute_metrics(qrels=qrels, run=run)
    timings["metrics_s"] = time.perf_counter() - t
    return EvalOutput(metrics=metrics, per_query=per_query, run=run, timings=timings,
                      documents=len(corpus), queries=len(queries))  # fmt: skip
