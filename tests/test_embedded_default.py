"""The newcomer's configuration: no DATABASE_URL, no REDIS_URL. SQLite and the on-disk broker
under var/, a real worker, and a job through the command line."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import REPO, write_beir
from tests.support.worker import start_worker, stop_worker

pytestmark = pytest.mark.worker


def test_embedded_default_runs_a_job_through_the_on_disk_broker(tmp_path, tiny_model_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        ARTIFACTS_ROOT=str(tmp_path / "var" / "artifacts"),
        DJANGO_SETTINGS_MODULE="embedhub.settings",
    )

    def manage(*args):
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None

    manage("migrate", "--noinput", "-v", "0")
    manage("team_create", "Acme", "--slug", "acme")
    model = manage("register_model", str(tiny_model_path), "--team", "acme", "--name", "tiny")
    data = manage(
        "import_dataset", str(write_beir(tmp_path / "beir")), "--team", "acme", "--name", "tiny"
    )
    assert (tmp_path / "var" / "embedhub.sqlite3").exists()

    worker = start_worker(env, tmp_path / "worker.log")
    try:
        result = manage(
            "evaluate",
            "--model",
            str(model["model"]),
            "--dataset-version",
            str(data["version"]),
            "--split",
            "test",
            "--timeout",
            "240",
        )
        # The worker says it is up, and which queues it consumes (the wait message reads it).
        with sqlite3.connect(tmp_path / "var" / "embedhub.sqlite3") as db:
            present = db.execute("SELECT hostname, queues FROM core_workerpresence").fetchall()
    finally:
        stop_worker(worker)
    log = (tmp_path / "worker.log").read_text()
    assert result["status"] == "succeeded", log[-3000:]
    assert len(present) == 1 and set(json.loads(present[0][1])) == {
        "default", "ingest", "index", "gpu"
    }  # fmt: skip
    with sqlite3.connect(tmp_path / "var" / "embedhub.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM core_workerpresence").fetchone() == (0,)
    assert "filesystem" in log  # the worker really used the on-disk transport
    assert "workers.tasks.evaluation.evaluate" in log and "succeeded" in log
    assert set(result["metrics"]) >= {"ndcg@10", "mrr@10", "recall@100"}
