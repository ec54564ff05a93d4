"""The long-lived search process: deployed indexes and warm query encoders in memory.

An ASGI app (Starlette) served by uvicorn, deliberately free of Django so it can be scaled out
on its own. What to serve comes from a manifest file the web rewrites on every deploy
(``SEARCH_MANIFEST``); the process loads it on start, on ``POST /reload`` and whenever the file
changes (polled), so several replicas follow one manifest.

A swap is atomic: the new index and its encoder are loaded and warmed aside, then one
reference is replaced. A query holds the deployment it started with, so queries in flight
during a swap finish on the old index and none fails.

The event loop only parses, checks and answers: a query's encode runs on its model's encoder
thread, which hands the vectors to a small faiss thread pool for the search; the request
awaits the future of both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from workers.common.store import artifact_ensure
from workers.ml.encode import encode_batch
from workers.serving.auth import authorized
from workers.serving.schema import MAX_BODY, SearchRequestError, parse_search_request

logger = logging.getLogger("embedhub.search")

DEFAULT_PORT = 8001


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# Threads, chosen so that a loaded process runs about one busy thread per core. Each model's
# queries are encoded by ONE encoder thread that batches whatever is waiting, so concurrency
# already becomes batches there: at torch's default (one intra-op thread per core) that thread's
# OpenMP team spins on the cores the faiss searches, the event loop and the web need too. Under
# load a one-query encode took 32.7 ms against 17.0 ms for a bare single-thread encode, and on
# this 2-core machine under other work 71 ms at 2 threads against 19 ms at 1; a query of a few
# tokens gains little from a second thread even when idle. So: 1 intra-op thread per encoder,
# and the faiss searches on the cores left (at least one pool thread, 1 OpenMP thread each,
# since one query on several faiss threads on a busy machine waits for all of them: 16 ms
# against 2.6 ms for one flat query). On 2 cores: the encoder on one, faiss on the other.
TORCH_THREADS = int(os.environ.get("SEARCH_TORCH_THREADS") or 1)
FAISS_THREADS = int(os.environ.get("SEARCH_FAISS_THREADS") or 1)
FAISS_WORKERS = int(os.environ.get("SEARCH_FAISS_WORKERS") or max(1, _cores() - 1))
# Longer than the web's pooled client keeps an idle connection (30 s), so the client always
# drops it first and never sends on a socket the server is closing.
KEEPALIVE_S = int(os.environ.get("SEARCH_KEEPALIVE_S") or 75)

# What must match between a deployment's recorded encoder and its index's, and what the live
# model folder must still be: anything that changes a query vector.
ENCODER_FIELDS = (
    "fingerprint",
    "layout",
    "pooling",
    "normalize",
    "max_seq_length",
    "query_prefix",
    "model_dimension",
    "truncate_dim",
    "pca_dim",
    "precision",
    "backend",
    "quantization",
)
# A deployment's hybrid search: reciprocal rank fusion of the two lists' first `candidates`.
DEFAULT_FUSION = {"rrf_k": 60, "candidates": 100, "dense_weight": 0.5, "lexical": "bm25"}
# What an index recorded before these fields existed was encoded with.
RECORDED_DEFAULTS = {"precision": "fp32", "backend": "torch", "quantization": "none"}


def recorded_value(spec: dict, field: str) -> Any:
    value = spec.get(field)
    return (value or RECORDED_DEFAULTS[field]) if field in RECORDED_DEFAULTS else value


def manifest_path() -> Path:
    """The same default chain as the web's settings (SEARCH_MANIFEST, ARTIFACTS_ROOT, VAR_DIR)."""
    if os.environ.get("SEARCH_MANIFEST"):
        return Path(os.environ["SEARCH_MANIFEST"])
    from workers.common.store import local_root

    return local_root() / "serving" / "deployments.json"


class Refused(Exception):
    """The index cannot be served as the deployment records it."""


def torch_threads() -> None:
    """TORCH_THREADS for every encode of this process (intra-op is process-wide in torch)."""
    import torch

    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
    try:
        torch.set_num_interop_threads(1)  # one forward pass at a time per encoder thread
    except RuntimeError:
        pass  # already set, or inter-op work already ran: allowed once per process


