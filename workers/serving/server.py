"""The long-lived search process: deployed indexes and warm query encoders in memory.

It is deliberately free of Django so it can be scaled out on its own. What to serve comes from
a manifest file the web rewrites on every deploy (``SEARCH_MANIFEST``); the process loads it on
start, on ``POST /reload`` and whenever the file changes (polled), so several replicas follow
one manifest.

A swap is atomic: the new index and its encoder are loaded and warmed aside, then one
reference is replaced. A query holds the deployment it started with, so queries in flight
during a swap finish on the old index and none fails.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workers.serving.auth import authorized

logger = logging.getLogger("embedhub.search")

DEFAULT_PORT = 8001
MAX_QUERIES = 256
MAX_K = 1000
MAX_BODY = 1 << 20
FAISS_THREADS = int(os.environ.get("SEARCH_FAISS_THREADS", "1"))

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
)


def manifest_path() -> Path:
    """The same default chain as the web's settings (SEARCH_MANIFEST, ARTIFACTS_ROOT, VAR_DIR)."""
    if os.environ.get("SEARCH_MANIFEST"):
        return Path(os.environ["SEARCH_MANIFEST"])
    var = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parents[2] / "var")
    artifacts = Path(os.environ.get("ARTIFACTS_ROOT") or var / "artifacts")
    return artifacts / "serving" / "deployments.json"


class Refused(Exception):
    """The index cannot be served as the deployment records it."""


