"""Hard-negative mining: candidates from a dense model, BM25 (bm25s) or both, a rank window,
never a judged positive, and NV-Retriever's positive-aware filter.

The selection rules are those of sentence-transformers' ``mine_hard_negatives`` (a test checks
that the dense path picks exactly the same negatives). It is not called directly because it
cannot take BM25 candidates, positives given by judgement rather than by equal text, a
progress/cancel callback during encoding, nor report *which* candidates its margin dropped,
and those dropped candidates (the likely false negatives) are what the inspector shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# The rules' knobs, with their defaults and bounds, are the mining job's config (one class for
# the web's form and API and for this module); an instance is already validated.
from workers.common.configs.curation import MiningOptions


@dataclass
class Candidate:
    index: int  # into the corpus
    score: float
    rank: int  # 1-based rank among all candidates of the query, positives included


@dataclass
class MinedQuery:
    query: int
    positive_scores: list[float]
    negatives: list[Candidate] = field(default_factory=list)
    # Dropped by the positive-aware filter or max_score: probably unjudged positives.
    flagged: list[Candidate] = field(default_factory=list)


def select_negatives(
    *,
    candidate_indices: np.ndarray,
    candidate_scores: np.ndarray,
    positives: Sequence[Sequence[int]],
    positive_scores: Sequence[Sequence[float]],
    config: MiningOptions,
) -> list[MinedQuery]:
    """Apply the rules to ranked candidates (queries × c, best first, -1 for none)."""
    rng = np.random.default_rng(config.seed)
    out = []
    for q in range(len(candidate_indices)):
        pos = set(int(p) for p in positives[q])
        pos_scores = [float(s) for s in positive_scores[q]]
        mined = MinedQuery(query=q, positive_scores=pos_scores)
        # The hardest positive sets the bar, as in sentence-transformers.
        floor = min(pos_scores) if pos_scores else None
        threshold = None
        if floor is not None and config.relative_margin is not None:
            threshold = floor - abs(floor) * config.relative_margin
        remaining: list[Candidate] = []
        for rank, (idx, score) in enumerate(
            zip(candidate_indices[q], candidate_scores[q], strict=True), start=1
        ):
            idx = int(idx)
            if idx < 0 or not np.isfinite(score) or idx in pos:
                continue
            cand = Candidate(index=idx, score=float(score), rank=rank)
            if (threshold is not None and score > threshold) or (
                config.max_score is not None and score > config.max_score
            ):
                mined.flagged.append(cand)
            else:
                remaining.append(cand)
        window = remaining[: config.range_max][config.range_min :]
        if config.sampling == "random" and len(window) > config.num_negatives:
            picked = sorted(rng.choice(len(window), config.num_negatives, replace=False))
            mined.negatives = [window[i] for i in picked]
        else:
            mined.negatives = window[: config.num_negatives]
        out.append(mined)
    return out


def bm25_candidates(
    *, queries: Sequence[str], corpus: Sequence[str], k: int
) -> tuple[np.ndarray, np.ndarray, object]:
    """BM25 top-k per query with bm25s: (indices, scores, retriever); -1 where nothing matched."""
    from workers.ml.lexical import bm25_index, bm25_search

    retriever = bm25_index(corpus)
    indices, scores = bm25_search(retriever, queries, k=max(1, k))
    return indices, scores, retriever


def bm25_scores_of(retriever, *, query: str, documents: Sequence[int]) -> list[float]:
    import bm25s

    tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    scores = retriever.get_scores(tokens)
    return [float(scores[d]) for d in documents]


def dense_candidates(
    *, query_vectors: np.ndarray, corpus_vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    from workers.ml.search import exact_search

    scores, indices = exact_search(
        doc_embeddings=corpus_vectors, query_embeddings=query_vectors, k=k
    )
    return indices, scores


def merge_candidates(
    *,
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Union of two candidate lists per query, re-scored by the dense model, best first."""
    width = first.shape[1] + second.shape[1]
    indices = np.full((len(first), width), -1, dtype=np.int64)
    scores = np.full((len(first), width), -np.inf, dtype=np.float32)
    for q in range(len(first)):
        union = np.unique(np.concatenate([first[q], second[q]]))
        union = union[union >= 0]
        s = corpus_vectors[union] @ query_vectors[q]
        order = np.argsort(-s, kind="stable")
        indices[q, : len(union)] = union[order]
        scores[q, : len(union)] = s[order]
    return indices, scores
