"""Embedding diagnostics: descriptive figures about an embedding space, shown beside the
retrieval metrics to help explain them, never as targets to optimise.

- alignment and uniformity (Wang & Isola 2020), on L2-normalised vectors;
- effective rank of the document matrix (Roy & Vetterli 2007);
- anisotropy: the mean cosine of random document pairs;
- cosine score distributions of judged-relevant vs retrieved non-relevant documents;
- nDCG@10 by query length.

Everything returned is plain Python (floats, ints, lists, dicts, None): JSON-serialisable.
"""

from __future__ import annotations

import math

import numpy as np

# (label, fewest words, most words or None); queries of zero words count in the first bucket.
LENGTH_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1–5", 1, 5),
    ("6–10", 6, 10),
    ("11–20", 11, 20),
    ("21+", 21, None),
)

_CHUNK = 4096
# Matrices up to this many elements get a direct SVD; larger ones go through the Gram matrix.
DIRECT_SVD_MAX_ELEMENTS = 4_000_000


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, kept in float32 (a corpus-sized float64 copy would double
    the memory; sums below are taken in float64 chunk by chunk); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def alignment(queries: np.ndarray, positives: np.ndarray) -> float:
    """E ||f(q) − f(d+)||² (alpha = 2) over row-aligned pairs of normalised vectors."""
    diff = np.asarray(queries, dtype=np.float64) - np.asarray(positives, dtype=np.float64)
    return float(np.mean(np.sum(diff**2, axis=1)))


def uniformity(x: np.ndarray, i: np.ndarray, j: np.ndarray, t: float = 2.0) -> float:
    """log E exp(−t ||x_i − x_j||²) over the given index pairs, computed stably."""
    sq = _pair_sq_distances(x, i, j)
    a = -t * sq
    top = a.max()
    return float(top + math.log(np.mean(np.exp(a - top))))


def effective_rank(x: np.ndarray) -> float:
    """exp of the Shannon entropy of the L1-normalised singular values (Roy & Vetterli 2007).

    Singular values below numerical noise (numpy's matrix_rank tolerance) count as zero, so a
    rank-r matrix with r equal singular values scores r exactly.
    """
    x = np.asarray(x)
    n, d = x.shape
    if n == 0 or d == 0:
        return 0.0
    if n * d <= DIRECT_SVD_MAX_ELEMENTS:
        s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
        s = s[s > s.max() * max(n, d) * np.finfo(np.float64).eps]
    else:
        # A tall matrix: the singular values are the square roots of the d×d Gram matrix's
        # eigenvalues, accumulated in row chunks rather than holding an n×d float64 copy.
        gram = np.zeros((d, d))
        for start in range(0, n, _CHUNK):
            block = x[start : start + _CHUNK].astype(np.float64)
            gram += block.T @ block
        eig = np.linalg.eigvalsh(gram)
        eig = eig[eig > eig.max() * max(n, d) * np.finfo(np.float64).eps]
        s = np.sqrt(eig)
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(math.exp(-np.sum(p * np.log(p))))


