"""Sparse retrieval with a sentence-transformers ``SparseEncoder`` (SPLADE and kin).

Documents and queries are encoded by the model's own ``encode_document`` / ``encode_query``
(its prompts and pooling) into vocabulary-sized sparse vectors, held as scipy CSR matrices: an
inverted index in all but name. A query's scores are its dot products with every document
(the model's similarity), computed as one sparse product per block of queries; the top k are
kept. sentence-transformers and torch are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ENCODE_BATCH = 32
QUERY_BLOCK = 256  # queries scored at once: a block's dense score matrix is block × documents


def load_sparse(*, path: str, max_seq_length: int | None = None, device: str | None = None) -> Any:
    from sentence_transformers import SparseEncoder

    from workers.common.store import artifact_ensure
    from workers.ml.encode import pick_device

    artifact_ensure(path)
    model = SparseEncoder(path, device=pick_device(device), local_files_only=True)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def to_csr(tensor: Any) -> Any:
    """A torch sparse (COO) matrix as a scipy CSR one, float32."""
    import scipy.sparse

    coo = tensor.coalesce().cpu()
    rows, cols = coo.indices().numpy()
    values = coo.values().float().numpy()
    return scipy.sparse.csr_matrix((values, (rows, cols)), shape=tuple(coo.shape), dtype=np.float32)


def encode_sparse(
    model: Any, texts: Sequence[str], *, query: bool, on_progress: Callable[[int, int], None] | None
) -> Any:
    """CSR (len(texts) × vocabulary) of the texts, encoded as queries or as documents."""
    import scipy.sparse

    encode = model.encode_query if query else model.encode_document
    blocks = []
    for start in range(0, len(texts), ENCODE_BATCH * 8):
        chunk = list(texts[start : start + ENCODE_BATCH * 8])
        blocks.append(to_csr(encode(chunk, batch_size=ENCODE_BATCH, convert_to_sparse_tensor=True,
                                    show_progress_bar=False)))  # fmt: skip
        if on_progress:
            on_progress(min(start + len(chunk), len(texts)), len(texts))
    if not blocks:
        return scipy.sparse.csr_matrix((0, model.get_embedding_dimension()), dtype=np.float32)
    return scipy.sparse.vstack(blocks, format="csr")


def sparse_top_k(queries: Any, documents: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions) of each query's ``k`` best documents by dot product, best first
    (ties by position); a document scoring 0 shares no active term and is left out (-1)."""
    n, d = queries.shape[0], documents.shape[0]
    k = max(1, min(k, d))
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    positions = np.full((n, k), -1, dtype=np.int64)
    transposed = documents.T.tocsc()
    for start in range(0, n, QUERY_BLOCK):
        block = (queries[start : start + QUERY_BLOCK] @ transposed).toarray()
        for i, row in enumerate(block):
            top = np.argpartition(-row, k - 1)[:k] if k < d else np.arange(d)
            top = top[np.lexsort((top, -row[top]))]
            keep = top[row[top] > 0]
            scores[start + i, : len(keep)] = row[keep]
            positions[start + i, : len(keep)] = keep
    return scores, positions
