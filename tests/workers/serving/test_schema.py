"""One schema for a search request, enforced on both sides: the search process refuses what
the web refuses, at the same limit and with the same message, and the web never sends it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.search import start_search_process, stop_search_process
from workers.serving import schema
from workers.serving.auth import bearer
from workers.serving.schema import (
    MAX_FILTER_FIELDS,
    MAX_K,
    MAX_QUERIES,
    SearchRequestError,
    parse_search_request,
    search_request,
)


@pytest.fixture(scope="module")
def process(tmp_path_factory):
    sp = start_search_process(tmp_path_factory.mktemp("schema"))
    yield sp
    stop_search_process(sp)


def post_search(sp, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(sp.url + "/search", data=json.dumps(body).encode(), method="POST")
    for name, value in bearer(sp.token).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def refusal(**fields) -> str | None:
    body = {"deployment": "nowhere", "queries": ["a"], **fields}
    try:
        parse_search_request(body)
    except SearchRequestError as exc:
        return str(exc)
    return None


# (fields at the limit, fields one past it, the message): the limits the schema holds.
LIMITS = [
    ({"queries": ["q"] * MAX_QUERIES}, {"queries": ["q"] * (MAX_QUERIES + 1)},
     f"queries: at most {MAX_QUERIES} per request"),
    ({"k": MAX_K}, {"k": MAX_K + 1}, f"k: an integer from 1 to {MAX_K}"),
    ({"k": 1}, {"k": 0}, f"k: an integer from 1 to {MAX_K}"),
    ({"filters": {f"f{i}": "x" for i in range(MAX_FILTER_FIELDS)}},
     {"filters": {f"f{i}": "x" for i in range(MAX_FILTER_FIELDS + 1)}},
     schema.MESSAGES["filters"]),
]  # fmt: skip


@pytest.mark.parametrize(("within", "beyond", "message"), LIMITS)
def test_the_search_process_enforces_the_schemas_limits(process, within, beyond, message):
    base = {"deployment": "nowhere", "queries": ["a"]}
    # At the limit the request is valid: it gets as far as the lookup (nothing is deployed).
    status, body = post_search(process, {**base, **within})
    assert status == 404 and "not served here" in body["error"]
    status, body = post_search(process, {**base, **beyond})
    assert (status, body) == (400, {"error": message})
    assert refusal(**beyond) == message and refusal(**within) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"queries": []},
        {"queries": ["fine", "  "]},
        {"queries": "not a list"},
        {"queries": [3]},
        {"k": True},
        {"k": "10"},
        {"filters": "lang=en"},
        {"filters": {"lang": ["en", "de"]}},
        {"filters": {"lang": None}},
    ],
)
def test_malformed_requests_get_the_same_message_from_both_sides(process, fields):
    message = refusal(**fields)
    assert message is not None
    status, body = post_search(process, {"deployment": "nowhere", "queries": ["a"], **fields})
    assert (status, body) == (400, {"error": message})


def test_filter_values_keep_their_json_types():
    request = search_request(
        deployment="d", queries=["q"], filters={"a": True, "b": 2020, "c": "2020", "d": 0.5}
    )
    assert request.filters == {"a": True, "b": 2020, "c": "2020", "d": 0.5}
    assert [type(v) for v in request.filters.values()] == [bool, int, str, float]
    assert search_request(deployment="d", queries=["q"], filters={}).filters is None


@pytest.mark.django_db
def test_the_web_refuses_before_sending(team, settings, monkeypatch, tiny_registered_model,
                                        tiny_version):  # fmt: skip
    """The web checks with the same schema: past a limit it answers 400 with the search
    process's message and calls nothing; at the limit it calls."""
    from apps.indexes import selectors
    from apps.indexes.models import Deployment, IndexBuild

    calls = []

    def fake_call(method, path, body=None, *, timeout=10.0):
        calls.append(body)
        return 404, {"error": "not served"}

    monkeypatch.setattr(selectors, "search_call", fake_call)
    build = IndexBuild.objects.create(team=team, model=tiny_registered_model,
                                     dataset_version=tiny_version)  # fmt: skip
    deployment = Deployment.objects.create(team=team, name="prod", index=build)
    where = {"team": deployment.team, "name": deployment.name}
    for within, beyond, message in LIMITS:
        with pytest.raises(selectors.SearchFailed) as failed:
            selectors.deployment_query(**where, **{"queries": ["a"], **beyond})
        assert (failed.value.status, str(failed.value)) == (400, message)
        assert calls == []
        with pytest.raises(selectors.SearchFailed) as failed:
            selectors.deployment_query(**where, **{"queries": ["a"], **within})
        assert failed.value.status == 503 and "not loaded" in str(failed.value)
        sent = calls.pop()
        assert parse_search_request(sent).deployment == deployment.serving_key


@pytest.mark.django_db
def test_the_api_takes_its_bounds_from_the_schema(client, team, owner):
    from django.urls import reverse

    from apps.accounts.services import api_token_create

    token = api_token_create(user=owner, team=team, name="t")[1]
    spec = client.get("/api/openapi.json").json()["components"]["schemas"]["SearchIn"]
    assert spec["properties"]["k"]["maximum"] == MAX_K
    url = reverse("api:search", kwargs={"name": "missing"})
    r = client.post(url, {"query": "x", "k": MAX_K + 1}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.status_code == 422
