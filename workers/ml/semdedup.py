"""SemDeDup (Abbas et al., 2023): semantic near-duplicate removal over embeddings.

Cluster normalised embeddings with faiss k-means, then within each cluster drop an item whose
cosine similarity to an item already kept is at or above the threshold. Keep priority inside a
cluster: protected items first (e.g. judged documents, which evaluation needs), then items
farthest from the centroid, as in the paper (they carry the most distinct content). Comparing
only with kept items means every removed item has a kept near-duplicate to show the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per item
    # (removed index, kept index, cosine) for every removed item
    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    n_clusters: int = 0
    largest_cluster: int = 0

    @property
    def removed(self) -> int:
        return int((~self.keep).sum())


def cluster_count(n: int) -> int:
    """A default k: about sqrt(n), so clusters hold ~sqrt(n) items and the pairwise step is
    O(n * sqrt(n)) in all."""
    return max(1, min(n, int(round(np.sqrt(n)))))


def semdedup(
    embeddings: np.ndarray,
    *,
    threshold: float,
    n_clusters: int | None = None,
    protected: np.ndarray | None = None,
    seed: int = 0,
    niter: int = 20,
    on_progress: Callable[[int, int], None] | None = None,
) -> DedupResult:
    """Near-duplicates of normalised ``embeddings`` (n, d) at cosine >= ``threshold``."""
    import faiss

    n = len(embeddings)
    if n == 0:
        return DedupResult(keep=np.ones(0, dtype=bool))
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    k = min(n, n_clusters or cluster_count(n))
    if k > 1:
        kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
        # faiss warns and subsamples below 39 points per centroid; that is fine here.
        kmeans.train(x)
        _, assign = kmeans.index.search(x, 1)
        assign = assign[:, 0]
        centroids = kmeans.centroids
    else:
        assign = np.zeros(n, dtype=np.int64)
        centroids = x.mean(axis=0, keepdims=True)
    protected = np.zeros(n, dtype=bool) if protected is None else protected.astype(bool)
    keep = np.ones(n, dtype=bool)
    pairs: list[tuple[int, int, float]] = []
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(k + 1))
    largest = 0
    for c in range(k):
        members = order[bounds[c] : bounds[c + 1]]
        largest = max(largest, len(members))
        if len(members) > 1:
            _dedup_cluster(x, members, centroids[c], protected, threshold, keep, pairs)
        if on_progress:
            on_progress(int(bounds[c + 1]), n)
    return DedupResult(keep=keep, pairs=pairs, n_clusters=k, largest_cluster=largest)


def _dedup_cluster(x, members, centroid, protected, threshold, keep, pairs) -> None:
    to_centroid = x[members] @ centroid
    # Protected first, then farthest from the centroid first.
    priority = np.lexsort((to_centroid, ~protected[members]))
    members = members[priority]
    vectors = x[members]
    # The full similarity matrix only while it is small; a huge cluster compares row by row.
    sims = vectors @ vectors.T if len(members) <= 4096 else None
    kept_local: list[int] = []
    for i in range(len(members)):
        if kept_local and not protected[members[i]]:
            row = sims[i, kept_local] if sims is not None else vectors[kept_local] @ vectors[i]
            j = int(np.argmax(row))
            if row[j] >= threshold:
                keep[members[i]] = False
                pairs.append((int(members[i]), int(members[kept_local[j]]), float(row[j])))
                continue
        kept_local.append(i)
