"""A deploy answers without waiting on the search process (issue 14): the manifest is written
before the page answers, and the process is told from another thread, so one that is busy
(loading a large index or a model) or unreachable never holds the request."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from django.urls import reverse

from tests.apps.indexes.conftest import build_sync


def test_deploy_writes_the_manifest_and_tells_the_search_process_from_a_thread(
    client, member, team, tiny_registered_model, tiny_version, settings, monkeypatch,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    request_thread = threading.current_thread()
    release, called, calls = threading.Event(), threading.Event(), []

    def busy_search_process(method, path, body=None, *, timeout=10.0):
        calls.append((method, path, body, threading.current_thread() is request_thread))
        called.set()
        release.wait(20)  # answers only when the test lets it
        return {"reloading": True}

    monkeypatch.setattr("apps.indexes.selectors.search_call", busy_search_process)
    client.force_login(member)
    try:
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("indexes:deploy", args=[build.pk]), {"name": "prod"})
        took = time.monotonic() - started
        assert response.status_code == 302
        assert response.url == reverse("indexes:deployment", args=["prod"])
        # On disk when the page answers: the process's own poll would find it.
        manifest = json.loads(Path(settings.SEARCH_MANIFEST).read_text())["deployments"]
        assert [(d["name"], d["index_id"]) for d in manifest.values()] == [("prod", build.pk)]
        assert called.wait(10), "the search process was never told"
        # The call is still blocked, in another thread: the request did not wait for it.
        assert not release.is_set()
        assert calls == [("POST", "/reload", {"wait": False}, False)]
        assert took < 10
    finally:
        release.set()
