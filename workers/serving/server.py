"""The long-lived search process.

It will hold deployed indexes and warm query encoders in memory (the index issue); for now it
starts, reports its health and the indexes it holds. It is deliberately free of Django so it
can be scaled out on its own.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

logger = logging.getLogger("embedhub.search")

DEFAULT_PORT = 8001


class SearchState:
    def __init__(self) -> None:
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.started_mono = time.monotonic()
        self.indexes: dict[str, object] = {}
        self.lock = threading.RLock()

    def health(self) -> dict:
        with self.lock:
            return {
                "status": "ok",
                "pid": os.getpid(),
                "started_at": self.started_at,
                "uptime_s": round(time.monotonic() - self.started_mono, 1),
                "indexes": len(self.indexes),
            }


def make_handler(state: SearchState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "EmbedHubSearch/0.1"

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if urlsplit(self.path).path == "/health":
                self._send(200, state.health())
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, fmt: str, *args) -> None:
            logger.debug("%s " + fmt, self.address_string(), *args)

    return Handler


def bind_address() -> tuple[str, int]:
    """Host and port from SEARCH_BIND, else from the port of SEARCH_URL (what the web calls)."""
    bind = os.environ.get("SEARCH_BIND", "")
    if bind:
        host, _, port = bind.rpartition(":")
        return host or "0.0.0.0", int(port)
    url = urlsplit(os.environ.get("SEARCH_URL", f"http://127.0.0.1:{DEFAULT_PORT}"))
    host = "127.0.0.1" if url.hostname in ("127.0.0.1", "localhost", None) else "0.0.0.0"
    return host, url.port or DEFAULT_PORT


def serve(host: str, port: int) -> None:
    state = SearchState()
    server = ThreadingHTTPServer((host, port), make_handler(state))
    server.daemon_threads = True

    def stop(signum, frame):
        # shutdown() blocks until serve_forever returns, so it must run on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("search process listening on http://%s:%d", host, port)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
