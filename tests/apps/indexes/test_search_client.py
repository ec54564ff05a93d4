"""The search process under uvicorn, called through the web's pooled client: kept-alive
connections reused across calls and threads, idle ones closed by the server and replaced
without an error, concurrent queries answered as single ones are."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.apps.indexes.conftest import build_sync
from tests.support.search import start_search_process, stop_search_process

pytestmark = pytest.mark.django_db

QUERIES = ["red planet", "tea", "mars rover", "green tea leaves", "the moon", "planets"]


def _deploy(*, team, name, build, capture):
    from apps.indexes.services import deployment_deploy

    with capture(execute=True):
        return deployment_deploy(team=team, name=name, index=build, user=None)


def _connections(client) -> list:
    """The local address of the connection each response came on, recorded from now on."""
    seen: list = []
    client.event_hooks["response"] = [
        lambda r: seen.append(r.extensions["network_stream"].get_extra_info("client_addr"))
    ]
    return seen


def _assert_same_hits(found: dict, expected: dict) -> None:
    """Same queries, same hits in the same order; scores equal up to float noise (a query
    encoded in a padded batch differs from one encoded alone in the 6th decimal)."""
    assert [r["query"] for r in found["results"]] == [r["query"] for r in expected["results"]]
    for got, want in zip(found["results"], expected["results"], strict=True):
        assert [h["id"] for h in got["hits"]] == [h["id"] for h in want["hits"]]
        assert [h["score"] for h in got["hits"]] == pytest.approx(
            [h["score"] for h in want["hits"]], abs=1e-4
        )


def test_searches_reuse_pooled_connections_under_uvicorn(team, tiny_registered_model,
                                                         tiny_version, serving,
                                                         django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    from apps.indexes.selectors import deployment_query, search_client, search_health

    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="pooled", build=build, capture=django_capture_on_commit_callbacks)
    serving.wait_serving(d.serving_key, build.pk)
    assert "Uvicorn running on" in serving.log.read_text(errors="replace")
    assert search_health()["up"]

    client = search_client()
    assert search_client() is client  # one client per process and search URL
    seen = _connections(client)
    try:
        single = {q: deployment_query(team=d.team, name=d.name, queries=[q], k=3) for q in QUERIES}
        assert len(seen) == len(QUERIES) and len(set(seen)) == 1  # one kept-alive connection

        with ThreadPoolExecutor(16) as pool:
            one = {"team": d.team, "name": d.name, "k": 3}
            answers = list(pool.map(lambda q: deployment_query(queries=[q], **one), QUERIES * 8))
        for q, found in zip(QUERIES * 8, answers, strict=True):
            _assert_same_hits(found, single[q])  # batched with others, same hits
        assert 1 <= len(set(seen)) <= 16  # the pool's connections, not one per query
        before = set(seen)
        seen.clear()
        deployment_query(team=d.team, name=d.name, queries=["tea"], k=3)
        assert set(seen) <= before  # an idle pooled connection was reused
    finally:
        client.event_hooks["response"] = []


def test_an_idle_connection_the_server_closed_is_replaced(team, tiny_registered_model,
                                                          tiny_version, settings, tmp_path,
                                                          monkeypatch,
                                                          django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    """The server drops a connection idle past SEARCH_KEEPALIVE_S; the next call from the pool
    goes out on a new one, with no error."""
    from apps.indexes.selectors import deployment_query, search_client

    monkeypatch.setenv("SEARCH_KEEPALIVE_S", "1")
    sp = start_search_process(tmp_path)
    try:
        settings.SEARCH_URL, settings.SEARCH_MANIFEST = sp.url, sp.manifest
        build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
        d = _deploy(team=team, name="idle", build=build,
                    capture=django_capture_on_commit_callbacks)  # fmt: skip
        sp.wait_serving(d.serving_key, build.pk)
        seen = _connections(search_client())
        first = deployment_query(team=d.team, name=d.name, queries=["tea"], k=2)
        time.sleep(2.5)  # the server closes the idle connection after 1 s
        again = deployment_query(team=d.team, name=d.name, queries=["tea"], k=2)
        assert again["results"] == first["results"]
        assert len(seen) == 2 and seen[0] != seen[1]
    finally:
        stop_search_process(sp)
