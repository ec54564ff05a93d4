"""Embedding diagnostics on hand-made arrays whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workers.ml import diagnostics
from workers.ml.diagnostics import (
    effective_rank,
    embedding_diagnostics,
    length_buckets,
    random_pairs,
    score_distributions,
    uniformity,
)


def diagnose(docs: np.ndarray, queries: np.ndarray | None = None, **overrides: object) -> dict:
    queries = docs if queries is None else queries
    doc_ids = [f"d{i}" for i in range(len(docs))]
    query_ids = [f"q{i}" for i in range(len(queries))]
    values: dict = {
        "doc_embeddings": np.asarray(docs, dtype=np.float32),
        "query_embeddings": np.asarray(queries, dtype=np.float32),
        "doc_ids": doc_ids,
        "query_ids": query_ids,
        "qrels": {q: {f"d{i}": 1} for i, q in enumerate(query_ids)},
        "run": {},
        "per_query_ndcg": {},
        "query_texts": {},
    }
    return embedding_diagnostics(**{**values, **overrides})


def test_alignment_is_zero_when_queries_equal_their_documents() -> None:
    docs = np.eye(4) * 3.0  # not unit length: diagnostics normalise first
    out = diagnose(docs)
    assert out["alignment"] == 0.0
    assert out["alignment_pairs"] == 4


def test_alignment_of_orthogonal_pairs_is_two() -> None:
    docs = np.eye(4)
    queries = np.roll(np.eye(4), 1, axis=1)  # each query orthogonal to its document
    assert diagnose(docs, queries)["alignment"] == pytest.approx(2.0)


def test_alignment_ignores_non_relevant_and_unknown_judgements() -> None:
    docs = np.eye(3)
    qrels = {"q0": {"d0": 1, "d1": 0, "missing": 2}, "q1": {"d1": 0}, "unknown": {"d2": 1}}
    out = diagnose(docs, qrels=qrels)
    assert out["alignment"] == 0.0 and out["alignment_pairs"] == 1


def test_uniformity_and_anisotropy_of_two_antipodal_points() -> None:
    # ||x − y||² = 4, so log E exp(−2·4) = −8; their cosine is −1.
    out = diagnose(np.array([[2.0, 0.0], [-5.0, 0.0]]))
    assert out["uniformity"] == pytest.approx(-8.0)
    assert out["anisotropy"] == pytest.approx(-1.0)
    assert out["pair_count"] == 1


def test_uniformity_by_hand_on_three_points() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    i, j = random_pairs(3, 10, seed=0)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    # squared distances 2, 4, 2
    expected = math.log((math.exp(-4) + math.exp(-8) + math.exp(-4)) / 3)
    assert uniformity(x, i, j) == pytest.approx(expected)


def test_anisotropy_of_orthogonal_vectors_is_zero() -> None:
    out = diagnose(np.eye(6))
    assert out["anisotropy"] == 0.0
    # Six orthonormal points: every pair at squared distance 2.
    assert out["uniformity"] == pytest.approx(-4.0)


def test_random_pairs_are_seeded_distinct_and_sampled_when_many() -> None:
    i, j = random_pairs(200, 1000, seed=4)
    assert len(i) == 1000 and not np.any(i == j)
    assert 0 <= i.min() and max(i.max(), j.max()) < 200
    i2, j2 = random_pairs(200, 1000, seed=4)
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    assert len(random_pairs(1, 10, seed=0)[0]) == 0


def test_effective_rank_of_identity_and_rank_one() -> None:
    assert effective_rank(np.eye(7)) == pytest.approx(7.0)
    u = np.array([[1.0, 2.0, -1.0, 0.5]])
    assert effective_rank(np.array([[1.0], [2.0], [-3.0]]) @ u) == pytest.approx(1.0)
    # Two equal singular values and one half as large: exp(H) of (0.4, 0.4, 0.2).
    p = np.array([0.4, 0.4, 0.2])
    assert effective_rank(np.diag([2.0, 2.0, 1.0])) == pytest.approx(
        math.exp(-(p * np.log(p)).sum())
    )
    assert effective_rank(np.zeros((3, 3))) == 0.0


def test_effective_rank_of_a_tall_matrix_uses_the_gram_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(diagnostics, "DIRECT_SVD_MAX_ELEMENTS", 1000)
    monkeypatch.setattr(diagnostics, "_CHUNK", 128)  # several row chunks
    tall_orthogonal = np.tile(np.eye(16), (40, 1))  # 640 × 16
    assert effective_rank(tall_orthogonal) == pytest.approx(16.0)
    rng = np.random.default_rng(0)
    tall_rank_one = rng.standard_normal((640, 1)) @ rng.standard_normal((1, 16))
    assert effective_rank(tall_rank_one) == pytest.approx(1.0)
    p = np.array([0.4, 0.4, 0.2])
    tall = np.vstack([np.diag([2.0, 2.0, 1.0])] + [np.zeros((3, 3))] * 200)
    assert effective_rank(tall) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_effective_rank_in_diagnostics() -> None:
    out = diagnose(np.eye(5))
    assert out["effective_rank"] == pytest.approx(5.0) and out["effective_rank_max"] == 5
    rank_one = np.outer([1.0, 2.0, 3.0, 4.0], [0.6, 0.8, 0.0])
    out = diagnose(rank_one)
    assert out["effective_rank"] == pytest.approx(1.0) and out["effective_rank_max"] == 3


def test_score_distributions_of_relevant_vs_retrieved_non_relevant() -> None:
    # q0 = [1, 0]; d0 = [1, 0] relevant (cos 1); d1 = [0, 1] judged 0 (cos 0); d2 = [−1, 0]
    # unjudged (cos −1); twelve fillers [0, −1] (cos 0). The run's top 10 is d0, d1, d2 and
    # seven fillers: negatives are d1, d2 and those seven, never fillers ranked 11th or later.
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]] + [[0.0, -1.0]] * 12)
    doc_ids = ["d0", "d1", "d2"] + [f"f{i}" for i in range(12)]
    run = {"q0": {"d0": 0.9, "d1": 0.8, "d2": 0.7} | {f"f{i}": 0.5 - i / 100 for i in range(12)}}
    out = embedding_diagnostics(
        doc_embeddings=docs,
        query_embeddings=np.array([[1.0, 0.0]]),
        doc_ids=doc_ids,
        query_ids=["q0"],
        qrels={"q0": {"d0": 1, "d1": 0}},
        run=run,
        per_query_ndcg={"q0": 1.0},
        query_texts={"q0": "one two"},
        bins=4,
    )
    dist = out["score_distributions"]
    assert dist["edges"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert dist["positive"] == [0, 0, 0, 1]
    assert dist["negative"] == [1, 0, 8, 0]
    assert (dist["positive_count"], dist["negative_count"]) == (1, 9)
    assert dist["positive_mean"] == 1.0
    assert dist["negative_mean"] == pytest.approx(-1 / 9)


def test_score_distributions_when_empty_or_constant() -> None:
    empty = score_distributions([], [])
    assert empty["edges"] == [] and empty["positive_mean"] is None
    same = score_distributions([0.5, 0.5], [], bins=1)
    assert same["positive"] == [2] and same["negative"] == [0]
    assert same["edges"][0] < 0.5 < same["edges"][1]


def test_length_buckets_counts_and_means() -> None:
    texts = {
        "a": "one",
        "b": "one two three four five",
        "c": " ".join(["w"] * 6),
        "d": " ".join(["w"] * 10),
        "e": " ".join(["w"] * 11),
        "f": " ".join(["w"] * 21),
        "g": " ".join(["w"] * 40),
        "h": "",  # no words: counted with the shortest
    }
    ndcg = {"a": 1.0, "b": 0.5, "c": 0.2, "d": 0.4, "e": 0.9, "f": 0.0, "g": 0.3, "h": 0.0}
    ndcg["no_text"] = 1.0
    buckets = length_buckets(ndcg, texts)
    assert [b["label"] for b in buckets] == ["1–5", "6–10", "11–20", "21+"]
    assert [b["count"] for b in buckets] == [3, 2, 1, 2]
    assert [b["mean_ndcg@10"] for b in buckets] == pytest.approx([0.5, 0.3, 0.9, 0.15])
    assert [(b["min_words"], b["max_words"]) for b in buckets] == [
        (1, 5),
        (6, 10),
        (11, 20),
        (21, None),
    ]
    assert length_buckets({}, {})[0] == {
        "label": "1–5",
        "min_words": 1,
        "max_words": 5,
        "count": 0,
        "mean_ndcg@10": None,
    }


def test_diagnostics_are_json_serialisable_and_seeded() -> None:
    rng = np.random.default_rng(1)
    # A shared offset as large as the spread: expected cosine ≈ 1 / (1 + 1) = 0.5.
    docs = rng.standard_normal((300, 16)) + 1.0
    queries = docs[:20] + 0.1 * rng.standard_normal((20, 16))
    run = {f"q{i}": {f"d{j}": float(-abs(i - j)) for j in range(15)} for i in range(20)}
    kwargs = {
        "run": run,
        "per_query_ndcg": {f"q{i}": i / 20 for i in range(20)},
        "query_texts": {f"q{i}": "word " * (i + 1) for i in range(20)},
        "pairs": 2000,
    }
    out = diagnose(docs, queries, **kwargs)
    assert json.loads(json.dumps(out)) == out
    assert out["pair_count"] == 2000
    assert 0.4 < out["anisotropy"] < 0.6
    assert 0.0 < out["alignment"] < 0.5
    assert out["uniformity"] < 0
    assert 1.0 < out["effective_rank"] <= 16
    assert [b["count"] for b in out["length_buckets"]] == [5, 5, 10, 0]
    assert sum(out["score_distributions"]["positive"]) == 20
    assert out["score_distributions"]["positive_mean"] > out["score_distributions"]["negative_mean"]
    assert diagnose(docs, queries, **kwargs) == out
    assert diagnose(docs, queries, **kwargs, seed=9)["uniformity"] != out["uniformity"]


def test_degenerate_inputs() -> None:
    out = diagnose(np.array([[1.0, 0.0]]))
    assert out["uniformity"] is None and out["anisotropy"] is None and out["pair_count"] == 0
    assert out["effective_rank"] == pytest.approx(1.0)
    out = diagnose(np.eye(3), qrels={})
    assert out["alignment"] is None and out["alignment_pairs"] == 0
    with pytest.raises(ValueError, match="length"):
        diagnose(np.eye(3), doc_ids=["d0"])
