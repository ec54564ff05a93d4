"""Three hosts that share only PostgreSQL, Redis and a bucket (a local S3-compatible server):
an index worker, an evaluation worker and a search replica, each with an artifacts folder of
its own (an empty disk mounted at the same path, as a container's volume). What one host makes,
the others fetch from the bucket; the results equal the local-disk run's."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.hosts import own_folder, require_namespaces

pytestmark = pytest.mark.worker

QUERY = "red planet mars"


def _wait(check, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _worker_env(settings, s3: dict) -> dict:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql" or not os.environ.get("REDIS_URL"):
        pytest.fail("run with ./bin/test: hosts share PostgreSQL and Redis")
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    return {
        **os.environ,
        **s3,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "JOB_PROGRESS_INTERVAL": "0.2",
        "CONN_MAX_AGE": "0",
        "HF_HUB_OFFLINE": "1",
    }


def _local_reference(*, team, model_path: Path, version, tmp_path, settings, monkeypatch):
    """The same model's index and evaluation on local disk alone (no bucket), in process."""
    from apps.registry.services import embedding_model_register
    from apps.runs.services import evaluation_create
    from tests.apps.indexes.conftest import build_sync
    from workers.common import store as store_module
    from workers.ml.indexing import LoadedIndex
    from workers.tasks.evaluation import evaluate

    with monkeypatch.context() as local:
        for name in ("ARTIFACTS_ROOT", "ARTIFACTS_CACHE", "ARTIFACTS_S3_ENDPOINT"):
            local.delenv(name, raising=False)
        local.setattr(settings, "ARTIFACTS_ROOT", tmp_path / "local-disk")
        store_module._store.cache_clear()
        model = embedding_model_register(team=team, name="local", path=str(model_path))
        build = build_sync(team=team, model=model, version=version)
        evaluation = evaluation_create(team=team, model=model, dataset_version=version,
                                       split="test", enqueue=False)  # fmt: skip
        evaluate.run(evaluation.pk)
        evaluation.refresh_from_db()
        index = LoadedIndex.load(Path(build.path))
    store_module._store.cache_clear()
    return build, evaluation, index


def test_hosts_sharing_only_the_bucket_build_evaluate_and_serve_as_local_disk_does(
    transactional_db, team, member, tiny_model_path, tiny_version, s3_env, settings, tmp_path,
    monkeypatch,
):  # fmt: skip
    require_namespaces()
    from apps.indexes.models import IndexBuild
    from apps.indexes.selectors import deployment_query
    from apps.indexes.services import deployment_deploy, index_build_create
    from apps.registry.services import embedding_model_register
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from tests.support.search import start_search_process, stop_search_process
    from tests.support.worker import start_worker, stop_worker
    from workers.common.store import store
    from workers.ml.encode import load_encoder

    root = Path(settings.ARTIFACTS_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    # A fine-tune's folder under the artifacts folder: registering it uploads it.
    model_path = root / "models" / "tiny"
    shutil.copytree(tiny_model_path, model_path)
    local_build, local_eval, local_index = _local_reference(
        team=team, model_path=tiny_model_path, version=tiny_version, tmp_path=tmp_path,
        settings=settings, monkeypatch=monkeypatch,
    )  # fmt: skip
    model = embedding_model_register(team=team, name="tiny-in-bucket", path=str(model_path))
    bucket = store()
    assert bucket is not None and bucket.manifest("models/tiny") is not None
    env = _worker_env(settings, s3_env)

    # Host A builds the index: the model comes from the bucket, the index goes to it.
    log_a = tmp_path / "host-a.log"
    host_a = start_worker(env, log_a, name="a@host-a", wrap=own_folder(tmp_path / "disk-a", root))
    try:
        build = index_build_create(team=team, model=model, dataset_version=tiny_version,
                                   index_type="flat", params={})  # fmt: skip
        build = _wait(lambda: IndexBuild.objects.filter(pk=build.pk, status__in=["succeeded",
                      "failed"]).first(), 120, "the index build on host A", log_a)  # fmt: skip
    finally:
        stop_worker(host_a)
    assert build.status == "succeeded", (build.error, log_a.read_text()[-3000:])
    key = Path(build.path).relative_to(root).as_posix()
    assert bucket.manifest(key) is not None
    assert (tmp_path / "disk-a" / key / "index.faiss").is_file()  # host A's own disk
    assert not Path(build.path).exists()  # not on this host's: only in the bucket
    assert build.metrics["recall_at_10"] == local_build.metrics["recall_at_10"]

    # Host B evaluates the same model on the same data: the documents' vectors are a cache hit,
    # host A's entry fetched from the bucket.
    log_b = tmp_path / "host-b.log"
    host_b = start_worker(env, log_b, name="b@host-b", wrap=own_folder(tmp_path / "disk-b", root))
    try:
        evaluation = evaluation_create(team=team, model=model, dataset_version=tiny_version,
                                       split="test")  # fmt: skip
        evaluation = _wait(lambda: Evaluation.objects.filter(pk=evaluation.pk, status__in=[
            "succeeded", "failed"]).first(), 120, "the evaluation on host B", log_b)  # fmt: skip
    finally:
        stop_worker(host_b)
    assert evaluation.status == "succeeded", (evaluation.error, log_b.read_text()[-3000:])
    assert evaluation.cache_hit
    assert evaluation.metrics == pytest.approx(local_eval.metrics, abs=1e-9)
    assert not (tmp_path / "disk-b" / key).exists()  # an evaluation needs no index

    # Host C serves: it follows the bucket's manifest and fetches the index and the model.
    (tmp_path / "search").mkdir()
    search = start_search_process(
        tmp_path / "search", env=s3_env,
        wrap=own_folder(tmp_path / "disk-c", root),
    )  # fmt: skip
    try:
        settings.SEARCH_URL = search.url
        deployment = deployment_deploy(team=team, name="shared", index=build)
        from apps.indexes.services import deployments_publish

        deployments_publish(notify=False)  # the commit hook's publish, in this transaction
        _wait(lambda: (search.health()["deployments"].get(deployment.serving_key) or {}).get(
            "index_id") == build.pk, 120, "host C serving the index", search.log)  # fmt: skip
        found = deployment_query(team=team, name="shared", queries=[QUERY], k=5)
    finally:
        stop_search_process(search)
    assert (tmp_path / "disk-c" / key / "index.faiss").is_file()
    encoder = load_encoder(path=str(tiny_model_path), layout=model.layout,
                           pooling=model.pooling, normalize=model.normalize,
                           max_seq_length=model.max_seq_length)  # fmt: skip
    vector = np.asarray(encoder.encode([QUERY], normalize_embeddings=model.normalize))
    scores, ids = local_index.search(vector, 5)
    assert [h["id"] for h in found["results"][0]["hits"]] == ids[0]
    assert [h["score"] for h in found["results"][0]["hits"]] == pytest.approx(
        [float(s) for s in scores[0]], abs=1e-5
    )
