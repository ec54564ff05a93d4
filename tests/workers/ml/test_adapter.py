"""The query adapter of a model upgrade (workers.ml.adapter): fits, maps, and the
compatibility report."""

from __future__ import annotations

import numpy as np
import pytest

from workers.ml.adapter import (
    adapter_bytes,
    adapter_digest,
    adapter_latency_us,
    apply_adapter,
    compatibility_report,
    fit_adapter,
    fit_quality,
    load_adapter,
    overlap_at_k,
    top_k,
)


def _space(n=400, d=24, seed=0):
    rng = np.random.default_rng(seed)
    # A decaying spectrum, like real embeddings (random isotropic vectors make every search
    # easy to confuse).
    x = rng.normal(size=(n, d)) * np.linspace(3, 0.3, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _rotation(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q.astype(np.float32)


@pytest.mark.parametrize("kind", ["orthogonal", "linear"])
def test_a_rotated_copy_of_a_space_maps_back_exactly(kind):
    old = _space()
    rotation = _rotation(old.shape[1])
    new = old @ rotation  # the "new model": the same space, rotated
    matrix = fit_adapter(new, old, kind=kind)
    np.testing.assert_allclose(apply_adapter(new, matrix), old, atol=1e-5)
    np.testing.assert_allclose(matrix, rotation.T, atol=1e-4)  # the inverse rotation
    quality = fit_quality(new, old, matrix)
    assert quality["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert quality["relative_residual"] < 1e-5


def test_orthogonal_map_is_orthogonal_on_noisy_pairs_and_linear_fits_better():
    old = _space()
    rng = np.random.default_rng(3)
    new = old @ _rotation(old.shape[1]) + rng.normal(scale=0.05, size=old.shape)
    ortho = fit_adapter(new, old, kind="orthogonal")
    np.testing.assert_allclose(ortho.T @ ortho, np.eye(old.shape[1]), atol=1e-5)
    linear = fit_adapter(new, old, kind="linear")
    # Least squares is the best linear fit: never a larger residual than the rotation's.
    assert (
        fit_quality(new, old, linear)["relative_residual"]
        <= fit_quality(new, old, ortho)["relative_residual"] + 1e-6
    )


def test_linear_maps_between_dimensions_and_orthogonal_refuses():
    old = _space(d=16)
    lift = np.random.default_rng(4).normal(size=(16, 24)).astype(np.float32)
    new = old @ lift  # a 24-dim "model" whose space holds the old one linearly
    matrix = fit_adapter(new, old, kind="linear")
    assert matrix.shape == (24, 16)
    np.testing.assert_allclose(apply_adapter(new, matrix), old, atol=1e-4)
    with pytest.raises(ValueError, match="orthogonal needs one dimension"):
        fit_adapter(new, old, kind="orthogonal")
    with pytest.raises(ValueError, match="unknown kind"):
        fit_adapter(new, old, kind="quadratic")
    with pytest.raises(ValueError, match="same rows"):
        fit_adapter(new[:10], old, kind="linear")


def test_saved_adapter_loads_back_and_a_changed_file_is_refused(tmp_path):
    matrix = fit_adapter(_space(), _space(seed=5), kind="linear")
    data = adapter_bytes(matrix)
    path = tmp_path / "adapter.npy"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_adapter(path, sha256=adapter_digest(data)), matrix)
    np.save(path, matrix * 2)
    with pytest.raises(ValueError, match="changed"):
        load_adapter(path, sha256=adapter_digest(data))


def test_compatibility_report_rotated_space():
    """New queries on the old corpus vectors find almost nothing without the adapter, and
    exactly the new model's own results with it; nDCG follows."""
    old_docs = _space()
    rotation = _rotation(old_docs.shape[1])
    new_docs = old_docs @ rotation
    old_queries = old_docs[:30] + 0.01
    old_queries /= np.linalg.norm(old_queries, axis=1, keepdims=True)
    new_queries = old_queries @ rotation
    doc_ids = [f"d{i}" for i in range(len(old_docs))]
    query_ids = [f"q{i}" for i in range(30)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(30)}
    matrix = fit_adapter(new_docs, old_docs, kind="orthogonal")
    report = compatibility_report(old_docs=old_docs, new_docs=new_docs, old_queries=old_queries,
                                  new_queries=new_queries, matrix=matrix, doc_ids=doc_ids,
                                  query_ids=query_ids, qrels=qrels)  # fmt: skip
    assert report["recall"]["adapted_on_old"] == pytest.approx(1.0)
    assert report["recall"]["adapted_vs_old"] == pytest.approx(1.0)
    assert report["recall"]["new_on_old"] < 0.3
    assert report["recall"]["old_on_new"] < 0.3
    ndcg = report["ndcg_at_10"]
    assert ndcg["old"] == pytest.approx(1.0) and ndcg["new"] == pytest.approx(1.0)
    assert ndcg["adapted_on_old"] == pytest.approx(1.0)
    assert ndcg["new_on_old"] < 0.5
    recall = report["judged_recall_at_10"]
    assert recall["adapted_on_old"] == pytest.approx(1.0) and recall["new_on_old"] < 0.5
    assert set(report["per_query"]["adapted_on_old"]) == set(query_ids)


def test_cross_search_between_dimensions_is_none_and_adapter_still_reported():
    old_docs = _space(d=16)
    new_docs = old_docs @ np.random.default_rng(6).normal(size=(16, 24)).astype(np.float32)
    matrix = fit_adapter(new_docs, old_docs, kind="linear")
    report = compatibility_report(old_docs=old_docs, new_docs=new_docs, old_queries=old_docs[:5],
                                  new_queries=new_docs[:5], matrix=matrix,
                                  doc_ids=[str(i) for i in range(len(old_docs))],
                                  query_ids=[str(i) for i in range(5)])  # fmt: skip
    assert report["recall"]["new_on_old"] is None and report["recall"]["old_on_new"] is None
    assert report["recall"]["adapted_vs_old"] == pytest.approx(1.0)
    assert "ndcg_at_10" not in report and "judged_recall_at_10" not in report


def test_top_k_and_overlap_against_brute_force():
    docs, queries = _space(n=100), _space(n=7, seed=9)
    scores, positions = top_k(queries, docs, 5)
    brute = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    np.testing.assert_array_equal(positions, brute)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert overlap_at_k(positions, brute, 5) == 1.0
    assert overlap_at_k(positions[:, ::-1], brute, 2) == 0.0  # the last two are not the top two
    assert adapter_latency_us(np.eye(24, dtype=np.float32), _space(n=3), repeats=5) > 0
