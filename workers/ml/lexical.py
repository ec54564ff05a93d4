"""BM25 with bm25s, one way everywhere: the evaluation's baseline, mining's candidates, and
the BM25 index an index build can carry for the search process (mode bm25 and hybrid).

Lucene's BM25 (bm25s defaults: k1 = 1.5, b = 0.75), English stopwords, bm25s' own tokenizer.
A document sharing no term with the query scores 0 and is not a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def bm25_index(texts: Sequence[str]):
    """A bm25s retriever over ``texts`` (their positions are its document ids)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False
    )
    return retriever


def bm25_search(
    retriever, queries: Sequence[str], *, k: int, selected: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores), each (queries, k'), best first, k' = min(k, documents allowed);
    position -1 where fewer documents matched. ``selected`` (ascending positions) limits the
    search to those documents (a filter), by bm25s' weight mask."""
    import bm25s

    count = int(retriever.scores["num_docs"])
    allowed = count if selected is None else len(selected)
    k = min(int(k), allowed)
    if k <= 0 or not len(queries):
        empty = np.empty((len(queries), 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    mask = None
    if selected is not None:
        mask = np.zeros(count, dtype=np.float32)
        mask[selected] = 1.0
    tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
    positions, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1,
                                           weight_mask=mask)  # fmt: skip
    positions = np.asarray(positions, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    positions[scores <= 0] = -1
    return positions, scores


def bm25_save(retriever, folder: Path) -> None:
    retriever.save(str(folder))


def bm25_load(folder: Path, *, mmap: bool = True):
    import bm25s

    return bm25s.BM25.load(str(folder), mmap=mmap)
