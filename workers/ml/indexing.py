"""Approximate-search indexes with faiss: build, save, load (memory-mapped), search with
filters, and measure against exact search.

Input vectors are float32 (n, d), L2-normalised document embeddings, so cosine = inner product.
Every index type searches by inner product on the *prepared* vectors: the first ``dim``
components re-normalised (Matryoshka), then optionally a PCA trained on the documents,
re-normalised again. Queries go through the very same ``prepare_vectors`` with the saved
transform, so they always get exactly the documents' transform.

Index types (``IndexSpec.type``):

- ``flat``: ``IndexFlatIP``, exact.
- ``hnsw``: ``IndexHNSWFlat`` (float vectors, graph search; ``efSearch`` per search).
- ``ivf_flat`` / ``ivf_pq``: ``IndexIVFFlat`` / ``IndexIVFPQ`` (``nprobe`` per search).
- ``sq8``: ``IndexScalarQuantizer`` QT_8bit (per-dimension min/max of the documents).
- ``binary`` / ``binary_hnsw``: sign bits (packed as in ``workers.ml.sweep``) in
  ``IndexBinaryFlat`` / ``IndexBinaryHNSW`` (Hamming); with ``rescore > 0`` the best
  ``k × rescore`` are re-scored by the float inner product against the prepared document vectors
  (``vectors.npy``, memory-mapped).

What faiss 1.15 does, as measured (``tests/workers/ml/test_indexing.py`` pins the parts we rely
on):

- Memory mapping: ``IO_FLAG_MMAP`` maps only IVF inverted lists (read-only
  ``OnDiskInvertedLists``); on every other type it is silently ignored and the file is read into
  memory. ``IO_FLAG_MMAP_IFC`` maps the codes of ``IndexFlatCodes`` (flat, sq8, binary flat, and
  the storage of both HNSW kinds, whose graph is still read into memory); combined with
  ``IO_FLAG_MMAP`` on an IVF index it fails ("mmap only supported for File objects"). Hence the
  flag is chosen per type.
- ``IDSelector`` in search parameters: honoured by flat, sq8, IVF (inside the probed lists only),
  HNSW (``SearchParametersHNSW``; a selective filter makes the graph search return few or no
  results), ``IndexBinaryFlat`` (plain ``SearchParameters``) and ``IndexBinaryHNSW`` (only with
  ``SearchParametersHNSW``: plain ``SearchParameters`` raises; same shortfall as HNSW).
  So filters always go into the search, and wherever an approximate search can come back short
  (a selective filter, lists not probed) the affected queries are searched again exhaustively
  over the selection: the float or binary storage of an HNSW index with the selector, or every
  IVF list. A filter never returns fewer than ``min(k, selected)`` results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.common.atomic import atomic_write
from workers.common.configs.indexing import (
    INDEX_TYPES,
    SIDE_INDEXES,
    IndexParams,
    bounds,
    check_dimensions,
    optional,
)
from workers.ml.sweep import _pack, truncate

BINARY_TYPES = frozenset({"binary", "binary_hnsw"})
IVF_TYPES = frozenset({"ivf_flat", "ivf_pq"})
HNSW_TYPES = frozenset({"hnsw", "binary_hnsw"})
# Types whose plain search with a selector already scans every selected vector.
_EXHAUSTIVE_TYPES = frozenset({"flat", "sq8", "binary"})

FORMAT = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
TRANSFORM_FILE = "pca.vt"
VECTORS_FILE = "vectors.npy"
FILTERS_FILE = "filters.json"
BM25_DIR = "bm25"  # a BM25 index (bm25s) of the same documents, when the build asked for one
# A sparse model's (SPLADE) vectors of the same documents, when the build named one: a CSR
# matrix in index order (documents.npz) and the model that made them (model.json).
SPARSE_DIR = "sparse"
SPARSE_MATRIX = "documents.npz"
SPARSE_MODEL = "model.json"
# The documents' texts in index order, one JSON string per line: what a rerank stage reads
# (a cross-encoder scores the query with each document's text).
TEXTS_FILE = "texts.jsonl"
META_FILE = "meta.json"

ProgressCallback = Callable[[str, int, int], None]

_ADD_CHUNK = 10_000
# faiss k-means warns below 39 training points per centroid.
_MIN_POINTS_PER_LIST = 39
# A filter selecting less than this share of an HNSW or IVF index is searched exhaustively over
# the selection from the start (the graph search finds few of them; at 5 % its recall is ~0.95).
_EXHAUSTIVE_FRACTION = 0.05
# Selections larger than this use a bitmap selector (n / 8 bytes), smaller ones a hash set.
_BITMAP_FROM = 4096
# Elements of the (queries × candidates × dim) block gathered at once while re-scoring.
_RESCORE_BLOCK = 1 << 24

# Bounds, defaults and which fields may stay automatic are the typed config's (one place).
_OPTIONAL_FIELDS = optional()
_RANGES: dict[str, tuple[int, int | None]] = bounds()
_DEFAULTS = IndexParams()


@dataclass(frozen=True)
class IndexSpec:
    """What index to build; validated on construction (``ValueError`` naming the field)."""

    type: str
    dim: int | None = _DEFAULTS.dim  # Matryoshka: keep the first `dim` dims, then re-normalise
    pca_dim: int | None = _DEFAULTS.pca_dim  # PCA on the documents, after truncation
    hnsw_m: int = _DEFAULTS.hnsw_m
    ef_construction: int = _DEFAULTS.ef_construction
    ef_search: int = _DEFAULTS.ef_search
    nlist: int | None = _DEFAULTS.nlist  # None → about 4·sqrt(n), ≥ 39 training points a list
    nprobe: int = _DEFAULTS.nprobe
    pq_m: int | None = _DEFAULTS.pq_m  # None → the divisor of the final dimension nearest dim/8
    pq_nbits: int = _DEFAULTS.pq_nbits
    train_size: int = _DEFAULTS.train_size  # IVF, PQ and PCA train on a sample of this many
    rescore: int = _DEFAULTS.rescore  # binary types: re-score the top k × rescore (float)
    seed: int = _DEFAULTS.seed

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"type: {self.type!r} is not one of {', '.join(INDEX_TYPES)}")
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_FIELDS:
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name}: {value!r} is not an integer")
            object.__setattr__(self, name, int(value))  # numpy integers → int (JSON)
            if value < low or (high is not None and value > high):
                bound = f"at least {low}" if high is None else f"between {low} and {high}"
                raise ValueError(f"{name}: {value} must be {bound}")
        check_dimensions(dim=self.dim, pca_dim=self.pca_dim, pq_m=self.pq_m)

    @classmethod
    def from_params(
        cls, type: str, params: Mapping[str, Any] | None, *, input_dim: int | None = None
    ) -> IndexSpec:
        """A spec from user parameters (a form or JSON body). Integers may come as strings;
        ``None`` leaves an optional field on automatic. With ``input_dim`` (the model's
        embedding dimension) the dimensions are checked against it as well."""
        params = dict(params or {})
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "type"]
        for name in params:
            if name not in fields:
                raise ValueError(
                    f"{name}: unknown parameter (expected some of {', '.join(fields)})"
                )
        values: dict[str, int | None] = {}
        for name, value in params.items():
            if value is None or value == "":
                if name not in _OPTIONAL_FIELDS:
                    raise ValueError(f"{name}: a value is required")
                values[name] = None
                continue
            if isinstance(value, str):
                try:
                    value = int(value.strip())
                except ValueError:
                    raise ValueError(f"{name}: {value!r} is not an integer") from None
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            values[name] = value
        spec = cls(type=str(type), **values)
        if input_dim is not None:
            spec.final_dim(input_dim)
        return spec

    @classmethod
    def from_config(cls, type: str, params: IndexParams) -> IndexSpec:
        """The spec of a build whose parameters the typed config has already checked (the
        worker reads a row's stored parameters back through it)."""
        # Side indexes are not faiss settings: the build task adds them beside this one.
        return cls(type=type, **params.model_dump(exclude=set(SIDE_INDEXES)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def final_dim(self, input_dim: int) -> int:
        """The dimension the index holds for embeddings of ``input_dim``; ``ValueError`` if
        the spec cannot apply to them."""
        # Never None here: with the input dimension the final one is known.
        return check_dimensions(
            dim=self.dim, pca_dim=self.pca_dim, pq_m=self.pq_m, input_dim=input_dim
        )


def default_pq_m(dim: int) -> int:
    """The divisor of ``dim`` nearest ``dim / 8`` (the larger one on a tie)."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - dim / 8), -m))


def default_nlist(n: int, n_train: int) -> int:
    """About 4·sqrt(n) lists, capped so that each gets at least ~39 training points."""
    return max(1, min(round(4 * math.sqrt(n)), n_train // _MIN_POINTS_PER_LIST))


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def prepare_vectors(vectors: np.ndarray, spec: IndexSpec, transform: Any = None) -> np.ndarray:
    """Documents at build time and queries at search time: the first ``spec.dim`` components,
    re-normalised; then the PCA ``transform`` (a trained ``faiss.PCAMatrix``, required exactly
    when ``spec.pca_dim`` is set), re-normalised. Without ``dim`` and PCA the vectors pass
    through unchanged (as contiguous float32), so ``flat`` is exact search. A 1-D vector is
    taken as one row."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {x.shape}")
    if spec.dim is not None:
        if spec.dim > x.shape[1]:
            raise ValueError(f"dim: {spec.dim} exceeds the vectors' dimension {x.shape[1]}")
        x = truncate(x, spec.dim)
    else:
        x = np.ascontiguousarray(x)
    if spec.pca_dim is None:
        if transform is not None:
            raise ValueError("a transform was given but the spec has no pca_dim")
        return x
    if transform is None:
        raise ValueError("pca_dim is set but no PCA transform was given")
    if transform.d_in != x.shape[1]:
        raise ValueError(f"the PCA expects dimension {transform.d_in}, got {x.shape[1]}")
    return _normalise(transform.apply(x))


def _filter_key(field: str, value: Any) -> str:
    """One spelling per filter value: metadata and query values compare as these strings
    (so 2020, 2020.0 and "2020" match; booleans are "true"/"false")."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    raise ValueError(
        f"{field}: {type(value).__name__} values cannot be filtered on "
        "(expected str, int, float or bool)"
    )


def _filter_table(metadata: Sequence[Mapping[str, Any] | None], n: int) -> dict:
    """field → value (as ``_filter_key``) → ascending positions. A list value puts the
    document under each of its items; ``None`` (or a missing field) under none."""
    if len(metadata) != n:
        raise ValueError(f"metadata has {len(metadata)} entries for {n} vectors")
    table: dict[str, dict[str, list[int]]] = {}
    for pos, fields in enumerate(metadata):
        if fields is None:
            continue
        if not isinstance(fields, Mapping):
            raise ValueError(f"metadata[{pos}]: expected a dict of field → value")
        for field, value in fields.items():
            if not isinstance(field, str):
                raise ValueError(f"metadata[{pos}]: field names must be strings, got {field!r}")
            items = value if isinstance(value, list | tuple) else (value,)
            for item in items:
                if item is None:
                    continue
                positions = table.setdefault(field, {}).setdefault(_filter_key(field, item), [])
                if not positions or positions[-1] != pos:
                    positions.append(pos)
    return table


def _dir_bytes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def build_index(
    *,
    vectors: np.ndarray,
    doc_ids: list[str],
    spec: IndexSpec,
    out_dir: Path,
    metadata: list[dict] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Build the index of ``spec`` over ``vectors`` and write it to ``out_dir``.

    Everything is written to a temporary sibling folder that is renamed to ``out_dir`` at the
    end, so a failure or a cancel (an exception raised by ``on_progress``, which propagates)
    leaves no ``out_dir`` behind. ``out_dir`` must not exist or be an empty folder.
    ``on_progress(stage, done, total)``: ``("training", 0|1, 1)`` around the training of
    trainable types and PCA, ``("building", done, n)`` before and after each chunk added.

    Returns ``{"type", "vectors", "dimension", "input_dimension", "build_s", "train_s",
    "add_s", "size_bytes" (the faiss index file), "extra_bytes" (float vectors for re-scoring,
    PCA transform, filter table), "total_bytes", "bytes_per_vector" (index file / n),
    "total_bytes_per_vector", "nlist", "pq_m", "mmap_flag", "spec"}`` (``spec`` with automatic
    values resolved).
    """
    import faiss

    started = time.perf_counter()
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {x.shape}")
    n, input_dim = x.shape
    if n == 0:
        raise ValueError("no vectors to index")
    if len(doc_ids) != n:
        raise ValueError(f"{len(doc_ids)} doc_ids for {n} vectors")
    ids = [str(i) for i in doc_ids]
    if len(set(ids)) != n:
        raise ValueError("doc_ids are not unique")
    final_dim = spec.final_dim(input_dim)
    table = _filter_table(metadata, n) if metadata is not None else {}

    n_train = min(n, spec.train_size)
    nlist = pq_m = None
    if spec.type in IVF_TYPES:
        nlist = spec.nlist if spec.nlist is not None else default_nlist(n, n_train)
        if nlist > n_train:
            raise ValueError(
                f"nlist: {nlist} lists need at least {nlist} training vectors, "
                f"got {n_train} (documents, at most train_size)"
            )
    if spec.type == "ivf_pq":
        pq_m = spec.pq_m if spec.pq_m is not None else default_pq_m(final_dim)
        if n_train < 2**spec.pq_nbits:
            raise ValueError(
                f"pq_nbits: {spec.pq_nbits} bits need at least {2**spec.pq_nbits} training "
                f"vectors for the product quantizer, got {n_train}"
            )
    if spec.pca_dim is not None and n_train < spec.pca_dim:
        raise ValueError(
            f"pca_dim: {spec.pca_dim} needs at least {spec.pca_dim} training vectors, got {n_train}"
        )
    resolved = dataclasses.replace(spec, nlist=nlist, pq_m=pq_m)

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))

    def report(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, done, total)

    try:
        rng = np.random.default_rng(spec.seed)
        sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else None

        def training_rows(a: np.ndarray) -> np.ndarray:
            return a if sample is None else np.ascontiguousarray(a[sample])

        train_started = time.perf_counter()
        trains = spec.pca_dim is not None or spec.type in IVF_TYPES | {"sq8"}
        if trains:
            report("training", 0, 1)
        transform = None
        if spec.pca_dim is not None:
            truncated = prepare_vectors(x, dataclasses.replace(spec, pca_dim=None))
            transform = faiss.PCAMatrix(truncated.shape[1], spec.pca_dim)
            transform.train(training_rows(truncated))
            prepared = prepare_vectors(truncated, dataclasses.replace(spec, dim=None), transform)
            del truncated
        else:
            prepared = prepare_vectors(x, spec)

        binary = spec.type in BINARY_TYPES
        quantizer = None  # kept referenced until the index is written
        index: Any
        if spec.type == "flat":
            index = faiss.IndexFlatIP(final_dim)
        elif spec.type == "hnsw":
            index = faiss.IndexHNSWFlat(final_dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.ef_construction
            index.hnsw.efSearch = spec.ef_search
        elif spec.type == "ivf_flat":
            quantizer = faiss.IndexFlatIP(final_dim)
            index = faiss.IndexIVFFlat(quantizer, final_dim, nlist, faiss.METRIC_INNER_PRODUCT)
        elif spec.type == "ivf_pq":
            quantizer = faiss.IndexFlatIP(final_dim)
            index = faiss.IndexIVFPQ(
                quantizer, final_dim, nlist, pq_m, spec.pq_nbits, faiss.METRIC_INNER_PRODUCT
            )
            index.pq.cp.seed = spec.seed
        elif spec.type == "sq8":
            index = faiss.IndexScalarQuantizer(
                final_dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
        elif spec.type == "binary":
            index = faiss.IndexBinaryFlat(_code_bits(final_dim))
        else:  # binary_hnsw
            index = faiss.IndexBinaryHNSW(_code_bits(final_dim), spec.hnsw_m)
            index.hnsw.efConstruction = spec.ef_construction
            index.hnsw.efSearch = spec.ef_search
        if spec.type in IVF_TYPES:
            index.cp.seed = spec.seed
            index.nprobe = min(spec.nprobe, nlist)
            index.train(training_rows(prepared))
        elif spec.type == "sq8":
            index.train(prepared)  # per-dimension min/max over every document: cheap
        if trains:
            report("training", 1, 1)
        train_s = time.perf_counter() - train_started

        add_started = time.perf_counter()
        data = _pack(prepared) if binary else prepared
        report("building", 0, n)
        for start in range(0, n, _ADD_CHUNK):
            index.add(np.ascontiguousarray(data[start : start + _ADD_CHUNK]))
            report("building", min(start + _ADD_CHUNK, n), n)
        add_s = time.perf_counter() - add_started

        _write_faiss(faiss.write_index_binary if binary else faiss.write_index, index,
                     tmp / INDEX_FILE)  # fmt: skip
        del index, quantizer
        with atomic_write(tmp / IDS_FILE, "w") as fh:
            fh.write(json.dumps(ids))
        extra = []
        if transform is not None:
            _write_faiss(faiss.write_VectorTransform, transform, tmp / TRANSFORM_FILE)
            extra.append(tmp / TRANSFORM_FILE)
        if binary and spec.rescore > 0:
            with atomic_write(tmp / VECTORS_FILE, "wb") as fh:
                np.save(fh, prepared)
            extra.append(tmp / VECTORS_FILE)
        if table:
            with atomic_write(tmp / FILTERS_FILE, "w") as fh:
                fh.write(json.dumps({"format": FORMAT, "fields": table}, separators=(",", ":")))
            extra.append(tmp / FILTERS_FILE)
        size_bytes = (tmp / INDEX_FILE).stat().st_size
        extra_bytes = _dir_bytes(extra)
        result = {
            "type": spec.type,
            "vectors": n,
            "dimension": final_dim,
            "input_dimension": input_dim,
            "build_s": time.perf_counter() - started,
            "train_s": train_s,
            "add_s": add_s,
            "size_bytes": size_bytes,
            "extra_bytes": extra_bytes,
            "total_bytes": size_bytes + extra_bytes,
            "bytes_per_vector": size_bytes / n,
            "total_bytes_per_vector": (size_bytes + extra_bytes) / n,
            "nlist": nlist,
            "pq_m": pq_m,
            "filter_fields": sorted(table),
            "spec": resolved.to_dict(),
        }
        meta = {
            "format": FORMAT,
            "faiss_version": faiss.__version__,
            "binary": binary,
            "index_file": INDEX_FILE,
            "has_transform": transform is not None,
            "has_vectors": binary and spec.rescore > 0,
            "has_filters": bool(table),
            "requested_spec": spec.to_dict(),
            **result,
        }
        with atomic_write(tmp / META_FILE, "w") as fh:
            fh.write(json.dumps(meta, indent=2))
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result["build_s"] = time.perf_counter() - started
    return result


def _write_faiss(writer: Callable[[Any, Any], None], obj: Any, path: Path) -> None:
    """``writer(obj, …)`` (faiss.write_index & co) into ``path``, atomically, through a Python
    file: a failed write raises the OSError itself (errno kept, e.g. ENOSPC), where faiss's own
    file writer would raise a RuntimeError naming the server path, or only print to stderr
    when the final flush in its fclose fails, leaving a short file behind."""
    import faiss

    with atomic_write(path, "wb") as fh:
        writer(obj, faiss.PyCallbackIOWriter(fh.write))


def _code_bits(dim: int) -> int:
    """Bits of a packed sign code: ``dim`` rounded up to whole bytes (padding bits are zero on
    both sides and never differ)."""
    return 8 * ((dim + 7) // 8)


def _selector(selected: np.ndarray, count: int) -> Any:
    import faiss

    if len(selected) > _BITMAP_FROM:
        mask = np.zeros(count, dtype=bool)
        mask[selected] = True
        return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
    return faiss.IDSelectorBatch(selected)


class LoadedIndex:
    """An index folder written by ``build_index``, loaded for searching.

    ``search`` may be called from several threads at once: per-search settings (efSearch,
    nprobe, the filter) travel in faiss ``SearchParameters``, nothing shared is mutated.
    """

    def __init__(
        self,
        *,
        path: Path,
        meta: dict,
        index: Any,
        mmap: bool,
        ids: list[str],
        transform: Any,
        vectors: np.ndarray | None,
        filters: dict[str, dict[str, np.ndarray]],
        bm25: Any = None,
        sparse: Any = None,
        sparse_model: dict | None = None,
    ) -> None:
        self.path = path
        self.bm25 = bm25  # a bm25s retriever over the same documents (positions), or None
        self.sparse = sparse  # scipy CSR (documents × vocabulary) of a sparse model, or None
        self.sparse_model = sparse_model or {}  # what made it: model id, name, path, fingerprint
        self.meta = meta
        self.spec = IndexSpec(**meta["spec"])
        self.index = index
        self.mmap = mmap
        self.ids = ids
        self.transform = transform
        self.vectors = vectors
        self.filters = filters
        self.count: int = int(meta["vectors"])
        self.dimension: int = int(meta["dimension"])
        self.input_dimension: int = int(meta["input_dimension"])
        self.size_bytes: int = int(meta["size_bytes"])
        self.extra_bytes: int = int(meta["extra_bytes"])
        self.binary: bool = bool(meta["binary"])
        self._texts: list[str] | None = None
        self._positions: dict[str, int] | None = None

    @property
    def has_texts(self) -> bool:
        return (self.path / TEXTS_FILE).is_file()

    def texts_of(self, doc_ids: Sequence[str]) -> list[str]:
        """The texts of these documents (read from ``texts.jsonl`` on first use and kept).
        ``ValueError`` when the index was built without them."""
        if self._texts is None:
            if not self.has_texts:
                raise ValueError("this index keeps no document texts (build it again)")
            with open(self.path / TEXTS_FILE, encoding="utf-8") as fh:
                texts = [json.loads(line) for line in fh]
            if len(texts) != len(self.ids):
                raise ValueError(f"{self.path}: {len(texts)} texts for {len(self.ids)} documents")
            self._positions = {doc_id: i for i, doc_id in enumerate(self.ids)}
            self._texts = texts
        assert self._positions is not None
        return [self._texts[self._positions[doc_id]] for doc_id in doc_ids]

    @property
    def filter_fields(self) -> list[str]:
        return sorted(self.filters)

    @classmethod
    def load(cls, path: Path, mmap: bool = True) -> LoadedIndex:
        """Read an index folder. With ``mmap`` the index data (and ``vectors.npy``) are
        memory-mapped where faiss supports it for the type (see the module docstring), else
        read into memory; ``self.mmap`` says which happened."""
        import faiss

        from workers.common.store import artifact_ensure

        path = artifact_ensure(path)  # with a bucket: fetched whole first, if not here
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} holds no index ({META_FILE} missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: unsupported index format {meta.get('format')!r}")
        index, mapped = _read_index(path / meta["index_file"], meta, mmap)
        ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
        transform = None
        if meta["has_transform"]:
            transform = faiss.read_VectorTransform(str(path / TRANSFORM_FILE))
        vectors = None
        if meta["has_vectors"]:
            vectors = np.load(path / VECTORS_FILE, mmap_mode="r" if mmap else None)
        filters: dict[str, dict[str, np.ndarray]] = {}
        if meta["has_filters"]:
            raw = json.loads((path / FILTERS_FILE).read_text(encoding="utf-8"))
            filters = {
                field: {value: np.asarray(pos, dtype=np.int64) for value, pos in values.items()}
                for field, values in raw["fields"].items()
            }
        if len(ids) != int(meta["vectors"]) or index.ntotal != len(ids):
            raise ValueError(f"{path}: index holds {index.ntotal} vectors, ids {len(ids)}")
        bm25 = None
        if (path / BM25_DIR).is_dir():
            from workers.ml.lexical import bm25_load

            bm25 = bm25_load(path / BM25_DIR, mmap=mmap)
            if int(bm25.scores["num_docs"]) != len(ids):
                raise ValueError(f"{path}: the BM25 index holds another number of documents")
        sparse = sparse_model = None
        if (path / SPARSE_DIR).is_dir():
            import scipy.sparse

            sparse = scipy.sparse.load_npz(path / SPARSE_DIR / SPARSE_MATRIX).tocsr()
            sparse_model = json.loads((path / SPARSE_DIR / SPARSE_MODEL).read_text("utf-8"))
            if sparse.shape[0] != len(ids):
                raise ValueError(f"{path}: the sparse side holds another number of documents")
        return cls(
            path=path,
            meta=meta,
            index=index,
            mmap=mapped,
            ids=ids,
            transform=transform,
            vectors=vectors,
            filters=filters,
            bm25=bm25,
            sparse=sparse,
            sparse_model=sparse_model,
        )

    # -- filters ------------------------------------------------------------------------
    def select(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Ascending positions matching every field of ``filters`` (a value or a list of
        values, any of which matches), or None for no filter. ``ValueError`` for a field no
        document has."""
        if not filters:
            return None
        unknown = [field for field in filters if field not in self.filters]
        if unknown:
            known = ", ".join(self.filter_fields) or "none"
            raise ValueError(f"unknown filter field {unknown[0]!r} (known fields: {known})")
        selected: np.ndarray | None = None
        for field, wanted in filters.items():
            values = self.filters[field]
            items = wanted if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
            empty = np.empty(0, dtype=np.int64)
            arrays = [values.get(_filter_key(field, item), empty) for item in items]
            if not arrays:
                positions = empty
            elif len(arrays) == 1:
                positions = arrays[0]
            else:
                positions = np.unique(np.concatenate(arrays))
            selected = (
                positions
                if selected is None
                else np.intersect1d(selected, positions, assume_unique=True)
            )
        return selected

    # -- search -------------------------------------------------------------------------
    def search_bm25(
        self, queries: Sequence[str], k: int, filters: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` documents of each query by BM25, in ``search``'s shape (scores NaN after
        a row's last result); the same ``filters``. ``ValueError`` without a BM25 index."""
        from workers.ml.lexical import bm25_search

        if self.bm25 is None:
            raise ValueError("this index has no BM25 index (build it with bm25 on)")
        positions, scores = bm25_search(self.bm25, queries, k=k, selected=self.select(filters))
        return _rows(self.ids, positions, scores)

    def search_sparse(
        self, queries: Any, k: int, filters: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` documents of each query by the sparse model's dot product, ``queries``
        being its CSR vectors (``workers.ml.sparse.encode_sparse``), in ``search``'s shape; the
        same ``filters``. A document sharing no active term with the query is not a hit.
        ``ValueError`` without a sparse side."""
        from workers.ml.sparse import sparse_top_k

        if self.sparse is None:
            raise ValueError("this index has no sparse side (build it with a sparse model)")
        selected = self.select(filters)
        documents = self.sparse if selected is None else self.sparse[selected]
        if documents.shape[0] == 0:
            return np.full((queries.shape[0], 0), np.nan, dtype=np.float32), [
                [] for _ in range(queries.shape[0])
            ]
        scores, positions = sparse_top_k(queries, documents, k)
        if selected is not None:
            positions = np.where(positions >= 0, selected[np.maximum(positions, 0)], -1)
        return _rows(self.ids, positions, scores)

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        filters: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` documents of each query (queries at the original full dimension).

        Returns ``(scores, doc_ids)``: ``doc_ids[i]`` holds query i's results, best first,
        at most ``k``, and exactly ``min(k, documents selected)`` (fewer results are never
        the effect of a filter); ``scores`` is float32 (queries, m) with m the longest row,
        NaN after a row's last result. Scores are inner products of the prepared vectors
        (approximate for sq8 and PQ); binary types without re-scoring give
        1 − 2·hamming/dim, the cosine of the ±1 sign vectors.
        """
        q = np.asarray(query_vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.input_dimension:
            raise ValueError(
                f"queries must be (n, {self.input_dimension}) arrays, got shape {q.shape}"
            )
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k: {k!r} must be a positive integer")
        selected = self.select(filters)
        n_queries = len(q)
        available = self.count if selected is None else len(selected)
        k = min(int(k), available)
        if k == 0 or n_queries == 0:
            return np.empty((n_queries, 0), dtype=np.float32), [[] for _ in range(n_queries)]
        prepared = prepare_vectors(q, self.spec, self.transform)
        if self.binary:
            scores, positions = self._search_binary(prepared, k, selected)
        else:
            scores, positions = self._search_raw(prepared, k, selected)
        return self._finish(scores, positions)

    def _search_raw(
        self, q: np.ndarray, k: int, selected: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index search (float or binary codes) with the selection inside it; queries left
        short of ``k`` are searched again exhaustively over the selection."""
        import faiss

        sel = _selector(selected, self.count) if selected is not None else None
        kind = self.spec.type
        small = selected is not None and len(selected) < _EXHAUSTIVE_FRACTION * self.count
        if kind in _EXHAUSTIVE_TYPES or small:
            return self._exhaustive(q, k, sel)
        if kind in HNSW_TYPES:
            params = faiss.SearchParametersHNSW(efSearch=max(self.spec.ef_search, k))
        else:
            params = faiss.SearchParametersIVF(nprobe=min(self.spec.nprobe, self.index.nlist))
        if sel is not None:
            params.sel = sel
        scores, positions = self.index.search(q, k, params=params)
        short = np.flatnonzero((positions >= 0).sum(axis=1) < k)
        if len(short):
            again_scores, again_positions = self._exhaustive(np.ascontiguousarray(q[short]), k, sel)
            scores[short] = again_scores
            positions[short] = again_positions
        return scores, positions

    def _exhaustive(self, q: np.ndarray, k: int, sel: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every selected vector is scored: flat codes as they are, HNSW through its flat
        storage, IVF with every list probed."""
        import faiss

        kind = self.spec.type
        if kind in IVF_TYPES:
            params = faiss.SearchParametersIVF(nprobe=self.index.nlist)
            if sel is not None:
                params.sel = sel
            return self.index.search(q, k, params=params)
        target = self.index
        if kind == "hnsw":
            target = faiss.downcast_index(self.index.storage)
        elif kind == "binary_hnsw":
            target = faiss.downcast_IndexBinary(self.index.storage)
        params = faiss.SearchParameters(sel=sel) if sel is not None else None
        return target.search(q, k, params=params)

    def _search_binary(
        self, q: np.ndarray, k: int, selected: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        available = self.count if selected is None else len(selected)
        rescore = self.spec.rescore if self.vectors is not None else 0
        fetch = min(available, k * rescore) if rescore else k
        distances, positions = self._search_raw(_pack(q), fetch, selected)
        if not rescore:
            scores = 1.0 - 2.0 * distances.astype(np.float32) / self.dimension
            return np.where(positions >= 0, scores, np.nan).astype(np.float32), positions
        return _rescore(self.vectors, q, positions, k)

    def _finish(
        self, scores: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, list[list[str]]]:
        valid = positions >= 0
        width = int(valid.sum(axis=1).max()) if len(positions) else 0
        out = np.full((len(positions), width), np.nan, dtype=np.float32)
        doc_ids: list[list[str]] = []
        for row in range(len(positions)):
            keep = valid[row]
            row_positions = positions[row][keep]
            out[row, : len(row_positions)] = scores[row][keep]
            doc_ids.append([self.ids[p] for p in row_positions])
        return out, doc_ids


def _read_index(path: Path, meta: dict, mmap: bool) -> tuple[Any, bool]:
    """(index, memory-mapped?): IVF types map their inverted lists with ``IO_FLAG_MMAP``,
    the others their codes with ``IO_FLAG_MMAP_IFC``; a normal read if that fails."""
    import faiss

    reader = faiss.read_index_binary if meta["binary"] else faiss.read_index
    if mmap:
        ivf = meta["type"] in IVF_TYPES
        flag = faiss.IO_FLAG_MMAP if ivf else getattr(faiss, "IO_FLAG_MMAP_IFC", None)
        if flag is not None:
            try:
                index = reader(str(path), flag | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError:
                pass
            else:
                if not ivf:
                    return index, True
                lists = faiss.extract_index_ivf(index).invlists
                mapped = isinstance(faiss.downcast_InvertedLists(lists), faiss.OnDiskInvertedLists)
                return index, mapped
    return reader(str(path)), False


def _rescore(
    vectors: np.ndarray, q: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Float inner product of each prepared query with its candidates' prepared document
    vectors (rows of ``vectors``, possibly memory-mapped), the best ``k`` per query."""
    n_queries, n_cand = candidates.shape
    dim = q.shape[1]
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    positions = np.full((n_queries, k), -1, dtype=np.int64)
    step = max(1, _RESCORE_BLOCK // max(1, n_cand * dim))
    for start in range(0, n_queries, step):
        cand = candidates[start : start + step]
        valid = cand >= 0
        rows = np.asarray(vectors[np.where(valid, cand, 0).ravel()], dtype=np.float32)
        block = np.einsum("qd,qcd->qc", q[start : start + step], rows.reshape(*cand.shape, dim))
        block[~valid] = -np.inf
        order = np.argsort(-block, axis=1, kind="stable")[:, :k]
        scores[start : start + step] = np.take_along_axis(block, order, axis=1)
        positions[start : start + step] = np.take_along_axis(
            np.where(valid, cand, -1), order, axis=1
        )
    return scores, positions


def measure_index(
    *,
    loaded: LoadedIndex,
    doc_vectors: np.ndarray,
    query_vectors: np.ndarray,
    query_ids: list[str],
    doc_ids: list[str],
    qrels: dict[str, dict[str, int]] | None,
    k: int = 10,
    latency_queries: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Quality and speed of ``loaded`` against exact search over the original full float
    vectors (``doc_vectors`` rows are ``doc_ids``; the index must hold the same documents).

    Returns plain numbers: ``recall_at_k`` (share of the exact top ``k`` found, per query,
    averaged), ``recall_at_10`` (the same at 10; None when k < 10), ``ndcg_at_10`` and
    ``exact_ndcg_at_10`` (``compute_metrics`` on the index's and on exact search's top ``k``;
    None without qrels), ``latency_p50_ms`` / ``latency_p99_ms`` / ``latency_mean_ms`` (one
    query per call, ``latency_queries`` calls after 5 warm-up calls, search only),
    ``qps_batch`` (all queries in one call), and the counts ``k``, ``queries``,
    ``latency_queries``.
    """
    from workers.ml.metrics import compute_metrics
    from workers.ml.search import exact_search

    docs = np.asarray(doc_vectors, dtype=np.float32)
    queries = np.asarray(query_vectors, dtype=np.float32)
    if len(docs) != len(doc_ids) or len(queries) != len(query_ids):
        raise ValueError("ids and vectors differ in length")
    if len(queries) == 0:
        raise ValueError("no queries to measure with")
    if k < 1:
        raise ValueError(f"k: {k} must be at least 1")

    exact_scores, exact_positions = exact_search(doc_embeddings=docs, query_embeddings=queries, k=k)
    started = time.perf_counter()
    scores, found = loaded.search(queries, k)
    batch_s = time.perf_counter() - started

    exact_ids = [[doc_ids[p] for p in row if p >= 0] for row in exact_positions]

    def recall(cut: int) -> float:
        shares = [
            len(set(got[:cut]) & set(want[:cut])) / len(want[:cut])
            for got, want in zip(found, exact_ids, strict=True)
            if want
        ]
        return float(np.mean(shares)) if shares else 0.0

    result: dict[str, Any] = {
        "k": int(k),
        "queries": len(queries),
        "recall_at_k": recall(k),
        "recall_at_10": recall(10) if k >= 10 else None,
        "ndcg_at_10": None,
        "exact_ndcg_at_10": None,
    }
    if qrels:
        run = {
            qid: {d: float(s) for d, s in zip(row, scores[i], strict=False)}
            for i, (qid, row) in enumerate(zip(query_ids, found, strict=True))
        }
        exact_run = {
            qid: {
                doc_ids[p]: float(s)
                for p, s in zip(exact_positions[i], exact_scores[i], strict=True)
                if p >= 0
            }
            for i, qid in enumerate(query_ids)
        }
        result["ndcg_at_10"] = float(compute_metrics(qrels=qrels, run=run)[0]["ndcg@10"])
        result["exact_ndcg_at_10"] = float(
            compute_metrics(qrels=qrels, run=exact_run)[0]["ndcg@10"]
        )

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(queries), latency_queries, replace=len(queries) < latency_queries)
    import faiss

    # One faiss thread per query, as the search process runs them (SEARCH_FAISS_THREADS): on
    # two shared cores a second thread makes a single query slower, not faster.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for i in picks[:5]:
            loaded.search(queries[i : i + 1], k)
        times = []
        for i in picks:
            one = queries[i : i + 1]
            started = time.perf_counter()
            loaded.search(one, k)
            times.append(time.perf_counter() - started)
    finally:
        faiss.omp_set_num_threads(threads)
    times_ms = np.asarray(times) * 1000.0
    result.update(
        {
            "latency_queries": int(latency_queries),
            "latency_p50_ms": float(np.percentile(times_ms, 50)) if len(times) else None,
            "latency_p99_ms": float(np.percentile(times_ms, 99)) if len(times) else None,
            "latency_mean_ms": float(times_ms.mean()) if len(times) else None,
            "qps_batch": float(len(queries) / batch_s) if batch_s > 0 else None,
        }
    )
    return result


def add_texts(*, folder: Path, texts: Sequence[str]) -> int:
    """Write the documents' texts (in the index's document order) beside the index, whole or
    not at all; returns the file's size in bytes."""
    from workers.common.atomic import atomic_write

    path = Path(folder) / TEXTS_FILE
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for text in texts:
            fh.write(json.dumps(text) + "\n")
    return path.stat().st_size


def _rows(
    ids: Sequence[str], positions: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, list[list[str]]]:
    """A side index's (positions, scores), -1 past a row's last hit, in ``search``'s shape."""
    rows = [[ids[p] for p in row if p >= 0] for row in positions]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = scores[i, : len(row)]
    return out, rows


def add_sparse(*, folder: Path, documents: Any, model: dict) -> int:
    """Write a sparse model's CSR vectors of the index's documents (in its order) and the
    model's record into the index folder ``folder``, whole or not at all; returns the bytes."""
    import scipy.sparse

    target = Path(folder) / SPARSE_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".sparse.", dir=folder))
    try:
        scipy.sparse.save_npz(tmp / SPARSE_MATRIX, documents.tocsr(), compressed=False)
        (tmp / SPARSE_MODEL).write_text(json.dumps(model, sort_keys=True), encoding="utf-8")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())


def add_bm25(*, folder: Path, texts: Sequence[str]) -> int:
    """Write a BM25 index of ``texts`` (in the index's document order) into the index folder
    ``folder``, whole or not at all; returns its size in bytes."""
    from workers.ml.lexical import bm25_index, bm25_save

    target = Path(folder) / BM25_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".bm25.", dir=folder))
    try:
        bm25_save(bm25_index(texts), tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
