"""The what-if sweep (Matryoshka dimension × precision) on small arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from workers.ml.metrics import compute_metrics
from workers.ml.search import exact_search
from workers.ml.sweep import (
    PRECISIONS,
    bytes_per_vector,
    search_precision,
    sweep_dims,
    truncate,
    whatif_sweep,
)

METRIC_KEYS = ("ndcg@10", "recall@100", "mrr@10")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def self_retrieval(docs: np.ndarray) -> dict:
    """Each query is a document's own vector and that document is its only relevant one."""
    ids = [f"d{i}" for i in range(len(docs))]
    qids = [f"q{i}" for i in range(len(docs))]
    return {
        "doc_embeddings": docs,
        "query_embeddings": docs.copy(),
        "doc_ids": ids,
        "query_ids": qids,
        "qrels": {q: {d: 1} for q, d in zip(qids, ids, strict=True)},
    }


def decaying(n_docs: int = 1000, n_queries: int = 100, dim: int = 128, seed: int = 0) -> dict:
    """Realistic-ish embeddings: a decaying spectrum (most variance in the first components, as
    in trained models), each query a noisy copy of its one relevant document. The noise is
    partly spectrum-shaped and partly isotropic, so the low-variance tail is mostly noise:
    float scoring weighs it down, sign bits count it in full."""
    rng = np.random.default_rng(seed)
    spectrum = np.exp(-np.arange(dim) / (dim / 4))
    docs = unit(rng.standard_normal((n_docs, dim)) * spectrum)
    targets = rng.choice(n_docs, size=n_queries, replace=False)
    noise = 1.2 * rng.standard_normal((n_queries, dim)) * spectrum / np.linalg.norm(spectrum)
    noise += 0.5 * rng.standard_normal((n_queries, dim)) / np.sqrt(dim)
    queries = unit(docs[targets] + noise)
    qids = [f"q{i}" for i in range(n_queries)]
    return {
        "doc_embeddings": docs,
        "query_embeddings": queries,
        "doc_ids": [f"d{i}" for i in range(n_docs)],
        "query_ids": qids,
        "qrels": {q: {f"d{t}": 1} for q, t in zip(qids, targets, strict=True)},
    }


def row(rows: list[dict], dim: int, precision: str) -> dict:
    (found,) = [r for r in rows if r["dim"] == dim and r["precision"] == precision]
    return found


def test_default_dims_are_matryoshka_steps_up_to_full() -> None:
    assert sweep_dims(384) == [32, 64, 128, 256, 384]
    assert sweep_dims(256) == [32, 64, 128, 256]
    assert sweep_dims(64) == [32, 64]
    assert sweep_dims(20) == [20]
    assert sweep_dims(384, [128, 32, 128]) == [32, 128]
    with pytest.raises(ValueError):
        sweep_dims(64, [128])
    with pytest.raises(ValueError):
        sweep_dims(64, [0])


def test_bytes_per_vector() -> None:
    assert [bytes_per_vector(256, p) for p in PRECISIONS] == [1024, 256, 32, 32]
    assert [bytes_per_vector(384, p) for p in PRECISIONS] == [1536, 384, 48, 48]
    assert bytes_per_vector(20, "binary") == 3  # padded to whole bytes
    with pytest.raises(ValueError):
        bytes_per_vector(8, "int4")