class Encoder:
    """One model's query encoder, fed by one thread that encodes whatever queries are waiting
    in one call. Requests never touch the model themselves: a fast tokenizer is not safe to
    share across threads ("Already borrowed"), and one batched forward pass over the waiting
    queries costs far less than as many single ones on the same cores."""

    MAX_BATCH = 64

    def __init__(self, model: Any, *, normalize: bool, precision: str = "fp32") -> None:
        self.model = model
        self.normalize = normalize
        self.precision = precision  # the index's documents' own: queries must match them
        self.queue: queue.Queue = queue.Queue()
        # Guards the hand-over at close: a query is either queued before the thread decides
        # to end (and answered by it) or sees it ended and encodes itself.
        self.guard = threading.Lock()
        self.closed = self.ended = False
        self.inline = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="encoder")
        self.thread.start()

    def submit(self, texts: list[str]) -> Future | None:
        """Queue ``texts``: a future of their vectors, or None once the thread has ended."""
        done: Future = Future()
        with self.guard:
            if self.ended:
                return None
            self.queue.put((texts, done))
        return done

    def encode(self, texts: list[str]):
        done = self.submit(texts)
        if done is None:  # a query that held a swapped-out deployment: answer it here
            return self.encode_inline(texts)
        return done.result()

    def encode_inline(self, texts: list[str]):
        done: Future = Future()
        with self.inline:
            self._run([(texts, done)])
        return done.result()

    def close(self) -> None:
        """No longer deployed: the thread ends once no query is waiting."""
        self.closed = True

    def _loop(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=1.0)
            except queue.Empty:
                with self.guard:
                    if self.closed and self.queue.empty():
                        self.ended = True
                        return
                continue
            batch = [item]
            while sum(len(t) for t, _ in batch) < self.MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self._run(batch)

    def _run(self, batch: list) -> None:
        # A request whose client went away was cancelled: skip it (and setting its result
        # would raise here, in the encoder thread).
        batch = [(t, done) for t, done in batch if done.set_running_or_notify_cancel()]
        if not batch:
            return
        texts = [text for t, _ in batch for text in t]
        try:
            vectors = encode_batch(encoder=self.model, texts=texts, batch_size=self.MAX_BATCH,
                                   normalize=self.normalize, precision=self.precision)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 (each waiting request gets the error)
            for _, done in batch:
                done.set_exception(exc)
            return
        start = 0
        for t, done in batch:
            done.set_result(vectors[start : start + len(t)])
            start += len(t)


class Reranker:
    """A deployment's cross-encoder, warm, on its own thread: a fast tokenizer must not be used
    by two threads at once, and reranks waiting for it must not hold the faiss pool's threads
    (every deployment's searches run there). Each query's k′ pairs are one ``predict`` call."""

    def __init__(self, model: Any, *, k_prime: int) -> None:
        self.model = model
        self.k_prime = k_prime
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="rerank")

    def rerank(self, queries: list[str], hits: list[list[dict]], texts_of, k: int) -> list:
        """Each query's hits, its top k′ reordered by the reranker's score (which becomes the
        hit's score), the rest below them in their first-stage order and scored below them
        (``workers.ml.rerank.rerank_list``); the best ``k``."""
        from workers.ml.fusion import ranked
        from workers.ml.rerank import cross_encoder_scorer, rerank_list

        score = cross_encoder_scorer(self.model)
        out = []
        for query, row in zip(queries, hits, strict=True):
            first = {h["id"]: h["score"] for h in row}
            head = ranked(first, self.k_prime)
            scores = score(query, texts_of(head)) if head else []
            reranked = rerank_list(first, scores, self.k_prime)
            out.append([{"id": d, "score": round(reranked[d], 6)} for d in ranked(reranked, k)])
        return out


def checked_model(spec: dict, changed: str) -> None:
    """The model folder ``spec`` records ({path, fingerprint, model_name}) is here (fetched from
    the bucket when artifacts live in one) and still the one recorded; else ``Refused``, with
    ``changed`` as the reason when its files differ."""
    from workers.common.store import ArtifactMissing
    from workers.ml.cache import model_fingerprint

    try:
        artifact_ensure(spec["path"])
    except ArtifactMissing:
        raise Refused(f"the model {spec.get('model_name') or ''} is gone") from None
    if model_fingerprint(spec["path"]) != spec.get("fingerprint"):
        raise Refused(changed)


def load_reranker_for(spec: dict) -> Reranker:
    from workers.ml.rerank import load_reranker

    checked_model(spec, f"the reranker {spec.get('model_name') or ''} changed since it was "
                        "deployed (its folder's files differ from the recorded fingerprint): "
                        "set the rerank stage again")  # fmt: skip
    torch_threads()
    model = load_reranker(path=spec["path"], max_length=spec.get("max_length"),
                          device=os.environ.get("SEARCH_DEVICE") or None)  # fmt: skip
    reranker = Reranker(model, k_prime=int(spec["k_prime"]))
    reranker.rerank(["warm up"], [[{"id": "-", "score": 0.0}]], lambda ids: ["warm"], 1)
    return reranker


def reranker_key(spec: dict) -> str:
    return json.dumps({k: spec.get(k) for k in ("path", "fingerprint", "max_length", "k_prime")},
                      sort_keys=True)  # fmt: skip


class SparseQueries:
    """The sparse model (SPLADE) of an index's sparse side, warm, encoding queries on its own
    thread: a fast tokenizer must not be used by two threads at once, and the faiss pool's
    threads must not wait on it."""

    def __init__(self, model: Any, record: dict) -> None:
        self.model = model
        self.record = record
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="sparse")

    def encode(self, queries: list[str]):
        from workers.ml.sparse import encode_sparse

        return encode_sparse(self.model, queries, query=True, on_progress=None)


