"""faiss indexes (workers.ml.indexing): build, save, load memory-mapped, filtered search,
measurement.

The vectors have a decaying spectrum (per-dimension std ∝ 1/(1+i)^0.7, then L2-normalised), as
trained embeddings do; random isotropic vectors are the worst case for approximate search and
would say little. Every index type is built once per module (about 10 s on 2 cores in all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from workers.ml.indexing import (
    INDEX_TYPES,
    IndexSpec,
    LoadedIndex,
    build_index,
    default_nlist,
    default_pq_m,
    measure_index,
    prepare_vectors,
)
from workers.ml.sweep import truncate

N_DOCS, DIM, N_QUERIES, K = 10_000, 64, 100, 10
RARE = (3, 1234, 5000, 7777, 9999)  # the only documents with "rare": "yes"
LANGS = ("en", "de", "fr")

# name → spec. ivf_pq trains on a 4,000-vector sample to keep the module fast.
SPECS = {
    "flat": IndexSpec("flat"),
    "hnsw": IndexSpec("hnsw", hnsw_m=16, ef_construction=100),
    "ivf_flat": IndexSpec("ivf_flat"),
    "ivf_pq": IndexSpec("ivf_pq", pq_m=16, train_size=4000),
    "sq8": IndexSpec("sq8"),
    "binary": IndexSpec("binary", rescore=4),
    "binary_plain": IndexSpec("binary", rescore=0),
    "binary_hnsw": IndexSpec("binary_hnsw", hnsw_m=16, ef_construction=100),
}
# Recall@10 against exact search observed on this data (seed 0) and the floor asked here.
# Observed: flat 1.0, hnsw 0.991, ivf_flat 0.943 (nprobe 16 of 256 lists), ivf_pq 0.455
# (16 × 8 bits = 16 bytes a vector), sq8 0.966, binary re-scored ×4 0.133, binary alone 0.102,
# binary_hnsw re-scored 0.122. Sign bits of 64 dimensions are a coarse code on this data: the
# exact top 10 of a query are near ties among 10,000 random documents.
RECALL_FLOOR = {
    "flat": 1.0,
    "hnsw": 0.95,
    "ivf_flat": 0.88,
    "ivf_pq": 0.38,
    "sq8": 0.9,
    "binary": 0.11,
    "binary_plain": 0.08,
    "binary_hnsw": 0.1,
}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def decaying(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(rng.standard_normal((n, dim)) / (1.0 + np.arange(dim)) ** 0.7)


def meta_of(i: int) -> dict:
    fields: dict = {"lang": LANGS[i % 3], "year": 2000 + i % 10, "public": i % 2 == 0}
    if i in RARE:
        fields["rare"] = "yes"
    return fields


@pytest.fixture(scope="module")
def data() -> dict:
    docs = decaying(N_DOCS, DIM, seed=0)
    rng = np.random.default_rng(1)
    targets = rng.choice(N_DOCS, N_QUERIES, replace=False)
    noise = 0.5 * rng.standard_normal((N_QUERIES, DIM)) / (1.0 + np.arange(DIM)) ** 0.7
    queries = unit(docs[targets] + noise)
    exact = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :K]
    return {
        "docs": docs,
        "queries": queries,
        "targets": targets,
        "ids": [f"d{i}" for i in range(N_DOCS)],
        "metadata": [meta_of(i) for i in range(N_DOCS)],
        "exact": exact,
    }


@pytest.fixture(scope="module")
def built(data: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("indexes")
    out = {}
    for name, spec in SPECS.items():
        result = build_index(
            vectors=data["docs"],
            doc_ids=data["ids"],
            spec=spec,
            out_dir=root / name,
            metadata=data["metadata"],
        )
        out[name] = {"result": result, "path": root / name, "index": LoadedIndex.load(root / name)}
    return out


def positions(doc_ids: list[str]) -> list[int]:
    return [int(d[1:]) for d in doc_ids]


def recall(found: list[list[str]], exact: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(positions(f)) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]
        )
    )


# -- exactness and recall ---------------------------------------------------------------------
def test_flat_returns_exactly_the_numpy_top_10(data: dict, built: dict) -> None:
    scores, found = built["flat"]["index"].search(data["queries"], K)
    assert [positions(row) for row in found] == data["exact"].tolist()
    want = np.take_along_axis(data["queries"] @ data["docs"].T, data["exact"], axis=1)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(SPECS))
def test_recall_at_10_per_type(data: dict, built: dict, name: str) -> None:
    scores, found = built[name]["index"].search(data["queries"], K)
    assert all(len(row) == K for row in found)
    assert scores.shape == (N_QUERIES, K) and not np.isnan(scores).any()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert recall(found, data["exact"]) >= RECALL_FLOOR[name]


def test_binary_rescoring_beats_binary_alone(data: dict, built: dict, tmp_path: Path) -> None:
    _, rescored = built["binary"]["index"].search(data["queries"], K)
    _, plain = built["binary_plain"]["index"].search(data["queries"], K)
    build_index(
        vectors=data["docs"],
        doc_ids=data["ids"],
        spec=IndexSpec("binary", rescore=10),
        out_dir=tmp_path / "r10",
    )
    _, more = LoadedIndex.load(tmp_path / "r10").search(data["queries"], K)
    # Observed 0.102 → 0.133 (×4) → 0.182 (×10).
    assert recall(plain, data["exact"]) + 0.02 <= recall(rescored, data["exact"])
    assert recall(rescored, data["exact"]) + 0.03 <= recall(more, data["exact"])
    # Only the re-scoring index stores the float vectors, memory-mapped at load.
    assert (built["binary"]["path"] / "vectors.npy").exists()
    assert not (built["binary_plain"]["path"] / "vectors.npy").exists()
    assert isinstance(built["binary"]["index"].vectors, np.memmap)
    assert built["binary"]["result"]["extra_bytes"] > N_DOCS * DIM * 4
    # Without re-scoring the score is 1 − 2·hamming/dim.
    scores, found = built["binary_plain"]["index"].search(data["queries"][:1], 3)
    bits = data["docs"][positions(found[0])] > 0
    hamming = (bits != (data["queries"][0] > 0)).sum(axis=1)
    np.testing.assert_allclose(scores[0], 1 - 2 * hamming / DIM, rtol=1e-6)


def test_build_result_and_files(built: dict) -> None:
    result = built["ivf_pq"]["result"]
    assert result["type"] == "ivf_pq" and result["vectors"] == N_DOCS
    assert result["dimension"] == DIM and result["input_dimension"] == DIM
    assert result["nlist"] == default_nlist(N_DOCS, 4000) == 4000 // 39
    assert result["pq_m"] == 16 and result["spec"]["nlist"] == result["nlist"]
    assert result["size_bytes"] == (built["ivf_pq"]["path"] / "index.faiss").stat().st_size
    assert result["bytes_per_vector"] == result["size_bytes"] / N_DOCS
    assert result["extra_bytes"] == (built["ivf_pq"]["path"] / "filters.json").stat().st_size
    assert result["build_s"] > 0
    flat = built["flat"]["result"]
    assert DIM * 4 <= flat["bytes_per_vector"] < DIM * 4 + 1
    assert built["binary_plain"]["result"]["bytes_per_vector"] < DIM / 8 + 1
    names = {p.name for p in built["flat"]["path"].iterdir()}
    assert names == {"index.faiss", "ids.json", "filters.json", "meta.json"}
    ids = json.loads((built["flat"]["path"] / "ids.json").read_text())
    assert ids[:2] == ["d0", "d1"] and len(ids) == N_DOCS
    meta = json.loads((built["flat"]["path"] / "meta.json").read_text())
    assert meta["spec"]["type"] == "flat" and meta["vectors"] == N_DOCS
    # No temporary folder is left next to the indexes.
    assert not [p for p in built["flat"]["path"].parent.iterdir() if p.name.startswith(".")]


def test_default_parameters() -> None:
    assert default_pq_m(384) == 48 and default_pq_m(64) == 8 and default_pq_m(100) == 10
    assert default_nlist(100_000, 50_000) == round(4 * 100_000**0.5)
    assert default_nlist(10_000, 1_000) == 1_000 // 39
    assert default_nlist(10, 10) == 1


# -- save / load ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPECS))
def test_mmap_load_gives_identical_results_to_memory(data: dict, built: dict, name: str) -> None:
    mapped = built[name]["index"]
    in_memory = LoadedIndex.load(built[name]["path"], mmap=False)
    assert mapped.mmap is True  # faiss 1.15 maps every type (flag chosen per type)
    assert in_memory.mmap is False
    for filters in (None, {"lang": "de"}):
        a_scores, a_ids = mapped.search(data["queries"], K, filters=filters)
        b_scores, b_ids = in_memory.search(data["queries"], K, filters=filters)
        assert a_ids == b_ids
        np.testing.assert_array_equal(a_scores, b_scores)
    assert mapped.count == N_DOCS and mapped.dimension == DIM
    assert mapped.spec.type == SPECS[name].type
    assert mapped.size_bytes == built[name]["result"]["size_bytes"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_mapped_flat_index_really_is_mapped(built: dict) -> None:
    """The codes of a memory-mapped flat index are file-backed pages, not private memory."""
    import faiss

    index = built["flat"]["index"].index
    maps = Path("/proc/self/maps").read_text()
    assert str(built["flat"]["path"] / "index.faiss") in maps
    assert isinstance(index, faiss.IndexFlatIP)


# -- Matryoshka and PCA -----------------------------------------------------------------------
def test_matryoshka_dim_truncates_and_renormalises(data: dict, tmp_path: Path) -> None:
    docs, queries = data["docs"][:3000], data["queries"]
    spec = IndexSpec("flat", dim=24)
    result = build_index(
        vectors=docs, doc_ids=data["ids"][:3000], spec=spec, out_dir=tmp_path / "m"
    )
    loaded = LoadedIndex.load(tmp_path / "m")
    assert result["dimension"] == loaded.dimension == 24 and loaded.input_dimension == DIM
    prepared = prepare_vectors(queries, spec)
    assert prepared.shape == (N_QUERIES, 24)
    np.testing.assert_allclose(np.linalg.norm(prepared, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(prepared, truncate(queries, 24))
    want = np.argsort(-(truncate(queries, 24) @ truncate(docs, 24).T), axis=1, kind="stable")
    _, found = loaded.search(queries, K)  # full-dimension queries, truncated inside
    assert [positions(row) for row in found] == want[:, :K].tolist()


def test_pca_gives_the_queries_the_documents_transform(data: dict, tmp_path: Path) -> None:
    docs = data["docs"][:3000]
    spec = IndexSpec("hnsw", dim=48, pca_dim=16, hnsw_m=16)
    result = build_index(
        vectors=docs, doc_ids=data["ids"][:3000], spec=spec, out_dir=tmp_path / "p"
    )
    loaded = LoadedIndex.load(tmp_path / "p")
    assert result["dimension"] == loaded.dimension == 16
    assert (tmp_path / "p" / "pca.vt").exists() and result["extra_bytes"] > 0
    assert loaded.transform.d_in == 48 and loaded.transform.d_out == 16
    prepared_docs = prepare_vectors(docs, spec, loaded.transform)
    prepared_queries = prepare_vectors(data["queries"], spec, loaded.transform)
    assert prepared_docs.shape == (3000, 16) and prepared_queries.shape == (N_QUERIES, 16)
    np.testing.assert_allclose(np.linalg.norm(prepared_queries, axis=1), 1.0, rtol=1e-5)
    # The stored vectors are the documents' prepared vectors …
    stored = loaded.index.storage.reconstruct_n(0, 3000)
    np.testing.assert_allclose(stored, prepared_docs, atol=1e-5)
    # … and a document searched as a query (full dimension) finds itself with score 1.
    scores, found = loaded.search(docs[:20], 1)
    assert [row[0] for row in found] == data["ids"][:20]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="no PCA transform"):
        prepare_vectors(docs, spec)
    with pytest.raises(ValueError, match="queries must be"):
        loaded.search(prepared_queries, 1)


# -- filters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPECS))
def test_filters_never_return_a_filtered_out_document(data: dict, built: dict, name: str) -> None:
    loaded = built[name]["index"]
    cases = [
        ({"lang": "de"}, lambda i: i % 3 == 1),
        ({"lang": "fr", "year": 2004}, lambda i: i % 3 == 2 and i % 10 == 4),  # AND: 3 %
        ({"year": [2001, "2002"], "public": False}, lambda i: i % 10 in (1, 2) and i % 2),
        ({"public": "true"}, lambda i: i % 2 == 0),
    ]
    for filters, allowed in cases:
        _, found = loaded.search(data["queries"], K, filters=filters)
        assert all(len(row) == K for row in found), filters
        assert all(allowed(i) for row in found for i in positions(row)), filters


@pytest.mark.parametrize("name", list(SPECS))
def test_a_selective_filter_returns_all_its_documents(data: dict, built: dict, name: str) -> None:
    loaded = built[name]["index"]
    scores, found = loaded.search(data["queries"][:10], K, filters={"rare": "yes"})
    assert scores.shape == (10, len(RARE))  # missing slots dropped
    assert all(sorted(positions(row)) == sorted(RARE) for row in found)
    # Two values of a field: any of them.
    _, found = loaded.search(data["queries"][:3], 2, filters={"rare": ["yes", "no"]})
    assert all(len(row) == 2 and set(positions(row)) <= set(RARE) for row in found)


def test_filtered_flat_search_is_the_exact_top_k_of_the_subset(data: dict, built: dict) -> None:
    subset = np.array([i for i in range(N_DOCS) if i % 3 == 2 and i % 10 == 4])
    scores = data["queries"] @ data["docs"][subset].T
    want = subset[np.argsort(-scores, axis=1, kind="stable")[:, :K]]
    _, found = built["flat"]["index"].search(
        data["queries"], K, filters={"lang": "fr", "year": 4 + 2000}
    )
    assert [positions(row) for row in found] == want.tolist()


@pytest.mark.parametrize("name", ["hnsw", "ivf_flat"])
def test_a_filter_far_from_the_query_still_fills_k(data: dict, tmp_path: Path, name: str) -> None:
    """The selection (about 11 %, above the share searched exhaustively from the start) lies
    on the far side of the first component from every query: the graph or the probed lists
    hold few or none of it, so those queries are searched again over the whole selection."""
    docs, ids = data["docs"][:5000], data["ids"][:5000]
    far = docs[:, 0] > 0.7
    assert 0.05 < far.mean() < 0.15
    metadata = [{"side": "far" if f else "near"} for f in far]
    spec = IndexSpec(name, hnsw_m=16, ef_construction=80, ef_search=16, nprobe=2)
    build_index(vectors=docs, doc_ids=ids, spec=spec, out_dir=tmp_path / "x", metadata=metadata)
    loaded = LoadedIndex.load(tmp_path / "x")
    queries = data["queries"][data["queries"][:, 0] < -0.3]
    assert len(queries) >= 10
    _, found = loaded.search(queries, K, filters={"side": "far"})
    subset = np.flatnonzero(far)
    want = subset[np.argsort(-(queries @ docs[subset].T), axis=1, kind="stable")[:, :K]]
    # Every query comes back full, and (searched exhaustively) with the exact top k.
    assert [positions(row) for row in found] == want.tolist()


def test_filter_matching_nothing_and_unknown_field(data: dict, built: dict) -> None:
    loaded = built["hnsw"]["index"]
    scores, found = loaded.search(data["queries"][:4], K, filters={"lang": "xx"})
    assert scores.shape == (4, 0) and found == [[], [], [], []]
    _, found = loaded.search(data["queries"][:2], K, filters={"year": 2005, "rare": "yes"})
    assert found == [[], []]  # AND: the rare documents are from 2003, 2004, 2000, 2007, 2009
    _, found = loaded.search(data["queries"][:2], K, filters={"lang": "de", "rare": "yes"})
    assert [sorted(positions(row)) for row in found] == [[1234, 7777]] * 2
    with pytest.raises(ValueError, match="unknown filter field 'colour'"):
        loaded.search(data["queries"][:1], K, filters={"colour": "red"})
    assert loaded.filter_fields == ["lang", "public", "rare", "year"]


def test_k_larger_than_the_index(data: dict, tmp_path: Path) -> None:
    build_index(
        vectors=data["docs"][:7],
        doc_ids=data["ids"][:7],
        spec=IndexSpec("hnsw"),
        out_dir=tmp_path / "s",
    )
    loaded = LoadedIndex.load(tmp_path / "s")
    scores, found = loaded.search(data["queries"][:2], K)
    assert scores.shape == (2, 7) and all(sorted(positions(row)) == list(range(7)) for row in found)
    with pytest.raises(ValueError, match="unknown filter field 'lang'"):
        loaded.search(data["queries"][:1], K, filters={"lang": "de"})  # built without metadata


# -- concurrency ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hnsw", "ivf_pq", "binary_hnsw", "sq8"])
def test_concurrent_searches_match_serial_ones(data: dict, built: dict, name: str) -> None:
    loaded = built[name]["index"]
    jobs = [
        (data["queries"][i : i + 5], {"lang": LANGS[i % 3]} if i % 2 else None)
        for i in range(0, N_QUERIES, 5)
    ]
    serial = [loaded.search(q, K, filters=f) for q, f in jobs]
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for j in range(worker, len(jobs) * 4, 8):
                q, f = jobs[j % len(jobs)]
                results[j] = loaded.search(q, K, filters=f)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for j, (scores, ids) in results.items():
        assert ids == serial[j % len(jobs)][1]
        np.testing.assert_array_equal(scores, serial[j % len(jobs)][0])


# -- build errors and cancel ------------------------------------------------------------------
def test_on_progress_exception_cancels_and_leaves_nothing(data: dict, tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    calls: list[tuple[str, int, int]] = []

    def cancel(stage: str, done: int, total: int) -> None:
        calls.append((stage, done, total))
        if stage == "building" and done > 0:
            raise Cancelled

    vectors = np.concatenate([data["docs"], data["docs"], data["docs"][:5000]])
    with pytest.raises(Cancelled):
        build_index(
            vectors=vectors,
            doc_ids=[f"v{i}" for i in range(len(vectors))],
            spec=IndexSpec("ivf_flat"),
            out_dir=tmp_path / "cancelled",
            on_progress=cancel,
        )
    assert list(tmp_path.iterdir()) == []  # neither the index folder nor its temporary one
    n = len(vectors)
    assert calls == [
        ("training", 0, 1),
        ("training", 1, 1),
        ("building", 0, n),
        ("building", 10_000, n),  # raised here: the other chunks were never added
    ]


def test_progress_reaches_the_total(data: dict, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    (tmp_path / "ok").mkdir()  # an empty folder is replaced
    build_index(
        vectors=data["docs"][:2500],
        doc_ids=data["ids"][:2500],
        spec=IndexSpec("flat"),
        out_dir=tmp_path / "ok",
        on_progress=lambda *a: calls.append(a),
    )
    assert LoadedIndex.load(tmp_path / "ok").count == 2500
    assert calls[0] == ("building", 0, 2500) and calls[-1] == ("building", 2500, 2500)


def test_build_errors(data: dict, tmp_path: Path) -> None:
    docs, ids = data["docs"], data["ids"]
    with pytest.raises(ValueError, match="nlist: 500 lists need at least 500 training vectors"):
        build_index(
            vectors=docs[:300],
            doc_ids=ids[:300],
            spec=IndexSpec("ivf_flat", nlist=500),
            out_dir=tmp_path / "a",
        )
    with pytest.raises(ValueError, match="pq_nbits: 8 bits need at least 256 training vectors"):
        build_index(
            vectors=docs[:100], doc_ids=ids[:100], spec=IndexSpec("ivf_pq"), out_dir=tmp_path / "b"
        )
    with pytest.raises(ValueError, match="pq_m: 7 does not divide the dimension 64"):
        build_index(
            vectors=docs[:500],
            doc_ids=ids[:500],
            spec=IndexSpec("ivf_pq", pq_m=7),
            out_dir=tmp_path / "c",
        )
    with pytest.raises(ValueError, match="doc_ids are not unique"):
        build_index(
            vectors=docs[:2], doc_ids=["x", "x"], spec=IndexSpec("flat"), out_dir=tmp_path / "d"
        )
    with pytest.raises(ValueError, match="metadata has 1 entries for 2 vectors"):
        build_index(
            vectors=docs[:2],
            doc_ids=ids[:2],
            spec=IndexSpec("flat"),
            out_dir=tmp_path / "e",
            metadata=[{}],
        )
    with pytest.raises(ValueError, match="tags: dict values cannot be filtered on"):
        build_index(
            vectors=docs[:1],
            doc_ids=ids[:1],
            spec=IndexSpec("flat"),
            out_dir=tmp_path / "f",
            metadata=[{"tags": {"a": 1}}],
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        build_index(
            vectors=docs[:2], doc_ids=ids[:2], spec=IndexSpec("flat"), out_dir=tmp_path / "full"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


# -- parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("type_", "params", "message"),
    [
        ("ivf_pq", {"pq_m": 7}, "pq_m: 7 does not divide the dimension 384"),
        ("ivf_pq", {"pq_m": 16, "pca_dim": 100}, "pq_m: 16 does not divide the dimension 100"),
        ("hnsw", {"hnsw_m": "many"}, "hnsw_m: 'many' is not an integer"),
        ("hnsw", {"hnsw_m": 1}, "hnsw_m: 1 must be between 2 and 256"),
        ("hnsw", {"ef_search": True}, "ef_search: True is not an integer"),
        ("binary", {"rescore": -1}, "rescore: -1 must be at least 0"),
        ("flat", {"dim": 512}, "dim: 512 exceeds the embedding dimension 384"),
        ("flat", {"dim": 64, "pca_dim": 128}, "pca_dim: 128 exceeds the truncated dimension 64"),
        ("flat", {"colour": 3}, "colour: unknown parameter"),
        ("ivf_flat", {"nprobe": None}, "nprobe: a value is required"),
        ("ivf_flat", {"nlist": 0}, "nlist: 0 must be at least 1"),
        ("annoy", {}, "type: 'annoy' is not one of flat, hnsw"),
    ],
)
def test_from_params_rejects_bad_params(type_: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        IndexSpec.from_params(type_, params, input_dim=384)
    assert message in str(error.value)


def test_spec_defaults_and_bounds_are_the_typed_configs() -> None:
    from workers.common.configs.indexing import IndexParams

    params = IndexParams()
    assert IndexSpec("hnsw").to_dict() == params.spec("hnsw")
    assert IndexSpec.from_config("sq8", IndexParams(nprobe=3)) == IndexSpec("sq8", nprobe=3)
    with pytest.raises(ValueError, match="hnsw_m: 257 must be between 2 and 256"):
        IndexSpec("hnsw", hnsw_m=257)  # the config's le=256
    with pytest.raises(ValueError, match="pq_m: 7 does not divide the dimension 64"):
        params.model_copy(update={"dim": 64, "pq_m": 7}).spec("ivf_pq")  # no faiss needed


def test_from_params_accepts_form_values_and_round_trips() -> None:
    spec = IndexSpec.from_params(
        "ivf_pq", {"nlist": "64", "pq_m": 8, "dim": "", "nprobe": 4.0}, input_dim=384
    )
    assert spec == IndexSpec("ivf_pq", nlist=64, pq_m=8, nprobe=4)
    assert spec.to_dict()["nlist"] == 64 and spec.to_dict()["type"] == "ivf_pq"
    assert IndexSpec(**spec.to_dict()) == spec
    assert IndexSpec.from_params("flat", None) == IndexSpec("flat")
    assert IndexSpec("flat", dim=np.int64(32)).to_dict()["dim"] == 32
    assert type(IndexSpec("flat", dim=np.int64(32)).dim) is int
    assert spec.final_dim(384) == 384


# -- measurement ------------------------------------------------------------------------------
def test_measure_index(data: dict, tmp_path: Path) -> None:
    docs, ids = data["docs"][:2000], data["ids"][:2000]
    queries = data["queries"][:30]
    qids = [f"q{i}" for i in range(30)]
    exact = np.argsort(-(queries @ docs.T), axis=1)
    qrels = {q: {ids[exact[i, 0]]: 1, ids[exact[i, 3]]: 2} for i, q in enumerate(qids)}
    build_index(vectors=docs, doc_ids=ids, spec=IndexSpec("flat"), out_dir=tmp_path / "f")
    loaded = LoadedIndex.load(tmp_path / "f")
    common = {"loaded": loaded, "doc_vectors": docs, "query_vectors": queries}
    common |= {"query_ids": qids, "doc_ids": ids, "latency_queries": 20}
    got = measure_index(**common, qrels=qrels)
    assert got["recall_at_10"] == got["recall_at_k"] == 1.0
    assert (
        got["ndcg_at_10"] == pytest.approx(got["exact_ndcg_at_10"]) and 0 < got["ndcg_at_10"] <= 1
    )
    for key in ("latency_p50_ms", "latency_p99_ms", "latency_mean_ms", "qps_batch"):
        assert isinstance(got[key], float) and got[key] > 0
    assert got["latency_p99_ms"] >= got["latency_p50_ms"]
    assert got["queries"] == 30 and got["latency_queries"] == 20 and got["k"] == 10
    without = measure_index(**common, qrels=None)
    assert without["ndcg_at_10"] is None and without["exact_ndcg_at_10"] is None
    assert without["recall_at_10"] == 1.0
    json.dumps(got)  # plain numbers

    # A truncated index is measured against the full-dimension exact search.
    build_index(vectors=docs, doc_ids=ids, spec=IndexSpec("flat", dim=8), out_dir=tmp_path / "t")
    short = measure_index(**(common | {"loaded": LoadedIndex.load(tmp_path / "t")}), qrels=qrels)
    assert short["recall_at_10"] < 1.0


def test_importing_the_module_imports_no_faiss() -> None:
    code = (
        "import sys, workers.ml.indexing; "
        "print([m for m in ('faiss', 'torch', 'django') if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_type_is_covered() -> None:
    assert {spec.type for spec in SPECS.values()} == set(INDEX_TYPES)