def test_truncate_renormalises_and_keeps_zero_rows() -> None:
    x = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    out = truncate(x, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_identical_queries_and_documents_score_perfectly_at_every_precision() -> None:
    rng = np.random.default_rng(3)
    docs = unit(rng.standard_normal((40, 64)))
    rows = whatif_sweep(**self_retrieval(docs), top_k=10)
    assert [(r["dim"], r["precision"]) for r in rows] == [
        (d, p) for d in (32, 64) for p in PRECISIONS
    ]
    for r in rows:
        assert set(r) == {"dim", "precision", "bytes_per_vector", *METRIC_KEYS}
        assert r["bytes_per_vector"] == bytes_per_vector(r["dim"], r["precision"])
        if r["precision"] in ("float32", "int8"):
            assert r["ndcg@10"] == r["mrr@10"] == r["recall@100"] == 1.0, r
    # Random sign patterns of 32+ bits are distinct: Hamming 0 only for the query's own document.
    assert row(rows, 64, "binary")["ndcg@10"] == 1.0
    assert row(rows, 64, "binary_rescore")["recall@100"] == 1.0


def test_float32_full_dim_equals_exact_search() -> None:
    data = decaying(n_docs=300, n_queries=40, dim=48, seed=5)
    rows = whatif_sweep(**data, precisions=("float32",))
    scores, indices = exact_search(
        doc_embeddings=data["doc_embeddings"], query_embeddings=data["query_embeddings"], k=100
    )
    run = {
        q: {data["doc_ids"][j]: float(s) for s, j in zip(scores[i], indices[i], strict=True)}
        for i, q in enumerate(data["query_ids"])
    }
    means, _ = compute_metrics(qrels=data["qrels"], run=run)
    full = row(rows, 48, "float32")
    assert {k: full[k] for k in METRIC_KEYS} == {k: means[k] for k in METRIC_KEYS}
    assert [r["dim"] for r in rows] == [32, 48]


def test_binary_on_sign_separable_data() -> None:
    # Documents with distinct sign patterns; each query shares its document's signs but not
    # its magnitudes, so Hamming distance 0 picks the right document at similarity 1.
    rng = np.random.default_rng(7)
    signs = np.array([[1 if (i >> b) & 1 else -1 for b in range(8)] for i in range(16)])
    docs = unit(signs * rng.uniform(0.1, 1.0, size=signs.shape))
    queries = unit(signs * rng.uniform(0.1, 1.0, size=signs.shape))
    scores, indices = search_precision("binary", docs, queries, top_k=3, rescore_multiplier=4)
    assert indices[:, 0].tolist() == list(range(16))
    assert scores[:, 0].tolist() == [1.0] * 16
    # Every runner-up differs in exactly one of the 8 bits: 1 − 2·1/8.
    np.testing.assert_allclose(scores[:, 1:], 0.75)
    data = self_retrieval(docs) | {"query_embeddings": queries}
    rows = whatif_sweep(**data, precisions=("binary",), top_k=5)
    assert rows == [
        {
            "dim": 8,
            "precision": "binary",
            "bytes_per_vector": 1,
            "ndcg@10": 1.0,
            "recall@100": 1.0,
            "mrr@10": 1.0,
        }
    ]


def test_binary_rescore_is_float_query_times_document_bits() -> None:
    # sentence-transformers' ubinary rescoring: query · unpackbits(document), over candidates.
    docs = np.array(
        [[1, 1, -1, -1], [1, -1, 1, -1], [-1, 1, 1, 1], [1, 1, 1, -1]], dtype=np.float32
    )
    query = np.array([[0.9, 0.1, 0.3, -0.2]], dtype=np.float32)
    scores, indices = search_precision("binary_rescore", docs, query, top_k=2, rescore_multiplier=2)
    bits = (docs > 0).astype(np.float64)
    by_hand = bits @ query[0].astype(np.float64)
    # 2 × 2 candidates = all four documents; by hand: [1.0, 1.2, 0.2, 1.3].
    np.testing.assert_allclose(by_hand, [1.0, 1.2, 0.2, 1.3], rtol=1e-6)
    assert indices[0].tolist() == [3, 1]
    np.testing.assert_allclose(scores[0], [1.3, 1.2], rtol=1e-6)
    # One candidate per result: the Hamming top 2 (documents 3 and then 0 or 1, at distance 0
    # and 1) are only re-ordered, so document 3 still wins with its float score.
    scores, indices = search_precision("binary_rescore", docs, query, top_k=1, rescore_multiplier=1)
    assert indices[0].tolist() == [3]
    np.testing.assert_allclose(scores[0], [1.3], rtol=1e-6)


def test_rescore_with_multiplier_one_reorders_the_binary_candidates_only() -> None:
    data = decaying(n_docs=400, n_queries=30, dim=32, seed=11)
    rows = whatif_sweep(**data, precisions=("binary", "binary_rescore"), rescore_multiplier=1)
    assert row(rows, 32, "binary_rescore")["recall@100"] == row(rows, 32, "binary")["recall@100"]


def test_small_corpus_odd_dim_and_progress() -> None:
    rng = np.random.default_rng(2)
    docs = unit(rng.standard_normal((5, 20)))
    seen: list[tuple[int, int]] = []
    rows = whatif_sweep(
        **self_retrieval(docs),
        top_k=100,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, 4) for i in range(1, 5)]
    assert [r["bytes_per_vector"] for r in rows] == [80, 20, 3, 3]
    assert row(rows, 20, "float32")["ndcg@10"] == 1.0
    for r in rows:  # five documents: every one is retrieved whatever the precision
        assert r["recall@100"] == 1.0


def test_rejects_bad_input() -> None:
    data = self_retrieval(unit(np.eye(4, dtype=np.float32) + 0.1))
    with pytest.raises(ValueError, match="precision"):
        whatif_sweep(**data, precisions=("float16",))
    with pytest.raises(ValueError):
        whatif_sweep(**data, dims=[8])
    with pytest.raises(ValueError, match="mismatch"):
        whatif_sweep(**data | {"query_embeddings": np.ones((4, 3), dtype=np.float32)})
    with pytest.raises(ValueError, match="length"):
        whatif_sweep(**data | {"doc_ids": ["a"]})


def test_realistic_int8_close_to_float32_and_rescore_helps_binary() -> None:
    data = decaying()
    rows = whatif_sweep(**data)
    assert [r["dim"] for r in rows[:: len(PRECISIONS)]] == [32, 64, 128]
    for dim in (32, 64, 128):
        f32, i8 = row(rows, dim, "float32"), row(rows, dim, "int8")
        binary, rescored = row(rows, dim, "binary"), row(rows, dim, "binary_rescore")
        assert 0.5 < f32["ndcg@10"] < 1.0  # neither trivial nor hopeless
        assert abs(i8["ndcg@10"] - f32["ndcg@10"]) <= 0.02, (dim, i8, f32)
        assert abs(i8["recall@100"] - f32["recall@100"]) <= 0.02, (dim, i8, f32)
        # Sign bits lose a lot here; re-scoring the candidates wins much of it back.
        assert binary["ndcg@10"] < f32["ndcg@10"] - 0.1, (dim, binary, f32)
        assert rescored["ndcg@10"] >= binary["ndcg@10"] + 0.05, (dim, rescored, binary)
        assert rescored["ndcg@10"] <= f32["ndcg@10"] + 1e-9