def load_sparse_for(record: dict) -> SparseQueries:
    from workers.ml.sparse import load_sparse

    checked_model(record, f"the sparse model {record.get('model_name') or ''} changed since the "
                          "index was built (its folder's files differ from the recorded "
                          "fingerprint): build it again")  # fmt: skip
    torch_threads()
    model = load_sparse(path=record["path"], max_seq_length=record.get("max_seq_length"),
                        device=os.environ.get("SEARCH_DEVICE") or None)  # fmt: skip
    sparse = SparseQueries(model, record)
    sparse.encode(["warm up"])  # the first call pays for setup
    return sparse


def sparse_key(record: dict) -> str:
    return json.dumps({k: record.get(k) for k in ("path", "fingerprint", "max_seq_length")},
                      sort_keys=True)  # fmt: skip


@dataclass
class Deployed:
    key: str
    index_id: int
    path: str
    encoder_spec: dict
    index: Any  # workers.ml.indexing.LoadedIndex
    encoder: Encoder
    loaded_at: str
    # A model upgrade's query adapter ({} = none): the queries are encoded by the new model
    # (``adapter["encoder"]``) and mapped into this index's space by ``adapter_matrix``.
    adapter: dict = field(default_factory=dict)
    adapter_matrix: Any = None
    fusion: dict = field(default_factory=dict)  # mode hybrid: the deployment's RRF settings
    rerank: dict = field(default_factory=dict)  # the rerank stage as deployed ({}: none)
    reranker: Reranker | None = None
    sparse: SparseQueries | None = None  # the index's sparse side's query encoder
    # The deployment's relevance calibration for this index ({} = none): {id, model,
    # threshold}, ``model`` as ``workers.ml.calibration.predict`` reads it.
    calibration: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "index_id": self.index_id,
            "count": int(getattr(self.index, "count", 0)),
            "dimension": int(getattr(self.index, "dimension", 0)),
            "mmap": bool(getattr(self.index, "mmap", False)),
            "model": self.encoder_spec.get("model_name"),
            "precision": self.encoder.precision,  # what its queries are encoded in
            "bm25": self.index.bm25 is not None if hasattr(self.index, "bm25") else False,
            "sparse": self.sparse.record.get("model_name") if self.sparse else None,
            "fusion": self.fusion,
            "rerank": {k: self.rerank[k] for k in ("model", "model_name", "k_prime")}
            if self.rerank
            else None,
            "backend": recorded_value(self.encoder_spec, "backend"),
            "quantization": recorded_value(self.encoder_spec, "quantization"),
            "loaded_at": self.loaded_at,
            "calibration": {k: self.calibration.get(k) for k in ("id", "threshold")}
            if self.calibration
            else None,
            "adapter": {k: self.adapter.get(k) for k in ("upgrade", "kind")}
            | {"model": self.query_spec.get("model_name")}
            if self.adapter
            else None,
        }

    @property
    def query_spec(self) -> dict:
        """The encoder its queries go through: the adapter's new model, else the index's."""
        return (self.adapter or {}).get("encoder") or self.encoder_spec


def _faiss_threads() -> None:
    # OpenMP's thread count is per calling thread: each pool thread sets its own, once.
    import faiss

    faiss.omp_set_num_threads(FAISS_THREADS)


def encoder_key(spec: dict) -> str:
    return json.dumps(
        {k: recorded_value(spec, k) for k in ("path", *ENCODER_FIELDS)}, sort_keys=True
    )


def load_encoder_for(spec: dict):
    from workers.ml.encode import load_encoder

    checked_model(spec, f"the model {spec.get('model_name') or ''} changed since the index "
                        "was built (its folder's files differ from the recorded "
                        "fingerprint)")  # fmt: skip
    torch_threads()
    model = load_encoder(
        path=spec["path"],
        layout=spec["layout"],
        pooling=spec["pooling"],
        normalize=spec["normalize"],
        max_seq_length=spec["max_seq_length"],
        device=os.environ.get("SEARCH_DEVICE") or None,
    )
    encoder = Encoder(
        model, normalize=spec["normalize"], precision=recorded_value(spec, "precision")
    )
    encoder.encode(["warm up"])  # the first call pays for setup
    return encoder


