"""Query adapters for model upgrades without a backfill (Drift-Adapter style).

A new embedding model's query vectors are mapped into an old model's space so that an index
built with the old model keeps answering while the corpus is re-embedded. The map is fitted on
the same documents encoded by both models: ``new_docs @ W ≈ old_docs``.

- ``orthogonal``: orthogonal Procrustes (``scipy.linalg.orthogonal_procrustes``): W is a
  rotation/reflection, so it keeps lengths and angles; both spaces must have one dimension.
- ``linear``: least squares (``numpy.linalg.lstsq``, optional ridge), any two dimensions.

Plus the compatibility report: how each model's queries fare on the other model's corpus
vectors, recall@k against each model's own exact search, and nDCG@10 on judged queries.

Pure numpy/scipy: no Django, no torch.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("orthogonal", "linear")


def fit_adapter(
    source: np.ndarray, target: np.ndarray, *, kind: str = "orthogonal", ridge: float = 0.0
) -> np.ndarray:
    """W (source dims × target dims) minimising ``‖source @ W − target‖``. Rows are paired
    (the same document under the two models)."""
    src = np.asarray(source, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if src.ndim != 2 or tgt.ndim != 2 or len(src) != len(tgt):
        raise ValueError("source and target must be two matrices with the same rows")
    if len(src) == 0:
        raise ValueError("no paired vectors to fit on")
    if kind == "orthogonal":
        if src.shape[1] != tgt.shape[1]:
            raise ValueError(
                f"adapter: orthogonal needs one dimension in both spaces ({src.shape[1]} and "
                f"{tgt.shape[1]}); use linear"
            )
        from scipy.linalg import orthogonal_procrustes

        matrix, _ = orthogonal_procrustes(src, tgt)
    elif kind == "linear":
        if ridge < 0:
            raise ValueError("ridge must be ≥ 0")
        if ridge:
            gram = src.T @ src + ridge * np.eye(src.shape[1])
            matrix = np.linalg.solve(gram, src.T @ tgt)
        else:
            matrix = np.linalg.lstsq(src, tgt, rcond=None)[0]
    else:
        raise ValueError(f"adapter: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def apply_adapter(vectors: np.ndarray, matrix: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Map query vectors through W; re-normalised when the index's model normalises (a
    least-squares map does not keep lengths)."""
    mapped = np.asarray(vectors, dtype=np.float32) @ matrix
    if normalize:
        norms = np.linalg.norm(mapped, axis=1, keepdims=True)
        mapped = mapped / np.maximum(norms, 1e-12)
    return mapped.astype(np.float32, copy=False)


def fit_quality(source: np.ndarray, target: np.ndarray, matrix: np.ndarray) -> dict[str, float]:
    """Mean cosine between mapped source rows and their target rows, and the relative
    residual ‖source W − target‖ / ‖target‖."""
    mapped = np.asarray(source, dtype=np.float32) @ matrix
    tgt = np.asarray(target, dtype=np.float32)
    num = (mapped * tgt).sum(axis=1)
    den = np.linalg.norm(mapped, axis=1) * np.linalg.norm(tgt, axis=1)
    cosine = float(np.mean(num / np.maximum(den, 1e-12)))
    residual = float(np.linalg.norm(mapped - tgt) / max(np.linalg.norm(tgt), 1e-12))
    return {"mean_cosine": cosine, "relative_residual": residual}


def adapter_bytes(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype=np.float32))
    return buffer.getvalue()


