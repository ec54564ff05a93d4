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

import pytest

from tests.conftest import REPO, TINY_CORPUS, write_beir

# The tiny collection with metadata on every document, for filters.
LANGS = ["en", "en", "de", "en", "fr", "en", "de", "en"]
META_CORPUS = [
    {**row, "metadata": {"lang": LANGS[i], "year": 2000 + i}} for i, row in enumerate(TINY_CORPUS)
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def meta_version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    folder = write_beir(tmp_path / "meta-beir", corpus=META_CORPUS)
    return dataset_import_beir(team=team, name="tiny-meta", path=folder).version


def build_sync(*, team, model, version, index_type: str = "flat", params=None):
    """An index built in this process by the worker's own task code."""
    from apps.indexes.services import index_build_create
    from workers.tasks.indexing import build_index

    build = index_build_create(
        team=team,
        model=model,
        dataset_version=version,
        index_type=index_type,
        params=params or {},
        enqueue=False,
    )
    build_index.run(build.pk)
    build.refresh_from_db()
    assert build.status == "succeeded", build.error
    return build


class SearchProcess:
    def __init__(self, port: int, manifest: Path, proc: subprocess.Popen, log: Path) -> None:
        self.port, self.manifest, self.proc, self.log = port, manifest, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

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


@pytest.fixture(scope="module")
def search_process(tmp_path_factory):
    """One real search process per module (it keeps the tiny encoder warm between tests); each
    test points the web at it and at its manifest with ``serving``."""
    folder = tmp_path_factory.mktemp("search")
    port = free_port()
    manifest = folder / "deployments.json"
    log = folder / "search.log"
    env = {
        **os.environ,
        "SEARCH_URL": f"http://127.0.0.1:{port}",
        "SEARCH_MANIFEST": str(manifest),
        "SEARCH_POLL_S": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    fh = open(log, "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.serving"], cwd=REPO, env=env, stdout=fh, stderr=fh
    )
    sp = SearchProcess(port, manifest, proc, log)
    for _ in range(200):
        try:
            sp.health()
            break
        except OSError:
            time.sleep(0.05)
    yield sp
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    fh.close()


@pytest.fixture
def serving(search_process, settings):
    settings.SEARCH_URL = search_process.url
    settings.SEARCH_MANIFEST = search_process.manifest
    yield search_process
    # The next test starts from an empty manifest (its database is new).
    search_process.manifest.write_text(json.dumps({"deployments": {}}))
    urllib.request.urlopen(
        urllib.request.Request(search_process.url + "/reload", data=b"{}", method="POST"),
        timeout=30,
    ).read()
