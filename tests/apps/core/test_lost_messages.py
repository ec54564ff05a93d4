"""No job is lost: a pending row whose broker message vanished is sent again by the reaper.

The failure this proves fixed: stop the worker, start jobs, restart Redis without persistence,
start the worker: the rows stayed pending for ever (the reaper only looked at running rows).
The test runs its own Redis server without persistence so that it can restart it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.models import JobStatus
from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create
from tests.support.worker import start_worker, stop_worker, wait_for
from workers.tasks.runtime import jobs_resend_lost

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A private redis-server without persistence: a restart forgets every queued message."""

    def __init__(self, folder) -> None:
        self.port, self.folder, self.proc = _free_port(), folder, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._ping, timeout=10, what="redis to start")

    def _ping(self) -> bool:
        with socket.socket() as s:
            try:
                s.connect(("127.0.0.1", self.port))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def celery_broker(url: str):
    """Point this process's Celery app at ``url`` (its pools are dropped on both ends)."""
    from celery import current_app as app

    def drop_pools() -> None:
        if app._pool is not None:
            app._pool.force_close_all()
            app._pool = None
        app.amqp._producer_pool = None

    old = app.conf.broker_url
    drop_pools()
    app.conf.broker_url = url
    try:
        yield
    finally:
        drop_pools()
        app.conf.broker_url = old


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def _age(*rows, seconds: int = 600) -> None:
    Evaluation.objects.filter(pk__in=[r.pk for r in rows]).update(
        queued_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_jobs_queued_before_a_redis_restart_all_end(
    redis_server, team, tiny_version, settings, tmp_path
):
    from django.db import connection

    with celery_broker(redis_server.url):
        jobs = [
            evaluation_create(
                team=team, model=None, method="bm25", dataset_version=tiny_version, split=split
            )  # fmt: skip
            for split in ("test", "train", "test")
        ]
        assert all(j.celery_task_name == "workers.tasks.evaluation.evaluate" for j in jobs)
        _age(*jobs)
        # The messages are still in Redis: nothing is sent twice.
        assert jobs_resend_lost(after=0) == 0

        redis_server.stop()  # no persistence: the three messages are gone
        redis_server.start()

        db = connection.settings_dict
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "ARTIFACTS_ROOT": str(settings.ARTIFACTS_ROOT),
            "JOB_PROGRESS_INTERVAL": "0.2",
            "CONN_MAX_AGE": "0",
        }
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        try:
            time.sleep(3)
            statuses = set(Evaluation.objects.values_list("status", flat=True))
            assert statuses == {JobStatus.PENDING}, "a lost message must leave the row pending"
            # Younger than the setting: left alone (its message may just be slow).
            assert jobs_resend_lost(after=3600) == 0
            assert jobs_resend_lost(after=0) == 3
            wait_for(
                lambda: not Evaluation.objects.exclude(status=JobStatus.SUCCEEDED).exists(),
                timeout=120, what="every job to end", log=log,
            )  # fmt: skip
        finally:
            stop_worker(worker)
    assert all(e.metrics.get("ndcg@10") is not None for e in Evaluation.objects.all())
    # Ended rows are never sent again.
    assert jobs_resend_lost(after=0) == 0


def test_the_embedded_broker_is_looked_into_too(team, tiny_version, settings, tmp_path):
    """On the on-disk transport a message file still there is not sent twice; a deleted one
    is."""
    from pathlib import Path

    folder = tmp_path / "broker"
    for sub in ("out", "processed", "control"):
        (folder / sub).mkdir(parents=True)
    from celery import current_app as app

    old = dict(app.conf.broker_transport_options)
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder / "out"),
        "data_folder_out": str(folder / "out"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
    try:
        with celery_broker("filesystem://"):
            job = evaluation_create(team=team, model=None, method="bm25",
                                    dataset_version=tiny_version, split="test")  # fmt: skip
            _age(job)
            assert len(list(Path(folder / "out").glob("*.msg"))) == 1
            assert jobs_resend_lost(after=0) == 0
            for f in Path(folder / "out").glob("*.msg"):
                f.unlink()
            assert jobs_resend_lost(after=0) == 1
            files = list(Path(folder / "out").glob("*.msg"))
            assert len(files) == 1
            job.refresh_from_db()
            assert job.celery_task_id.encode() in files[0].read_bytes()
    finally:
        app.conf.broker_transport_options = old
