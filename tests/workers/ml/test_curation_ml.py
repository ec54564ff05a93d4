"""The curation building blocks in workers/ml: SemDeDup, negative selection, BM25, DSIR."""

import numpy as np
import pytest

from workers.common.configs.curation import MiningOptions
from workers.ml.dsir import dsir_select
from workers.ml.mining import bm25_candidates, select_negatives
from workers.ml.semdedup import semdedup
from workers.ml.tokens import length_summary


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_semdedup_removes_near_duplicates_keeps_one_of_each_and_protects():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(40, 16)))
    dupes = _unit(base[:10] + rng.normal(scale=0.01, size=(10, 16)))  # cosine ~0.999
    x = np.vstack([base, dupes]).astype(np.float32)
    out = semdedup(x, threshold=0.98, n_clusters=4, seed=0)
    assert out.removed == 10
    for removed, kept, cos in out.pairs:
        assert not out.keep[removed] and out.keep[kept] and cos >= 0.98
        assert {removed % 40, kept % 40} == {removed % 40} or abs(removed - kept) == 40
    # Protecting the copies forces the originals out instead.
    protected = np.zeros(50, dtype=bool)
    protected[40:] = True
    out = semdedup(x, threshold=0.98, n_clusters=4, protected=protected, seed=0)
    assert out.keep[40:].all() and not out.keep[:10].any() and out.removed == 10


def test_semdedup_threshold_one_removes_only_exact_copies():
    x = _unit(np.random.default_rng(1).normal(size=(20, 8))).astype(np.float32)
    x = np.vstack([x, x[:3]])
    out = semdedup(x, threshold=0.99999, seed=0)
    assert out.removed == 3


def test_select_negatives_window_margin_and_never_a_positive():
    # One query; candidates best first; positive is corpus 0 with score 0.9.
    indices = np.array([[0, 1, 2, 3, 4, 5, 6, -1]])
    scores = np.array([[0.9, 0.89, 0.8, 0.7, 0.6, 0.5, 0.4, -np.inf]], dtype=np.float32)
    config = MiningOptions(range_min=1, range_max=5, num_negatives=2, relative_margin=0.05)
    [m] = select_negatives(
        candidate_indices=indices,
        candidate_scores=scores,
        positives=[[0]],
        positive_scores=[[0.9]],
        config=config,
    )
    # 0.89 > 0.9 - 0.045: flagged as a likely false negative; then skip 1, take 2.
    assert [c.index for c in m.flagged] == [1]
    assert [c.index for c in m.negatives] == [3, 4]
    assert [c.rank for c in m.negatives] == [4, 5]
    assert all(c.index != 0 for c in m.negatives + m.flagged)


def test_bm25_candidates_mark_non_matches():
    corpus = ["the cat sat", "dogs bark loudly", "cats and dogs"]
    idx, scores, _ = bm25_candidates(queries=["cat", "zebra"], corpus=corpus, k=3)
    assert idx[0][0] == 0
    assert (idx[1] == -1).all()


def test_mining_matches_sentence_transformers(tiny_model_path):
    """The dense path picks exactly the negatives sentence-transformers' own miner picks."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from workers.ml.mining import dense_candidates

    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    corpus = [
        "Cats are small domesticated carnivorous mammals.",
        "Dogs were the first species to be domesticated.",
        "Python is a programming language that lets you work quickly.",
        "Rust is a language empowering everyone to build reliable software.",
        "Coffee is a brewed drink prepared from roasted coffee beans.",
        "Tea is an aromatic beverage prepared by pouring hot water over leaves.",
        "The moon orbits the earth roughly once every twenty seven days.",
        "Mars is the fourth planet from the sun and is red and dusty.",
        "Jupiter is a gas giant with a great red spot.",
        "Bread is baked from a dough of flour, water and yeast.",
    ]
    pairs = [
        ("domesticated animals", corpus[1]),
        ("fast language", corpus[2]),
        ("a hot drink", corpus[5]),
        ("the red planet", corpus[7]),
    ]
    config = MiningOptions(range_min=1, range_max=6, num_negatives=3, relative_margin=0.05)
    theirs = mine_hard_negatives(
        Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]}),
        model,
        corpus=corpus,
        range_min=config.range_min,
        range_max=config.range_max,
        num_negatives=config.num_negatives,
        relative_margin=config.relative_margin,
        output_format="n-tuple",
        verbose=False,
    )
    q = model.encode([a for a, _ in pairs], normalize_embeddings=True)
    c = model.encode(corpus, normalize_embeddings=True)
    idx, scores = dense_candidates(query_vectors=q, corpus_vectors=c, k=config.range_max + 1)
    positives = [[corpus.index(p)] for _, p in pairs]
    mined = select_negatives(
        candidate_indices=idx,
        candidate_scores=scores,
        positives=positives,
        positive_scores=[[float(c[p[0]] @ q[i])] for i, p in enumerate(positives)],
        config=config,
    )
    by_anchor = {row["anchor"]: row for row in theirs}
    for (anchor, _), m in zip(pairs, mined, strict=True):
        ours = [corpus[n.index] for n in m.negatives]
        if len(ours) < config.num_negatives:
            assert anchor not in by_anchor  # n-tuple drops rows without enough negatives
            continue
        row = by_anchor[anchor]
        assert ours == [row[f"negative_{i + 1}"] for i in range(config.num_negatives)]


def test_dsir_selects_towards_the_target_and_beats_random():
    rng = np.random.default_rng(0)
    sports = "team goal match striker ball referee league score pitch keeper".split()
    cooking = "bake bread flour yeast soup salt stir oven dough pepper".split()
    shared = "the a and with in of".split()

    def text(words):
        return " ".join(rng.choice(words + shared, size=10))

    raw = [text(sports) for _ in range(100)] + [text(cooking) for _ in range(100)]
    target = [text(cooking) for _ in range(20)]
    out = dsir_select(raw_texts=raw, target_texts=target, k=50, seed=1)
    assert len(out.selected) == len(out.random) == 50
    assert sum(i >= 100 for i in out.selected) >= 48  # nearly all from the target's domain
    assert out.kl_selected < out.kl_random
    assert out.kl_reduction > 0 and out.kl_reduction > out.kl_reduction_random
    again = dsir_select(raw_texts=raw, target_texts=target, k=50, seed=1)
    assert again.selected == out.selected  # seeded
    with pytest.raises(ValueError):
        dsir_select(raw_texts=raw, target_texts=target, k=len(raw))


def test_length_summary_share_over_max():
    s = length_summary(np.array([10, 20, 300, 600]), max_length=256)
    assert s["over_max"] == 2 and s["over_max_share"] == 0.5
    assert sum(c for _, c in s["histogram"]) == 4
