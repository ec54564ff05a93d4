"""Exact top-k search, the reference every approximate index is measured against."""

from __future__ import annotations

import numpy as np


def exact_search(
    *, doc_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (cosine for normalised vectors) with faiss: (scores, indices).

    Both arrays are (queries, min(k, documents)), best first.
    """
    import faiss

    k = max(0, min(k, len(doc_embeddings)))
    n_queries = len(query_embeddings)
    if k == 0 or n_queries == 0:
        # faiss rejects k=0 and an empty corpus; the answer is simply empty.
        return np.empty((n_queries, k), dtype=np.float32), np.empty((n_queries, k), dtype=np.int64)
    if doc_embeddings.shape[1] != query_embeddings.shape[1]:
        raise ValueError(
            f"dimension mismatch: documents {doc_embeddings.shape[1]}, "
            f"queries {query_embeddings.shape[1]}"
        )
    index = faiss.IndexFlatIP(doc_embeddings.shape[1])
    index.add(np.ascontiguousarray(doc_embeddings, dtype=np.float32))
    scores, indices = index.search(np.ascontiguousarray(query_embeddings, dtype=np.float32), k)
    return scores, indices