def load_adapter_for(adapter: dict, *, dimension: int):
    """A model upgrade's query adapter, checked: the file as fitted (its sha256), mapping the
    new model's dimension into the index's."""
    from workers.common.store import ArtifactMissing
    from workers.ml.adapter import load_adapter

    try:
        # Fetched from the bucket when artifacts live in one (the upgrade job published it).
        path = artifact_ensure(Path(adapter["path"]).parent) / Path(adapter["path"]).name
        matrix = load_adapter(path, sha256=adapter.get("sha256"))
    except (FileNotFoundError, ArtifactMissing):
        raise Refused(f"the adapter of upgrade #{adapter.get('upgrade')} is gone") from None
    except ValueError as exc:
        raise Refused(f"the adapter of upgrade #{adapter.get('upgrade')}: {exc}") from None
    encoder = adapter.get("encoder") or {}
    if matrix.shape != (encoder.get("model_dimension"), dimension):
        raise Refused(
            f"the adapter of upgrade #{adapter.get('upgrade')} maps {matrix.shape[0]} into "
            f"{matrix.shape[1]} dimensions; the new model has {encoder.get('model_dimension')} "
            f"and the index takes {dimension}"
        )
    return matrix


class SearchState:
    def __init__(self, manifest: Path | None = None) -> None:
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.started_mono = time.monotonic()
        self.manifest = manifest or manifest_path()
        # Replaced whole, never mutated: a reader takes the dict once and needs no lock.
        self.deployments: dict[str, Deployed] = {}
        self.encoders: dict[str, Encoder] = {}
        self.rerankers: dict[str, Reranker] = {}
        self.sparse_encoders: dict[str, SparseQueries] = {}
        self.errors: dict[str, str] = {}
        self.manifest_stamp: tuple[int, int] | None = None
        self.reload_lock = threading.Lock()
        self.reloads = 0
        self.faiss = ThreadPoolExecutor(
            FAISS_WORKERS, thread_name_prefix="faiss", initializer=_faiss_threads
        )

    def liveness(self) -> dict:
        """What /health tells anyone: up, and since when; no names, paths or errors."""
        return {
            "status": "ok",
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "indexes": len(self.deployments),
        }

    def health(self) -> dict:
        """/health with the token: what is served, from where, and what was refused."""
        deployments = self.deployments
        return {
            **self.liveness(),
            "indexes": len(deployments),
            "deployments": {key: d.describe() for key, d in deployments.items()},
            "errors": dict(self.errors),
            "manifest": str(self.manifest),
            "reloads": self.reloads,
        }

    # --- loading ------------------------------------------------------------------------

    def stamp(self) -> tuple[int, int] | None:
        """Inode and nanosecond mtime: the web replaces the file, so a new inode is a change
        even within one mtime tick."""
        try:
            st = self.manifest.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8")).get("deployments", {})
        except FileNotFoundError:
            return {}

    def reload(self) -> dict:
        """Bring the served set in line with the manifest; unchanged deployments stay as they
        are, a refused one keeps serving what it served before and reports why."""
        with self.reload_lock:
            self.manifest_stamp = self.stamp()
            wanted = self.read_manifest()
            current = self.deployments
            encoders = dict(self.encoders)
            rerankers = dict(self.rerankers)
            sparse_encoders = dict(self.sparse_encoders)
            new: dict[str, Deployed] = {}
            errors: dict[str, str] = {}
            for key, entry in wanted.items():
                old = current.get(key)
                if (
                    old
                    and old.index_id == entry["index_id"]
                    and old.path == entry["path"]
                    and old.fusion == {**DEFAULT_FUSION, **(entry.get("fusion") or {})}
                    and old.rerank == (entry.get("rerank") or {})
                    and old.adapter == (entry.get("adapter") or {})
                ):
                    # A new calibration alone needs nothing loaded: the same index, relabelled.
                    calibration = entry.get("calibration") or {}
                    new[key] = (
                        old if old.calibration == calibration
                        else replace(old, calibration=calibration)
                    )  # fmt: skip
                    continue
                try:
                    new[key] = self._load(key, entry, encoders, rerankers, sparse_encoders)
                    logger.info("serving %s from index #%s", key, entry["index_id"])
                except Exception as exc:  # noqa: BLE001 (any failure keeps the old one serving)
                    errors[key] = f"index #{entry.get('index_id')} refused: {exc}"
                    logger.warning("%s: %s", key, errors[key])
                    if old:
                        new[key] = old
            used = {encoder_key(d.query_spec) for d in new.values()}
            for k, e in encoders.items():
                if k not in used:
                    e.close()  # queries already queued are answered first
            self.encoders = {k: e for k, e in encoders.items() if k in used}
            used = {reranker_key(d.rerank) for d in new.values() if d.rerank}
            for k, r in rerankers.items():
                if k not in used:
                    r.thread.shutdown(wait=False)  # a query already given to it still ends
            self.rerankers = {k: r for k, r in rerankers.items() if k in used}
            used = {sparse_key(d.sparse.record) for d in new.values() if d.sparse}
            for k, q in sparse_encoders.items():
                if k not in used:
                    q.thread.shutdown(wait=False)
            self.sparse_encoders = {k: q for k, q in sparse_encoders.items() if k in used}
            self.deployments = new  # the swap: one reference
            self.errors = errors
            self.reloads += 1
            return {
                "deployments": {k: d.describe() for k, d in new.items()},
                "errors": errors,
            }

    def _load(
        self,
        key: str,
        entry: dict,
        encoders: dict[str, Encoder],
        rerankers: dict[str, Reranker],
        sparse_encoders: dict[str, SparseQueries],
    ) -> Deployed:
        from workers.ml.indexing import LoadedIndex

        spec = entry["encoder"]
        try:  # with a bucket: the index fetched whole to this host first, if not here
            folder = artifact_ensure(Path(entry["path"]))
        except FileNotFoundError:
            raise Refused(f"{entry['path']} holds no index") from None
        try:
            recorded = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise Refused(f"{folder} holds no index") from None
        differs = [
            f for f in ENCODER_FIELDS if recorded_value(recorded, f) != recorded_value(spec, f)
        ]
        if differs:
            raise Refused(
                "the index was built with another query encoder than the deployment records "
                f"({', '.join(differs)} differ)"
            )
        index = LoadedIndex.load(folder, mmap=True)
        adapter = entry.get("adapter") or {}
        matrix = None
        query_spec = spec
        if adapter:
            matrix = load_adapter_for(adapter, dimension=index.input_dimension)
            query_spec = adapter["encoder"]
        ekey = encoder_key(query_spec)
        if ekey not in encoders:
            encoders[ekey] = load_encoder_for(query_spec)
        rerank = entry.get("rerank") or {}
        reranker = None
        if rerank:
            if not index.has_texts:
                raise Refused("the index keeps no document texts for its rerank stage")
            index.texts_of([])  # read now, not on the first query
            rkey = reranker_key(rerank)
            if rkey not in rerankers:
                rerankers[rkey] = load_reranker_for(rerank)
            reranker = rerankers[rkey]
        sparse = None
        if index.sparse is not None:
            skey = sparse_key(index.sparse_model)
            if skey not in sparse_encoders:
                sparse_encoders[skey] = load_sparse_for(index.sparse_model)
            sparse = sparse_encoders[skey]
        return Deployed(
            key=key,
            index_id=int(entry["index_id"]),
            path=entry["path"],
            encoder_spec=spec,
            index=index,
            encoder=encoders[ekey],
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            adapter=adapter,
            adapter_matrix=matrix,
            fusion={**DEFAULT_FUSION, **(entry.get("fusion") or {})},
            rerank=rerank,
            reranker=reranker,
            sparse=sparse,
            calibration=entry.get("calibration") or {},
        )

    def watch(self, interval: float, stop: threading.Event) -> None:
        """Reload when the manifest file changes (another replica's deploy, a missed POST).
        With artifacts in a bucket, the bucket's copy is the manifest: a replica on another
        host follows it into its local file."""
        from workers.common.store import store

        bucket, etag = store(), None
        while not stop.wait(interval):
            if bucket is not None:
                try:
                    changed = bucket.changed_manifest(etag)
                except Exception:  # noqa: BLE001 (the bucket may be briefly unreachable)
                    logger.warning("could not read the bucket's search manifest", exc_info=True)
                    changed = None
                if changed is not None:
                    etag = changed[1]
                    self.take_manifest(changed[0])
            if self.stamp() != self.manifest_stamp:
                self.reload_quietly()

    def take_manifest(self, content: bytes) -> bool:
        """Write the bucket's manifest as this process's own, unless the local one was written
        later (on the web's host, the local file is written before the upload: a failed or
        slower upload must not roll it back)."""
        from workers.common.atomic import atomic_write

        def written_at(data: bytes) -> float:
            try:
                return float(json.loads(data).get("written_at") or 0)
            except (ValueError, AttributeError):
                return 0.0

        try:
            local = self.manifest.read_bytes()
        except FileNotFoundError:
            local = b""
        if local and written_at(local) >= written_at(content):
            return False
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.manifest, "wb") as fh:
            fh.write(content)
        return True

    def reload_quietly(self) -> None:
        try:
            self.reload()
        except Exception:  # noqa: BLE001 (a bad manifest must not kill the thread)
            logger.exception("reload failed")

    # --- searching ----------------------------------------------------------------------

    def encode_and_search(
        self, deployed: Deployed, texts: list[str], k: int, filters: dict | None
    ) -> Future:
        """A future of ``(scores, ids, encode_s, search_s, adapter_s)``: the encode on the
        model's encoder thread, then (a query adapter's map and) the faiss search in the pool,
        handed from one thread to the other directly, so the event loop wakes once per query
        instead of twice."""
        done: Future = Future()
        t0 = time.perf_counter()

        def fail(exc: BaseException) -> None:
            try:
                done.set_exception(exc)
            except InvalidStateError:
                pass  # cancelled: its client went away

        def search(vectors, encode_s: float) -> None:
            if not done.set_running_or_notify_cancel():
                return
            adapter_s = 0.0
            try:
                if deployed.adapter_matrix is not None:
                    # The new model's query vectors, mapped into the old index's space.
                    from workers.ml.adapter import apply_adapter

                    t1 = time.perf_counter()
                    normalize = bool(deployed.encoder_spec.get("normalize"))
                    vectors = apply_adapter(vectors, deployed.adapter_matrix, normalize=normalize)
                    adapter_s = time.perf_counter() - t1
                t1 = time.perf_counter()
                scores, ids = deployed.index.search(vectors, k, filters=filters)
            except Exception as exc:  # noqa: BLE001 (the request answers it)
                done.set_exception(exc)
                return
            done.set_result((scores, ids, encode_s, time.perf_counter() - t1, adapter_s))

        def encoded(future: Future) -> None:
            if future.cancelled():
                return
            if future.exception() is not None:
                fail(future.exception())
                return
            try:
                self.faiss.submit(search, future.result(), time.perf_counter() - t0)
            except RuntimeError as exc:  # the pool is shut down: the process is stopping
                fail(exc)

        queued = deployed.encoder.submit(texts)
        if queued is None:  # a swapped-out encoder whose thread ended: encode in the pool too

            def inline() -> None:
                try:
                    vectors = deployed.encoder.encode_inline(texts)
                except Exception as exc:  # noqa: BLE001
                    fail(exc)
                    return
                search(vectors, time.perf_counter() - t0)

            self.faiss.submit(inline)
        else:
            queued.add_done_callback(encoded)
            done.add_done_callback(lambda f: f.cancelled() and queued.cancel())
        return done

    async def search(self, body: dict) -> tuple[int, dict]:
        try:
            request = parse_search_request(body)  # the same schema the web checked against
        except SearchRequestError as exc:
            return 400, {"error": str(exc)}
        key = request.deployment
        deployed = self.deployments.get(key)
        if deployed is None:
            reason = self.errors.get(key, "not loaded")
            return 404, {"error": f"deployment {key!r} is not served here ({reason})"}
        loop = asyncio.get_running_loop()
        side = deployed.fusion["lexical"] if request.mode == "hybrid" else request.mode
        if missing := missing_side(deployed, side, request.mode):
            return 400, {"error": missing}
        if request.filters:
            try:  # an unknown field is the caller's error, named, before any encoding
                await loop.run_in_executor(self.faiss, deployed.index.select, request.filters)
            except ValueError as exc:
                return 400, {"error": f"filters: {exc}"}
        timings: dict[str, float] = {"encode_ms": 0.0, "search_ms": 0.0}
        dense = lexical = None
        reranker = deployed.reranker if request.rerank else None
        # Relevance is calibrated on the dense first stage's scores: only those get it.
        calibration = deployed.calibration if request.mode == "dense" and reranker is None else {}
        if request.min_relevance is not None and not calibration:
            return 400, {"error": relevance_refusal(deployed, request.mode, reranker)}
        # The first stage returns k′ hits when a rerank stage follows, else k.
        first_k = max(request.k, reranker.k_prime) if reranker is not None else request.k
        depth = first_k
        if calibration:
            from workers.ml.calibration import FEATURE_DEPTH

            depth = max(depth, FEATURE_DEPTH)  # the per-query features read that many
        if request.mode == "hybrid":
            depth = max(first_k, int(deployed.fusion["candidates"]))
        if side == "bm25":
            t0 = time.perf_counter()
            lexical = await loop.run_in_executor(
                self.faiss, deployed.index.search_bm25, request.queries, depth, request.filters
            )
            timings["bm25_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        elif side == "sparse":
            t0 = time.perf_counter()
            vectors = await loop.run_in_executor(
                deployed.sparse.thread, deployed.sparse.encode, list(request.queries)
            )
            lexical = await loop.run_in_executor(
                self.faiss, deployed.index.search_sparse, vectors, depth, request.filters
            )
            timings["sparse_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if request.mode in ("dense", "hybrid"):
            prefix = deployed.query_spec.get("query_prefix") or ""
            # Normalised (or not) by the encoder, as the deployment's model records it.
            texts = [prefix + q for q in request.queries]
            scores, ids, encode_s, search_s, adapter_s = await asyncio.wrap_future(
                self.encode_and_search(deployed, texts, depth, request.filters)
            )
            timings.update(encode_ms=round(encode_s * 1000, 3),
                           search_ms=round(search_s * 1000, 3))  # fmt: skip
            if deployed.adapter:
                timings["adapter_ms"] = round(adapter_s * 1000, 4)
            dense = (scores, ids)
        if request.mode == "hybrid":
            results = hybrid_results(dense=dense, lexical=lexical, fusion=deployed.fusion,
                                     k=first_k)  # fmt: skip
        else:
            scores, ids = dense if lexical is None else lexical
            results = [
                [
                    {"id": doc_id, "score": round(float(s), 6)}
                    for doc_id, s in zip(row, srow, strict=False)
                ]
                for row, srow in zip(ids, scores, strict=True)
            ]
        if calibration:
            results = calibrated(results, calibration["model"], k=request.k,
                                 min_relevance=request.min_relevance)  # fmt: skip
        if reranker is not None:
            t0 = time.perf_counter()
            results = await loop.run_in_executor(
                reranker.thread, reranker.rerank, list(request.queries), results,
                deployed.index.texts_of, request.k,
            )  # fmt: skip
            timings["rerank_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        return 200, {
            "deployment": key,
            "index_id": deployed.index_id,
            "results": results,
            "timings": timings,
        }


def relevance_refusal(deployed: Deployed, mode: str, reranker: Reranker | None) -> str:
    """Why a request with ``min_relevance`` cannot be answered by this deployment."""
    name = deployed.key.partition("/")[2] or deployed.key
    if not deployed.calibration:
        return (
            f"min_relevance: {name} has no current relevance calibration (fit one on its page; "
            "after a swap to another index the old one is stale until refitted)"
        )
    if mode != "dense":
        return "min_relevance: relevance is calibrated on dense scores: send mode dense"
    return (
        "min_relevance: relevance is calibrated on the first stage's scores: send rerank "
        "false to skip the deployment's rerank stage"
    )


def calibrated(results: list[list[dict]], model: dict, *, k: int,
               min_relevance: float | None) -> list[list[dict]]:  # fmt: skip
    """Each query's hits with their calibrated ``relevance``, computed from the whole list
    retrieved (the per-query features read its first ``FEATURE_DEPTH``), then its best ``k``,
    less those under ``min_relevance``."""
    from workers.ml.calibration import relevance_rows

    values = relevance_rows(model, [[h["score"] for h in row] for row in results])
    out = []
    for row, probabilities in zip(results, values, strict=True):
        hits = [{**h, "relevance": round(p, 6)} for h, p in zip(row, probabilities, strict=True)]
        hits = hits[:k]
        if min_relevance is not None:
            hits = [h for h in hits if h["relevance"] >= min_relevance]
        out.append(hits)
    return out


def missing_side(deployed: Deployed, side: str, mode: str) -> str:
    """Why ``mode`` cannot be answered by this deployment's index ("" when it can): bm25 needs
    the index's BM25 index, sparse its sparse side; hybrid fuses with the side its fusion
    names."""
    has = {"bm25": getattr(deployed.index, "bm25", None) is not None,
           "sparse": deployed.sparse is not None}  # fmt: skip
    if side not in has or has[side]:
        return ""
    how = "build the index with bm25 on" if side == "bm25" else "build it with a sparse model"
    if mode == "hybrid" and not any(has.values()):
        return (
            f"mode: hybrid needs a BM25 index or a sparse side, and index #{deployed.index_id} "
            "has neither (build the index with bm25 on, or with a sparse model)"
        )
    if mode == "hybrid":
        other = "sparse" if side == "bm25" else "bm25"
        return (
            f"mode: hybrid fuses with {side} (the deployment's fusion.lexical), and index "
            f"#{deployed.index_id} has none: {how}, or set fusion.lexical to {other}"
        )
    what = "a BM25 index" if side == "bm25" else "a sparse side"
    return f"mode: {mode} needs {what}, and index #{deployed.index_id} has none ({how})"


def hybrid_results(*, dense, lexical, fusion: dict, k: int) -> list[list[dict]]:
    """Each query's dense and lexical (BM25 or sparse) lists (``(scores, ids)`` as the index
    answers them) fused by reciprocal rank fusion as the deployment records it
    (``workers.ml.fusion``, the function a hybrid evaluation uses); the score of a hit is its
    fused score."""
    from workers.ml.fusion import rrf

    def as_run(scores, ids) -> dict:
        return {
            str(i): {doc: float(s) for doc, s in zip(row, srow, strict=False)}
            for i, (row, srow) in enumerate(zip(ids, scores, strict=True))
        }

    weight = float(fusion.get("dense_weight", 0.5))
    fused = rrf([as_run(*dense), as_run(*lexical)], k=int(fusion["rrf_k"]), top_k=k,
                weights=[2 * weight, 2 * (1 - weight)])  # fmt: skip
    return [
        [{"id": doc, "score": round(score, 6)} for doc, score in fused.get(str(i), {}).items()]
        for i in range(len(dense[1]))
    ]


# --- HTTP -----------------------------------------------------------------------------------


def answer(status: int, payload: dict, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


async def _send_closing(send: Callable, status: int, message: str) -> None:
    """An answer after which the connection closes: the request's body stays unread, so the
    connection cannot carry another request."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"Connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Before any route: the body's framing and size, then the shared secret
    (workers.serving.auth). Every route but ``GET /health`` asks for the secret; /health with
    no Authorization header tells anyone whether the process is up, with the secret it adds
    what is served and refused, with a wrong one it is a 401 like the rest. A refused body is
    left for uvicorn to read past, so a kept-alive connection stays in step."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        if not token:
            raise ValueError("the search process never runs without a token")
        self.app, self.token = app, token

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        headers = Headers(scope=scope)
        if "transfer-encoding" in headers:
            await _send_closing(send, 411, "send the body with a Content-Length")
            return
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            await _send_closing(send, 400, "Content-Length is not a number")
            return
        if length > MAX_BODY or length < 0:
            await _send_closing(send, 413, "request body too large")
            return
        given = headers.get("authorization")
        public = scope["path"] == "/health" and scope["method"] == "GET" and given is None
        if not public and not authorized(given, self.token):
            response = answer(
                401,
                {"error": "a valid search token is required (Authorization: Bearer …)"},
                {"WWW-Authenticate": 'Bearer realm="embedhub-search"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> dict | Response:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        return answer(400, {"error": f"request body: {exc}"})
    if not isinstance(body, dict):
        return answer(400, {"error": "request body must be a JSON object"})
    return body


def create_app(state: SearchState, token: str, *, poll_interval: float | None = None) -> Guard:
    """The ASGI app: /health, /search and /reload behind the Guard. With ``poll_interval``,
    it loads the manifest on start-up (after it listens) and follows the file."""

    async def health(request: Request) -> Response:
        # The Guard let it through: either no Authorization header at all, or the secret.
        if request.headers.get("authorization") is None:
            return answer(200, state.liveness())
        return answer(200, state.health())

    async def search(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            status, payload = await state.search(body)
        except Exception as exc:  # noqa: BLE001 (one bad query is its own 500, not the process's)
            logger.exception("search failed")
            status, payload = 500, {"error": f"search failed: {exc}"}
        return answer(status, payload)

    async def reload(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        if body.get("wait"):
            try:
                return answer(200, await asyncio.to_thread(state.reload))
            except Exception as exc:  # noqa: BLE001
                logger.exception("reload failed")
                return answer(500, {"error": f"reload failed: {exc}"})
        # Loading a big index takes a while; the deploy request need not wait.
        threading.Thread(target=state.reload_quietly, daemon=True, name="reload").start()
        return answer(202, {"reloading": True})

    async def not_found(request: Request, exc: Exception) -> Response:
        return answer(404, {"error": "not found"})  # an unknown route or method, as before

    @asynccontextmanager
    async def lifespan(app: Starlette):
        stop = threading.Event()
        if poll_interval is not None:

            def follow() -> None:
                try:
                    state.reload()
                except Exception:  # noqa: BLE001
                    logger.exception("initial load failed")
                state.watch(poll_interval, stop)

            threading.Thread(target=follow, daemon=True, name="manifest-watch").start()
        try:
            yield
        finally:
            stop.set()
            state.faiss.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/search", search, methods=["POST"]),
            Route("/reload", reload, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    return Guard(app, token)


def bind_address(bind: str | None = None) -> tuple[str, int]:
    """Host and port from ``bind`` (--bind) or SEARCH_BIND, HOST:PORT; else the port of
    SEARCH_URL (what the web calls). The host is 127.0.0.1 unless named: listening on every
    interface (0.0.0.0, as docker-compose.yml does on its internal network) is a choice."""
    bind = bind or os.environ.get("SEARCH_BIND", "")
    if bind:
        host, _, port = bind.rpartition(":")
        return host or "127.0.0.1", int(port)
    url = urlsplit(os.environ.get("SEARCH_URL", f"http://127.0.0.1:{DEFAULT_PORT}"))
    if url.hostname not in ("127.0.0.1", "localhost", "::1", None):
        logger.warning(
            "SEARCH_URL names %s but the search process listens on 127.0.0.1 only; set "
            "SEARCH_BIND=0.0.0.0:%d to listen on every interface",
            url.hostname,
            url.port or DEFAULT_PORT,
        )
    return "127.0.0.1", url.port or DEFAULT_PORT


def _stopped(signum, frame) -> None:
    raise SystemExit(0)


def serve(host: str, port: int, token: str) -> None:
    """Run until SIGTERM or SIGINT: uvicorn stops listening, lets the requests in flight
    finish, then the process exits 0 (a container's or honcho's stop is not an error)."""
    import uvicorn

    poll = float(os.environ.get("SEARCH_POLL_S", "1.0"))
    app = create_app(SearchState(), token, poll_interval=poll)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        loop="asyncio",
        ws="none",
        lifespan="on",
        log_config=None,  # the process's own logging (workers.serving.__main__)
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEPALIVE_S,
        timeout_graceful_shutdown=5,
    )
    # uvicorn handles the signal while it runs, then raises it again once it has stopped:
    # this handler makes that (and a signal before it started) a clean exit.
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    logger.info(
        "search process on http://%s:%d (uvicorn; torch %d thread, faiss %d × %d thread)",
        host,
        port,
        TORCH_THREADS,
        FAISS_WORKERS,
        FAISS_THREADS,
    )
    uvicorn.Server(config).run()
