"""Starting and stopping a real Celery worker process for tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support import tiers

REPO = Path(__file__).resolve().parents[2]

CELERY = str(Path(sys.executable).with_name("celery"))


def start_worker(
    env: dict, log: Path, name: str = "", wrap: list[str] | None = None
) -> subprocess.Popen:
    """A real Celery worker, started the way the Procfile starts it (all queues, prefetch 1);
    ``name`` sets its node name (two workers of one test on one host); ``wrap`` is a command
    it runs under (``tests.support.hosts.own_folder``: a host of its own)."""
    tiers.require("worker")
    fh = open(log, "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [
            *(wrap or []),
            CELERY,
            "-A",
            "embedhub",
            "worker",
            "-Q",
            "default,ingest,index,gpu",
            "--concurrency",
            "1",
            "--prefetch-multiplier",
            "1",
            "-O",
            "fair",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
            *(["-n", name] if name else []),
        ],
        cwd=REPO,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        # Its own process group, so a test can kill the worker with its pool (kill -9 of a
        # machine) without touching pytest.
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate, *, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
