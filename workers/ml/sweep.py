"""What-if sweep over already computed embeddings: Matryoshka truncation × storage precision.

Every configuration is scored with the same metrics code as the evaluation itself, so the
float32 row at the full dimension is exactly the exact-search result.

Precisions (the document side is what gets stored; queries stay float where the method allows):

- ``float32``: exact inner product (``workers.ml.search.exact_search``).
- ``int8``: faiss ``IndexScalarQuantizer`` (QT_8bit: 8 bits per component, a per-dimension
  [min, max] range calibrated on the document embeddings, like sentence-transformers'
  ``quantize_embeddings(..., calibration_embeddings=docs)``). The float query is scored against
  the decoded document codes (faiss' asymmetric search).
- ``binary``: sign bits (``x > 0``, packed as sentence-transformers' ``"ubinary"``), searched
  with faiss ``IndexBinaryFlat`` (Hamming distance, both sides binary).
- ``binary_rescore``: the binary search returns ``rescore_multiplier × top_k`` candidates, which
  are re-scored as sentence-transformers' ``semantic_search_faiss(corpus_precision="ubinary")``
  does: float query · the candidates' unpacked {0, 1} bits, keeping the best ``top_k``.

sentence-transformers itself is not imported: its package import costs over 10 s and pulls torch,
and its rescoring gathers a (queries × candidates × dim) integer array at once; the few lines it
would contribute are reproduced here (vectorised, in chunks) with the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PRECISIONS = ("float32", "int8", "binary", "binary_rescore")
DEFAULT_DIMS = (32, 64, 128, 256)
SWEEP_METRICS = ("ndcg@10", "recall@100", "mrr@10")

# Elements of the (queries × candidates × dim) block gathered at once while re-scoring.
_RESCORE_BLOCK = 1 << 24


def sweep_dims(full_dim: int, dims: Sequence[int] | None = None) -> list[int]:
    """The dimensions to try, ascending: by default 32, 64, 128, 256 where below ``full_dim``,
    then ``full_dim`` itself."""
    if full_dim < 1:
        raise ValueError("embeddings have no components")
    if dims is None:
        return sorted({d for d in DEFAULT_DIMS if d < full_dim} | {full_dim})
    chosen = sorted({int(d) for d in dims})
    bad = [d for d in chosen if not 1 <= d <= full_dim]
    if bad:
        raise ValueError(f"dimensions {bad} outside 1..{full_dim}")
    if not chosen:
        raise ValueError("no dimensions to sweep")
    return chosen


def bytes_per_vector(dim: int, precision: str) -> int:
    """Bytes one stored document vector takes in the index.

    ``binary_rescore`` re-scores against the same packed bits the binary index holds, so it
    stores nothing more than ``binary``: its figure is the bytes held in the index.
    """
    if precision == "float32":
        return 4 * dim
    if precision == "int8":
        return dim
    if precision in ("binary", "binary_rescore"):
        return (dim + 7) // 8  # packbits pads to whole bytes; dim / 8 for the usual dims
    raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")


def truncate(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` components, re-normalised to unit length (zero vectors stay zero)."""
    x = np.ascontiguousarray(embeddings[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _int8_search(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexScalarQuantizer(
        docs.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.train(docs)  # per-dimension min/max of the documents
    index.add(docs)
    return index.search(queries, k)


def _pack(x: np.ndarray) -> np.ndarray:
    # sentence-transformers' quantize_embeddings(precision="ubinary").
    return np.packbits(x > 0, axis=-1)


def _binary_search(
    doc_bits: np.ndarray, queries: np.ndarray, k: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hamming top-k: (similarity, indices) with similarity = 1 − 2·hamming/dim, the cosine of
    the ±1 sign vectors (padding bits are zero on both sides and never differ)."""
    import faiss

    index = faiss.IndexBinaryFlat(doc_bits.shape[1] * 8)
    index.add(doc_bits)
    distances, indices = index.search(_pack(queries), k)
    return 1.0 - 2.0 * distances.astype(np.float64) / dim, indices


def _rescore(
    doc_bits: np.ndarray,
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Float query · unpacked {0, 1} document bits over each query's candidates, best ``k``."""
    n_queries, n_cand = candidates.shape
    scores = np.full((n_queries, k), -np.inf)
    indices = np.full((n_queries, k), -1, dtype=np.int64)
    step = max(1, _RESCORE_BLOCK // max(1, n_cand * dim))
    for start in range(0, n_queries, step):
        cand = candidates[start : start + step]
        valid = cand >= 0
        bits = np.unpackbits(doc_bits[np.where(valid, cand, 0)], axis=-1)[..., :dim]
        block = np.einsum("qd,qcd->qc", queries[start : start + step], bits.astype(np.float32))
        block = block.astype(np.float64)
        block[~valid] = -np.inf
        order = np.argsort(-block, axis=1, kind="stable")[:, :k]
        scores[start : start + step] = np.take_along_axis(block, order, axis=1)
        indices[start : start + step] = np.take_along_axis(np.where(valid, cand, -1), order, axis=1)
    return scores, indices


def search_precision(
    precision: str,
    docs: np.ndarray,
    queries: np.ndarray,
    *,
    top_k: int,
    rescore_multiplier: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(top_k, documents)`` of every query at one precision: (scores, indices), best
    first, index −1 where a query has fewer results. Scores: inner product (float32, int8),
    1 − 2·hamming/dim (binary), float query · document bits (binary_rescore)."""
    from workers.ml.search import exact_search

    n_docs, dim = docs.shape
    k = min(top_k, n_docs)
    if precision == "float32":
        return exact_search(doc_embeddings=docs, query_embeddings=queries, k=k)
    if k == 0 or len(queries) == 0:
        return np.empty((len(queries), k)), np.empty((len(queries), k), dtype=np.int64)
    if precision == "int8":
        return _int8_search(docs, queries, k)
    doc_bits = _pack(docs)
    if precision == "binary":
        return _binary_search(doc_bits, queries, k, dim)
    candidates = min(n_docs, k * rescore_multiplier)
    _, cand = _binary_search(doc_bits, queries, candidates, dim)
    return _rescore(doc_bits, queries, cand, k, dim)


def whatif_sweep(
    *,
    doc_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    doc_ids: list[str],
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
    dims: Sequence[int] | None = None,
    precisions: Sequence[str] = PRECISIONS,
    rescore_multiplier: int = 4,
    top_k: int = 100,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Retrieval quality of every (dimension, precision) pair, dimensions ascending and
    precisions in the order given.

    Each row: ``{"dim", "precision", "bytes_per_vector", "ndcg@10", "recall@100", "mrr@10"}``,
    metrics from ``compute_metrics`` on each query's top ``top_k``. Truncated dimensions are
    re-normalised; the full dimension uses the embeddings as given, so its float32 row equals
    exact search. ``on_progress(done, total)`` runs after each configuration.
    """
    from workers.ml.metrics import compute_metrics

    doc_embeddings = np.asarray(doc_embeddings, dtype=np.float32)
    query_embeddings = np.asarray(query_embeddings, dtype=np.float32)
    if doc_embeddings.ndim != 2 or query_embeddings.ndim != 2:
        raise ValueError("embeddings must be 2-D arrays")
    if len(doc_ids) != len(doc_embeddings) or len(query_ids) != len(query_embeddings):
        raise ValueError("ids and embeddings differ in length")
    full_dim = doc_embeddings.shape[1]
    if query_embeddings.shape[1] != full_dim:
        raise ValueError(
            f"dimension mismatch: documents {full_dim}, queries {query_embeddings.shape[1]}"
        )
    for precision in precisions:
        bytes_per_vector(1, precision)  # rejects unknown precisions before any work
    if rescore_multiplier < 1:
        raise ValueError("rescore_multiplier must be at least 1")
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    chosen = sweep_dims(full_dim, dims)
    total = len(chosen) * len(precisions)
    rows: list[dict] = []
    for dim in chosen:
        if dim == full_dim:
            docs = np.ascontiguousarray(doc_embeddings)
            queries = np.ascontiguousarray(query_embeddings)
        else:
            docs, queries = truncate(doc_embeddings, dim), truncate(query_embeddings, dim)
        for precision in precisions:
            scores, indices = search_precision(
                precision, docs, queries, top_k=top_k, rescore_multiplier=rescore_multiplier
            )
            run = {
                qid: {
                    doc_ids[j]: float(s)
                    for s, j in zip(scores[row], indices[row], strict=True)
                    if j >= 0
                }
                for row, qid in enumerate(query_ids)
            }
            means, _ = compute_metrics(qrels=qrels, run=run)
            rows.append(
                {
                    "dim": dim,
                    "precision": precision,
                    "bytes_per_vector": bytes_per_vector(dim, precision),
                    **{name: means[name] for name in SWEEP_METRICS},
                }
            )
            if on_progress:
                on_progress(len(rows), total)
    return rows
