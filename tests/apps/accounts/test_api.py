"""The REST API as a whole (``embedhub.api``): schema, docs, token auth, per-token rate limit,
team scoping and roles on every object, and the one error shape."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client

from apps.accounts.services import api_token_create
from apps.runs.models import TrainingRun
from apps.runs.services import evaluation_create

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
PATHS = {
    "/api/v1/datasets": {"get"},
    "/api/v1/datasets/uploads": {"post"},
    "/api/v1/datasets/{pk}": {"get", "delete"},
    "/api/v1/dataset-versions/{pk}": {"get"},
    "/api/v1/ingests/{pk}": {"get"},
    "/api/v1/ingests/{pk}/start": {"post"},
    "/api/v1/curation-jobs": {"get", "post"},
    "/api/v1/curation-jobs/{pk}": {"get"},
    "/api/v1/curation-jobs/{pk}/accept": {"post"},
    "/api/v1/curation-jobs/{pk}/discard": {"post"},
    "/api/v1/models": {"get"},
    "/api/v1/models/{pk}": {"get", "delete"},
    "/api/v1/evaluations": {"get", "post"},
    "/api/v1/evaluations/{pk}": {"get", "delete"},
    "/api/v1/compare": {"get"},
    "/api/v1/training-runs": {"get", "post"},
    "/api/v1/training-runs/{pk}": {"get", "delete"},
    "/api/v1/training-runs/{pk}/cancel": {"post"},
    "/api/v1/indexes": {"get", "post"},
    "/api/v1/indexes/{pk}": {"get"},
    "/api/v1/deployments": {"get", "post"},
    "/api/v1/deployments/{name}": {"get", "delete"},
    "/api/v1/deployments/{name}/search": {"post"},
}


@pytest.fixture
def api():
    # Real CSRF checks, as for a program posting without a session: the API must not need them.
    return Client(enforce_csrf_checks=True)


def bearer(team, user) -> dict:
    _, raw = api_token_create(team=team, user=user, name="ci")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def objects(team, member, tiny_registered_model, tiny_version):
    evaluation = evaluation_create(
        team=team,
        model=tiny_registered_model,
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )
    run = TrainingRun.objects.create(
        team=team, name="r", base_model=tiny_registered_model, train_version=tiny_version
    )
    return {
        "datasets": tiny_version.dataset_id,
        "dataset-versions": tiny_version.pk,
        "models": tiny_registered_model.pk,
        "evaluations": evaluation.pk,
        "training-runs": run.pk,
    }


def test_the_schema_lists_every_operation_with_bearer_auth(api):
    response = api.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "EmbedHub API"
    assert {path: set(ops) for path, ops in schema["paths"].items() if path in PATHS} == PATHS
    assert schema["components"]["securitySchemes"]["TokenAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    detail = schema["paths"]["/api/v1/models/{pk}"]["get"]
    assert detail["security"] == [{"TokenAuth": []}]
    assert detail["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
    model = schema["components"]["schemas"]["ModelOut"]["properties"]
    assert {"parent", "dimension", "pooling", "query_prefix", "max_seq_length"} <= set(model)
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and "datasets_upload" in ids


def test_the_docs_load_only_local_files(api):
    response = api.get("/api/docs")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
    assert urls and all(u.startswith("/static/") for u in urls), urls
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert '"url": "/api/openapi.json"' in page
    for url in urls:  # and the files are really there, without collectstatic
        assert api.get(url).status_code == 200, url


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_AUTHORIZATION": "Bearer ehk_wrong"}, {"HTTP_AUTHORIZATION": "Token x"}],
)
def test_no_valid_token_is_a_401_on_every_operation(api, headers):
    for path, methods in PATHS.items():
        url = path.replace("{pk}", "1").replace("{name}", "x")
        for method in methods:
            response = getattr(api, method)(url, **headers)
            assert response.status_code == 401, (method, url)
            assert response["WWW-Authenticate"] == "Bearer"
            assert response.json() == {"error": "a valid API token is required", "problems": []}


def test_a_session_is_not_a_token(api, owner, objects):
    # The cookie never authenticates the API: that is why the API needs no CSRF token.
    api.force_login(owner)
    assert api.get(f"{V1}/datasets").status_code == 401
    assert api.post(f"{V1}/training-runs/{objects['training-runs']}/cancel").status_code == 401


def test_a_token_reads_its_team_and_nothing_else(api, team, owner, other_team, outsider, objects):
    mine, theirs = bearer(team, owner), bearer(other_team, outsider)
    for kind, pk in objects.items():
        url = f"{V1}/{kind}/{pk}"
        assert api.get(url, **mine).json()["id"] == pk
        response = api.get(url, **theirs)
        assert (response.status_code, response.json()) == (
            404,
            {"error": "not found", "problems": []},
        ), url
    for kind in ("datasets", "models", "evaluations"):
        assert [o["id"] for o in api.get(f"{V1}/{kind}", **mine).json()[kind]] == [objects[kind]]
        assert api.get(f"{V1}/{kind}", **theirs).json() == {kind: []}
    assert api.get(f"{V1}/training-runs", **theirs).json() == {"training_runs": []}
    compare = f"{V1}/compare?e={objects['evaluations']}&e={objects['evaluations']}"
    assert api.get(compare, **theirs).status_code == 404


def test_a_viewer_reads_but_never_writes(api, team, viewer, objects):
    auth = bearer(team, viewer)
    for kind, pk in objects.items():
        assert api.get(f"{V1}/{kind}/{pk}", **auth).status_code == 200
    run = objects["training-runs"]
    writes = [
        (f"{V1}/evaluations", {"dataset_version": objects["dataset-versions"], "model": 1}),
        (f"{V1}/training-runs", {"base_model": objects["models"], "train_version": 1}),
        (f"{V1}/training-runs/{run}/cancel", None),
    ]
    for url, body in writes:
        response = api.post(url, body, content_type="application/json", **auth)
        assert response.status_code == 403, url
        assert response.json()["error"] == "this needs the member role in Acme Search"
    upload = api.post(f"{V1}/datasets/uploads", {"name": "x"}, **auth)
    assert upload.status_code == 403
    assert TrainingRun.objects.get().status == "pending"


def test_invalid_input_names_the_field_and_the_reason(api, team, member, objects):
    auth = {**bearer(team, member), "content_type": "application/json"}
    missing = api.post(f"{V1}/evaluations", {"split": "test"}, **auth)
    assert missing.status_code == 422
    assert missing.json() == {
        "error": "invalid request: body.dataset_version: Field required",
        "problems": ["body.dataset_version: Field required"],
    }
    method = api.post(f"{V1}/evaluations", {"dataset_version": 1, "method": "nope"}, **auth)
    assert method.status_code == 422
    assert method.json()["problems"][0].startswith(
        "body.method: Input should be 'dense', 'bm25', 'hybrid', 'rerank' or 'sparse'"
    )
    listed = api.get(f"{V1}/evaluations?dataset_version=latest", **auth)
    assert listed.status_code == 422
    assert listed.json()["problems"][0].startswith("query.dataset_version: Input should be")
    not_object = api.post(f"{V1}/training-runs", [1, 2], **auth)
    assert not_object.status_code == 422 and not_object.json()["problems"]
    broken = api.post(f"{V1}/training-runs", "{oops", **auth)
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("request body: line 1: Expecting property name")
    assert api.get(f"{V1}/nothing-here", **auth).status_code == 404


@pytest.fixture
def private_cache(settings):
    # Counts in a cache of this test alone: no history from other tests or earlier runs.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "test-api-rate-limit",
        }
    }


def test_the_rate_limit_counts_per_token(api, team, member, owner, settings, private_cache):
    settings.API_RATE_LIMIT = "3/m"
    first, second = bearer(team, member), bearer(team, member)  # one user, two tokens
    for _ in range(3):
        assert api.get(f"{V1}/datasets", **first).status_code == 200
    over = api.get(f"{V1}/datasets", **first)
    assert over.status_code == 429
    assert 0 < int(over["Retry-After"]) <= 60
    assert over.json() == {
        "error": "too many requests: this token is limited to 3/m",
        "problems": [],
    }
    assert api.get(f"{V1}/datasets", **second).status_code == 200
    assert api.get(f"{V1}/models", **bearer(team, owner)).status_code == 200
    assert api.get(f"{V1}/models", **first).status_code == 429  # every operation counts

    settings.API_RATE_LIMIT = ""  # off
    assert api.get(f"{V1}/datasets", **first).status_code == 200


def test_the_wait_is_until_the_window_ends(api, team, member, settings, private_cache, monkeypatch):
    from apps.accounts.api import TokenRateThrottle

    settings.API_RATE_LIMIT = "2/m"  # windows of 60 s: [960, 1020), [1020, 1080)
    clock = iter([1000.0, 1010.0, 1015.0, 1021.0, 1022.0, 1023.0])
    monkeypatch.setattr(TokenRateThrottle, "timer", lambda self: next(clock))
    auth = bearer(team, member)
    assert [api.get(f"{V1}/datasets", **auth).status_code for _ in range(2)] == [200, 200]
    refused = api.get(f"{V1}/datasets", **auth)
    assert (refused.status_code, refused["Retry-After"]) == (429, "5")  # 1020 - 1015
    assert api.get(f"{V1}/datasets", **auth).status_code == 200  # 1021: a new window
    assert api.get(f"{V1}/datasets", **auth).status_code == 200
    assert api.get(f"{V1}/datasets", **auth).status_code == 429


def test_a_checked_token_is_trusted_for_a_few_seconds_then_checked_again(
    api, team, member, settings, monkeypatch
):
    import apps.accounts.api as api_module
    from apps.accounts.models import ApiToken

    settings.API_TOKEN_CACHE_S = 5
    clock = [1000.0]
    monkeypatch.setattr(api_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(api_module.token_auth, "_seen", {})
    auth = bearer(team, member)
    assert api.get(f"{V1}/datasets", **auth).status_code == 200
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    clock[0] += 4  # within the window: no database lookup, still accepted
    assert api.get(f"{V1}/datasets", **auth).status_code == 200
    clock[0] += 2  # past it: checked again, and refused
    assert api.get(f"{V1}/datasets", **auth).status_code == 401
    assert api.get(f"{V1}/datasets", **auth).status_code == 401  # a refusal is not cached


def test_the_rate_limit_on_redis_counts_in_one_window(api, team, member, settings):
    """The Redis path (one INCR + EXPIRE pipeline per request), against the real Redis."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    if not isinstance(caches["default"], RedisCache):
        pytest.fail("REDIS_URL is not set: run the suite with ./bin/test (real Redis needed)")
    # Counts of this test alone: token ids repeat per test database, so an earlier run's counts
    # would be this token's. A fresh key prefix rather than a flush of the whole Redis database,
    # which would wipe what tests running beside this one (pytest-xdist) have counted.
    default = settings.CACHES["default"]
    settings.CACHES = {"default": {**default, "KEY_PREFIX": f"rate-test-{uuid.uuid4().hex}"}}
    settings.API_RATE_LIMIT = "3/h"  # one window for the whole test
    auth = bearer(team, member)
    assert [api.get(f"{V1}/datasets", **auth).status_code for _ in range(4)] == [200] * 3 + [429]
    assert api.get(f"{V1}/datasets", **bearer(team, member)).status_code == 200
