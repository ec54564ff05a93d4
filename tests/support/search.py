"""A real search process (python -m workers.serving) for tests, on its own port and manifest.

It gets no SEARCH_TOKEN: like the embedded default it takes the shared token file under the
tests' VAR_DIR, which the web side of the tests (settings.VAR_DIR) reads too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from workers.serving.auth import bearer, resolve_token

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SearchProcess:
    def __init__(
        self, port: int, manifest: Path, proc: subprocess.Popen, log: Path, token: str
    ) -> None:
        self.port, self.manifest, self.proc, self.log = port, manifest, proc, log
        self.url = f"http://127.0.0.1:{port}"
        self.token = token

    def request(self, path: str, data: bytes | None = None, timeout: float = 5) -> dict:
        """A call with the shared secret (the whole /health: deployments and errors)."""
        method = "POST" if data is not None else "GET"
        req = urllib.request.Request(self.url + path, data=data, method=method)
        for name, value in bearer(self.token).items():
            req.add_header(name, value)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def health(self) -> dict:
        return self.request("/health")

    def wait_serving(self, key: str, index_id: int, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        health = {}
        while time.monotonic() < deadline:
            health = self.health()
            live = health["deployments"].get(key)
            if live and live["index_id"] == index_id:
                return health
            time.sleep(0.1)
        raise AssertionError(f"{key} never served index {index_id}: {health}\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_search_process(
    folder: Path, manifest: Path | None = None, env: dict | None = None,
    wrap: list[str] | None = None,
) -> SearchProcess:  # fmt: skip
    # A port free when asked may be taken before the process binds it (by a test running beside
    # this one under pytest-xdist, or any outgoing connection): then it exits, and a new port
    # is tried.
    for _ in range(3):
        sp = _start_on(free_port(), folder, manifest or folder / "deployments.json", env or {},
                       wrap or [])  # fmt: skip
        if sp.proc.poll() is None:
            return sp
        sp.fh.close()
    return sp


def _start_on(port: int, folder: Path, manifest: Path, extra: dict, wrap: list[str]
              ) -> SearchProcess:  # fmt: skip
    log = folder / "search.log"
    env = {
        **os.environ,
        **extra,
        "SEARCH_URL": f"http://127.0.0.1:{port}",
        "SEARCH_MANIFEST": str(manifest),
        "SEARCH_POLL_S": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    fh = open(log, "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [*wrap, sys.executable, "-m", "workers.serving"], cwd=REPO, env=env, stdout=fh, stderr=fh
    )
    token, _ = resolve_token(env)  # what the process resolves from the same environment
    sp = SearchProcess(port, manifest, proc, log, token)
    sp.fh = fh
    for _ in range(200):
        try:
            sp.health()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    return sp


def stop_search_process(sp: SearchProcess) -> None:
    sp.proc.send_signal(signal.SIGTERM)
    try:
        sp.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sp.proc.kill()
    sp.fh.close()


def reset_search_process(sp: SearchProcess) -> None:
    """An empty manifest, loaded: the next test starts with nothing deployed."""
    sp.manifest.write_text(json.dumps({"deployments": {}}))
    sp.request("/reload", b'{"wait": true}', timeout=30)