def random_pairs(n: int, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i ≠ j: every unordered pair when there are at most ``pairs`` of them (an
    exact answer), else ``pairs`` uniform draws with replacement."""
    if n < 2 or pairs < 1:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if n * (n - 1) // 2 <= pairs:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=pairs)
    j = rng.integers(0, n - 1, size=pairs)
    j = j + (j >= i)  # uniform over the n − 1 others
    return i, j


def _pair_sq_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.empty(len(i))
    for start in range(0, len(i), _CHUNK):
        a = x[i[start : start + _CHUNK]].astype(np.float64)
        b = x[j[start : start + _CHUNK]].astype(np.float64)
        out[start : start + _CHUNK] = np.sum((a - b) ** 2, axis=1)
    return out


def _pair_cosines(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.empty(len(i))
    for start in range(0, len(i), _CHUNK):
        a = x[i[start : start + _CHUNK]].astype(np.float64)
        b = x[j[start : start + _CHUNK]].astype(np.float64)
        out[start : start + _CHUNK] = np.sum(a * b, axis=1)
    return out


def score_distributions(
    positive: list[float], negative: list[float], bins: int = 20
) -> dict[str, object]:
    """Histograms of two score samples over one shared range (their joint min to max)."""
    both = np.asarray(positive + negative, dtype=np.float64)
    if both.size == 0:
        edges: list[float] = []
        pos_counts: list[int] = []
        neg_counts: list[int] = []
    else:
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:  # one value only: a single bin around it
            lo, hi = lo - 0.5e-3, hi + 0.5e-3
        grid = np.linspace(lo, hi, bins + 1)
        edges = [float(e) for e in grid]
        pos_counts = [int(c) for c in np.histogram(positive, bins=grid)[0]]
        neg_counts = [int(c) for c in np.histogram(negative, bins=grid)[0]]
    return {
        "edges": edges,
        "positive": pos_counts,
        "negative": neg_counts,
        "positive_count": len(positive),
        "negative_count": len(negative),
        "positive_mean": float(np.mean(positive)) if positive else None,
        "negative_mean": float(np.mean(negative)) if negative else None,
    }


def length_buckets(
    per_query_ndcg: dict[str, float], query_texts: dict[str, str]
) -> list[dict[str, object]]:
    """Mean nDCG@10 of the queries in each word-count bucket (queries without a text are left
    out). Every bucket is listed; an empty one has count 0 and mean None."""
    values: list[list[float]] = [[] for _ in LENGTH_BUCKETS]
    for qid, ndcg in per_query_ndcg.items():
        text = query_texts.get(qid)
        if text is None:
            continue
        words = len(text.split())
        for slot, (_, _, most) in enumerate(LENGTH_BUCKETS):
            if most is None or words <= most:
                values[slot].append(float(ndcg))
                break
    return [
        {
            "label": label,
            "min_words": fewest,
            "max_words": most,
            "count": len(vals),
            "mean_ndcg@10": float(np.mean(vals)) if vals else None,
        }
        for (label, fewest, most), vals in zip(LENGTH_BUCKETS, values, strict=True)
    ]


def embedding_diagnostics(
    *,
    doc_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    doc_ids: list[str],
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    per_query_ndcg: dict[str, float],
    query_texts: dict[str, str],
    seed: int = 0,
    pairs: int = 10_000,
    bins: int = 20,
) -> dict:
    """All diagnostics in one JSON-serialisable dict.

    ``alignment``: mean squared distance of (query, judged-relevant document) pairs
    (``alignment_pairs`` of them; None when there are none). ``uniformity`` and ``anisotropy``
    (mean cosine) over ``pair_count`` document pairs i ≠ j: all of them when they number at most
    ``pairs``, else a seeded random sample (None below two documents). ``effective_rank`` of the
    normalised, uncentred document matrix, at most ``effective_rank_max`` = min(documents,
    dim). ``score_distributions``: cosines of each judged query with its relevant documents
    (``positive``) and with the non-relevant documents in its run's top 10 (``negative``).
    ``length_buckets``: count and mean nDCG@10 per query-length bucket.
    """
    from workers.ml.metrics import trec_cut

    if len(doc_ids) != len(doc_embeddings) or len(query_ids) != len(query_embeddings):
        raise ValueError("ids and embeddings differ in length")
    docs = l2_normalise(doc_embeddings) if len(doc_embeddings) else np.empty((0, 0), np.float32)
    queries = (
        l2_normalise(query_embeddings) if len(query_embeddings) else np.empty((0, 0), np.float32)
    )
    doc_row = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    query_row = {query_id: row for row, query_id in enumerate(query_ids)}

    relevant = {
        qid: {d for d, rel in judged.items() if rel > 0 and d in doc_row}
        for qid, judged in qrels.items()
        if qid in query_row
    }
    judged_pairs = [
        (query_row[qid], doc_row[d]) for qid, rel_docs in relevant.items() for d in sorted(rel_docs)
    ]
    q_idx = [q for q, _ in judged_pairs]
    d_idx = [d for _, d in judged_pairs]
    align = alignment(queries[q_idx], docs[d_idx]) if judged_pairs else None

    i, j = random_pairs(len(docs), pairs, seed)
    uniform = uniformity(docs, i, j) if len(i) else None
    aniso = float(np.mean(_pair_cosines(docs, i, j))) if len(i) else None

    positive: list[float] = []
    negative: list[float] = []
    top10 = trec_cut({qid: run.get(qid, {}) for qid in relevant}, 10)
    for qid, rel_docs in relevant.items():
        q = queries[query_row[qid]].astype(np.float64)
        positive.extend(float(q @ docs[doc_row[d]].astype(np.float64)) for d in sorted(rel_docs))
        negative.extend(
            float(q @ docs[doc_row[d]].astype(np.float64))
            for d in top10[qid]
            if d in doc_row and d not in rel_docs
        )

    return {
        "documents": len(doc_ids),
        "queries": len(query_ids),
        "alignment": align,
        "alignment_pairs": len(judged_pairs),
        "uniformity": uniform,
        "anisotropy": aniso,
        "pair_count": len(i),
        "effective_rank": effective_rank(docs) if docs.size else None,
        "effective_rank_max": int(min(docs.shape)) if docs.size else 0,
        "score_distributions": score_distributions(positive, negative, bins=bins),
        "length_buckets": length_buckets(per_query_ndcg, query_texts),
    }
