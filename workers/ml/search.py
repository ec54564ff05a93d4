from __future__ import annotations

import numpy as np


def exact_search(
    *, doc_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (cosine for normalised vectors) with faiss: (scores, indices)."""
    import faiss

    k = min(k, len(doc_embeddings))
    index = faiss.IndexFlatIP(doc_embeddings.shape[1])
    index.add(np.ascontiguousarray(doc_embeddings, dtype=np.float32))
    return index.search(np.ascontiguousarray(query_embeddings, dtype=np.float32), k)