class Encoder:
    """One model's query encoder, fed by one thread that encodes whatever queries are waiting
    in one call. Requests never touch the model themselves: a fast tokenizer is not safe to
    share across threads ("Already borrowed"), and one batched forward pass over the waiting
    queries uses both cores where one query at a time under a lock left one idle."""

    MAX_BATCH = 64

    def __init__(self, model: Any, *, normalize: bool) -> None:
        self.model = model
        self.normalize = normalize
        self.queue: queue.Queue = queue.Queue()
        # Guards the hand-over at close: a query is either queued before the thread decides
        # to end (and answered by it) or sees it ended and encodes itself.
        self.guard = threading.Lock()
        self.closed = self.ended = False
        self.inline = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="encoder")
        self.thread.start()

    def encode(self, texts: list[str]):
        done: Future = Future()
        with self.guard:
            if not self.ended:
                self.queue.put((texts, done))
                queued = True
            else:
                queued = False
        if not queued:  # a query that held a swapped-out deployment: answer it here
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
        texts = [text for t, _ in batch for text in t]
        try:
            vectors = self.model.encode(
                texts,
                batch_size=self.MAX_BATCH,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        except Exception as exc:  # noqa: BLE001 (each waiting request gets the error)
            for _, done in batch:
                done.set_exception(exc)
            return
        start = 0
        for t, done in batch:
            done.set_result(vectors[start : start + len(t)])
            start += len(t)


@dataclass
class Deployed:
    key: str
    index_id: int
    path: str
    encoder_spec: dict
    index: Any  # workers.ml.indexing.LoadedIndex
    encoder: Encoder
    loaded_at: str

    def describe(self) -> dict:
        return {
            "index_id": self.index_id,
            "count": int(getattr(self.index, "count", 0)),
            "dimension": int(getattr(self.index, "dimension", 0)),
            "mmap": bool(getattr(self.index, "mmap", False)),
            "model": self.encoder_spec.get("model_name"),
            "loaded_at": self.loaded_at,
        }


def _faiss_threads() -> None:
    import faiss

    faiss.omp_set_num_threads(FAISS_THREADS)


def encoder_key(spec: dict) -> str:
    return json.dumps({k: spec.get(k) for k in ("path", *ENCODER_FIELDS)}, sort_keys=True)


def load_encoder_for(spec: dict):
    from workers.ml.cache import model_fingerprint
    from workers.ml.encode import load_encoder

    if model_fingerprint(spec["path"]) != spec.get("fingerprint"):
        raise Refused(
            f"the model folder {spec['path']} changed since the index was built "
            "(its files differ from the recorded fingerprint)"
        )
    model = load_encoder(
        path=spec["path"],
        layout=spec["layout"],
        pooling=spec["pooling"],
        normalize=spec["normalize"],
        max_seq_length=spec["max_seq_length"],
        device=os.environ.get("SEARCH_DEVICE") or None,
    )
    encoder = Encoder(model, normalize=spec["normalize"])
    encoder.encode(["warm up"])  # the first call pays for setup
    return encoder


class SearchState:
    def __init__(self, manifest: Path | None = None) -> None:
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.started_mono = time.monotonic()
        self.manifest = manifest or manifest_path()
        # Replaced whole, never mutated: a reader takes the dict once and needs no lock.
        self.deployments: dict[str, Deployed] = {}
        self.encoders: dict[str, Encoder] = {}
        self.errors: dict[str, str] = {}
        self.manifest_stamp: tuple[int, int] | None = None
        self.reload_lock = threading.Lock()
        self.reloads = 0

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
            new: dict[str, Deployed] = {}
            errors: dict[str, str] = {}
            for key, entry in wanted.items():
                old = current.get(key)
                if old and old.index_id == entry["index_id"] and old.path == entry["path"]:
                    new[key] = old
                    continue
                try:
                    new[key] = self._load(key, entry, encoders)
                    logger.info("serving %s from index #%s", key, entry["index_id"])
                except Exception as exc:  # noqa: BLE001 (any failure keeps the old one serving)
                    errors[key] = f"index #{entry.get('index_id')} refused: {exc}"
                    logger.warning("%s: %s", key, errors[key])
                    if old:
                        new[key] = old
            used = {encoder_key(d.encoder_spec) for d in new.values()}
            for k, e in encoders.items():
                if k not in used:
                    e.close()  # queries already queued are answered first
            self.encoders = {k: e for k, e in encoders.items() if k in used}
            self.deployments = new  # the swap: one reference
            self.errors = errors
            self.reloads += 1
            return {
                "deployments": {k: d.describe() for k, d in new.items()},
                "errors": errors,
            }

    def _load(self, key: str, entry: dict, encoders: dict[str, Encoder]) -> Deployed:
        from workers.ml.indexing import LoadedIndex

        spec = entry["encoder"]
        folder = Path(entry["path"])
        try:
            recorded = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise Refused(f"{folder} holds no index") from None
        differs = [f for f in ENCODER_FIELDS if recorded.get(f) != spec.get(f)]
        if differs:
            raise Refused(
                "the index was built with another query encoder than the deployment records "
                f"({', '.join(differs)} differ)"
            )
        ekey = encoder_key(spec)
        if ekey not in encoders:
            encoders[ekey] = load_encoder_for(spec)
        index = LoadedIndex.load(folder, mmap=True)
        return Deployed(
            key=key,
            index_id=int(entry["index_id"]),
            path=entry["path"],
            encoder_spec=spec,
            index=index,
            encoder=encoders[ekey],
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def watch(self, interval: float, stop: threading.Event) -> None:
        """Reload when the manifest file changes (another replica's deploy, a missed POST)."""
        while not stop.wait(interval):
            if self.stamp() != self.manifest_stamp:
                self.reload_quietly()

    def reload_quietly(self) -> None:
        try:
            self.reload()
        except Exception:  # noqa: BLE001 (a bad manifest must not kill the thread)
            logger.exception("reload failed")

    # --- searching ----------------------------------------------------------------------

    def search(self, body: dict) -> tuple[int, dict]:
        key = body.get("deployment")
        deployed = self.deployments.get(key) if isinstance(key, str) else None
        if deployed is None:
            reason = self.errors.get(key, "not loaded") if isinstance(key, str) else "missing"
            return 404, {"error": f"deployment {key!r} is not served here ({reason})"}
        queries = body.get("queries")
        if (
            not isinstance(queries, list)
            or not queries
            or not all(isinstance(q, str) and q.strip() for q in queries)
        ):
            return 400, {"error": "queries: a non-empty list of non-empty strings"}
        if len(queries) > MAX_QUERIES:
            return 400, {"error": f"queries: at most {MAX_QUERIES} per request"}
        k = body.get("k", 10)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            return 400, {"error": f"k: an integer from 1 to {MAX_K}"}
        filters = body.get("filters") or None
        if filters is not None and not isinstance(filters, dict):
            return 400, {"error": "filters: an object of field → value"}
        try:
            deployed.index.select(filters)  # an unknown field is the caller's error, named
        except ValueError as exc:
            return 400, {"error": f"filters: {exc}"}
        spec = deployed.encoder_spec
        t0 = time.perf_counter()
        prefix = spec.get("query_prefix") or ""
        # Normalised (or not) by the encoder, as the deployment's model records it.
        vectors = deployed.encoder.encode([prefix + q for q in queries])
        t1 = time.perf_counter()
        # OpenMP's thread count is per calling thread: set it in the request thread itself.
        # Concurrency comes from the requests; one query on several faiss threads on a busy
        # machine waits for them (measured: 16 ms against 2.6 ms for one flat query).
        _faiss_threads()
        scores, ids = deployed.index.search(vectors, k, filters=filters)
        t2 = time.perf_counter()
        results = [
            [
                {"id": doc_id, "score": round(float(s), 6)}
                for doc_id, s in zip(row, srow, strict=False)
            ]
            for row, srow in zip(ids, scores, strict=True)
        ]
        return 200, {
            "deployment": key,
            "index_id": deployed.index_id,
            "results": results,
            "timings": {
                "encode_ms": round((t1 - t0) * 1000, 3),
                "search_ms": round((t2 - t1) * 1000, 3),
            },
        }


def make_handler(state: SearchState, token: str) -> type[BaseHTTPRequestHandler]:
    """Every route but ``GET /health`` asks for the shared secret (workers.serving.auth).
    /health with no Authorization header tells anyone whether the process is up; with the
    secret it adds what is served and refused; with a wrong one it is a 401 like the rest."""
    if not token:
        raise ValueError("the search process never runs without a token")

    class Handler(BaseHTTPRequestHandler):
        server_version = "EmbedHubSearch/0.3"
        protocol_version = "HTTP/1.1"  # keep-alive: the web reuses one connection per thread
        timeout = 120  # an idle kept-alive connection gives its thread back
        # Headers and body are two writes: on a kept-alive connection Nagle's algorithm would
        # hold the body back for the client's delayed ACK (measured: 44 ms per /health).
        disable_nagle_algorithm = True

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, status: int, message: str) -> None:
            # The body is unread: the connection cannot carry another request.
            self.close_connection = True
            self._send(status, {"error": message}, {"Connection": "close"})

        def _raw_body(self) -> bytes | None:
            """The request's body, read whole before any answer (401s included) so that a
            kept-alive connection stays in step; None when refused (the connection closes)."""
            if self.headers.get("Transfer-Encoding"):
                self._refuse(411, "send the body with a Content-Length")
                return None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._refuse(400, "Content-Length is not a number")
                return None
            if length > MAX_BODY or length < 0:
                self._refuse(413, "request body too large")
                return None
            return self.rfile.read(length) if length else b""

        def _authorized(self) -> bool:
            return authorized(self.headers.get("Authorization"), token)

        def _unauthorized(self) -> None:
            self._send(
                401,
                {"error": "a valid search token is required (Authorization: Bearer …)"},
                {"WWW-Authenticate": 'Bearer realm="embedhub-search"'},
            )

        def _json(self, raw: bytes) -> dict | None:
            try:
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                self._send(400, {"error": f"request body: {exc}"})
                return None
            if not isinstance(body, dict):
                self._send(400, {"error": "request body must be a JSON object"})
                return None
            return body

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self._raw_body() is None:
                return
            path = urlsplit(self.path).path
            if path == "/health" and self.headers.get("Authorization") is None:
                self._send(200, state.liveness())  # anyone (a container's probe): up or not
            elif not self._authorized():
                self._unauthorized()  # a wrong token is told so, on /health too
            elif path == "/health":
                self._send(200, state.health())
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            raw = self._raw_body()
            if raw is None:
                return
            if not self._authorized():
                self._unauthorized()
                return
            path = urlsplit(self.path).path
            body = self._json(raw)
            if body is None:
                return
            if path == "/search":
                try:
                    status, payload = state.search(body)
                except Exception as exc:  # noqa: BLE001 (one bad query must not kill the thread)
                    logger.exception("search failed")
                    status, payload = 500, {"error": f"search failed: {exc}"}
                self._send(status, payload)
            elif path == "/reload":
                if body.get("wait"):
                    self._send(200, state.reload())
                else:
                    # Loading a big index takes a while; the deploy request need not wait.
                    threading.Thread(target=state.reload_quietly, daemon=True).start()
                    self._send(202, {"reloading": True})
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, fmt: str, *args) -> None:
            logger.debug("%s " + fmt, self.address_string(), *args)

    return Handler


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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 16+ concurrent clients connect at once


def serve(host: str, port: int, token: str) -> None:
    state = SearchState()
    server = Server((host, port), make_handler(state, token))
    stop_watch = threading.Event()

    def stop(signum, frame):
        stop_watch.set()
        # shutdown() blocks until serve_forever returns, so it must run on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Listen first (health answers at once), then load what is deployed.
    logger.info("search process listening on http://%s:%d", host, port)
    interval = float(os.environ.get("SEARCH_POLL_S", "1.0"))

    def start() -> None:
        try:
            state.reload()
        except Exception:  # noqa: BLE001
            logger.exception("initial load failed")
        state.watch(interval, stop_watch)

    threading.Thread(target=start, daemon=True, name="manifest-watch").start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
