"""A local S3-compatible server for the object-storage tests: moto's S3 behind its threaded
HTTP server on 127.0.0.1 (no network). Processes the tests start reach it by its URL."""

from __future__ import annotations

import uuid

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "embedhub-test",
    "AWS_SECRET_ACCESS_KEY": "embedhub-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path, settings):
    """ARTIFACTS_ROOT in a fresh bucket of the local server; this process's local folder is the
    tests' ARTIFACTS_ROOT. Returns the environment a second process needs."""
    import boto3

    from workers.common import store as store_module

    bucket = f"embedhub-{uuid.uuid4().hex[:12]}"
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    env = {
        **CREDENTIALS,
        "ARTIFACTS_ROOT": f"s3://{bucket}/team-artifacts",
        "ARTIFACTS_CACHE": str(settings.ARTIFACTS_ROOT),
        "ARTIFACTS_S3_ENDPOINT": s3_server,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store_module._store.cache_clear()
    yield env
    store_module._store.cache_clear()