def adapter_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_adapter(path: str | Path, *, sha256: str | None = None) -> np.ndarray:
    """The matrix saved at ``path``; ``sha256`` (as recorded when it was fitted) refuses a file
    that changed since."""
    data = Path(path).read_bytes()
    if sha256 is not None and adapter_digest(data) != sha256:
        raise ValueError("the adapter's file changed since it was fitted")
    matrix = np.load(io.BytesIO(data), allow_pickle=False)
    if matrix.ndim != 2:
        raise ValueError("an adapter is a matrix")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def top_k(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search: (scores, positions), best first, in blocks of queries."""
    docs = np.asarray(docs, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    k = min(k, len(docs))
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    pos_out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):
        block = queries[start : start + 256] @ docs.T
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        pos_out[start : start + 256] = np.take_along_axis(part, order, axis=1)
        scores_out[start : start + 256] = np.take_along_axis(part_scores, order, axis=1)
    return scores_out, pos_out


def overlap_at_k(found: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean share of each reference top-k found in the same query's top-k (recall@k against
    a reference search)."""
    if len(found) == 0:
        return 0.0
    shares = [
        len(set(a[:k].tolist()) & set(b[:k].tolist())) / max(1, len(b[:k]))
        for a, b in zip(found, reference, strict=True)
    ]
    return float(np.mean(shares))


def per_query_metrics(
    *,
    scores: np.ndarray,
    positions: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: dict[str, dict[str, int]],
) -> dict[str, dict[str, float]]:
    """nDCG@10 and Recall@10 (against the judgements) of each judged query; 0 for a judged
    query with no hits."""
    from workers.ml.metrics import compute_metrics

    run = {
        qid: {doc_ids[p]: float(s) for p, s in zip(positions[i], scores[i], strict=True)}
        for i, qid in enumerate(query_ids)
    }
    _, per_query = compute_metrics(qrels=qrels, run=run)
    return {
        qid: {"ndcg@10": values["ndcg@10"], "recall@10": values["recall@10"]}
        for qid, values in per_query.items()
    }


def adapter_latency_us(matrix: np.ndarray, queries: np.ndarray, *, repeats: int = 200) -> float:
    """Median microseconds to map one query vector (the search process's per-query cost)."""
    queries = np.asarray(queries, dtype=np.float32)
    if len(queries) == 0:
        return 0.0
    times = []
    for i in range(repeats):
        q = queries[i % len(queries)][None, :]
        t0 = time.perf_counter()
        apply_adapter(q, matrix)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def compatibility_report(
    *,
    old_docs: np.ndarray,
    new_docs: np.ndarray,
    old_queries: np.ndarray,
    new_queries: np.ndarray,
    matrix: np.ndarray | None,
    doc_ids: Sequence[str],
    query_ids: Sequence[str],
    qrels: dict[str, dict[str, int]] | None = None,
    normalize: bool = True,
    k: int = 10,
) -> dict[str, Any]:
    """How far apart the two spaces are, and how much the adapter brings back.

    ``recall`` figures are recall@k against a model's own exact search (its queries on its
    own corpus vectors): ``new_on_old`` (new queries, old corpus, no adapter) and
    ``adapted_on_old`` against the new model's; ``old_on_new`` against the old model's;
    ``adapted_vs_old`` is the adapted search against the old model's own. ``ndcg_at_10`` and
    ``judged_recall_at_10`` (with judged queries): every side's mean against the judgements;
    ``per_query`` every side's nDCG@10 per judged query, for a paired test. A raw cross
    search between spaces of different dimensions is None.
    """
    same_dim = old_docs.shape[1] == new_docs.shape[1]
    old_ref = top_k(old_queries, old_docs, k)
    new_ref = top_k(new_queries, new_docs, k)
    sides: dict[str, tuple[np.ndarray, np.ndarray] | None] = {
        "old": old_ref,
        "new": new_ref,
        "new_on_old": top_k(new_queries, old_docs, k) if same_dim else None,
        "old_on_new": top_k(old_queries, new_docs, k) if same_dim else None,
        "adapted_on_old": (
            top_k(apply_adapter(new_queries, matrix, normalize=normalize), old_docs, k)
            if matrix is not None
            else None
        ),
    }

    def recall(side: str, reference) -> float | None:
        got = sides[side]
        return None if got is None else overlap_at_k(got[1], reference[1], k)

    report: dict[str, Any] = {
        "k": k,
        "queries": len(query_ids),
        "documents": len(doc_ids),
        "dimensions": {"old": int(old_docs.shape[1]), "new": int(new_docs.shape[1])},
        "recall": {
            "new_on_old": recall("new_on_old", new_ref),
            "old_on_new": recall("old_on_new", old_ref),
            "adapted_on_old": recall("adapted_on_old", new_ref),
            "adapted_vs_old": recall("adapted_on_old", old_ref),
        },
    }
    if qrels:
        measured = {
            side: per_query_metrics(
                scores=got[0], positions=got[1], query_ids=query_ids, doc_ids=doc_ids, qrels=qrels
            )  # fmt: skip
            for side, got in sides.items()
            if got is not None
        }

        def mean(side: str, metric: str) -> float | None:
            if side not in measured:
                return None
            return float(np.mean([v[metric] for v in measured[side].values()]))

        report["ndcg_at_10"] = {side: mean(side, "ndcg@10") for side in sides}
        report["judged_recall_at_10"] = {side: mean(side, "recall@10") for side in sides}
        report["per_query"] = {
            side: {qid: v["ndcg@10"] for qid, v in values.items()}
            for side, values in measured.items()
        }
        ndcg = report["ndcg_at_10"]
        # Drift-Adapter's figure: the share of the re-embedded search's quality that the old
        # index reaches through the adapter, before any document is re-embedded.
        report["recovered"] = (
            ndcg["adapted_on_old"] / ndcg["new"]
            if ndcg["adapted_on_old"] is not None and ndcg["new"] > 0
            else None
        )
        report["new_minus_old"] = ndcg["new"] - ndcg["old"]
    return report
