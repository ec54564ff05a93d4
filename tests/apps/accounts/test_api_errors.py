"""The API never answers HTML and never a bare 500 (``ApiErrorMiddleware`` and the API's
exception handlers), and with Redis unreachable it stays up for reads and answers a JSON 503
for writes, while the pages keep working."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.services import api_token_create
from apps.accounts.throttling import UNAVAILABLE
from apps.runs.models import TrainingRun

pytestmark = pytest.mark.django_db

V1 = "/api/v1"


@pytest.fixture
def api():
    return Client(enforce_csrf_checks=True, raise_request_exception=False)


def bearer(team, user) -> dict:
    _, raw = api_token_create(team=team, user=user, name="ci")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "problems"} and isinstance(body["problems"], list)
    return body


# --- A. JSON errors ---------------------------------------------------------------------------


def test_an_unexpected_exception_is_a_json_500_without_a_path(
    api, team, member, monkeypatch, caplog
):
    import apps.registry.api

    def broken(team):
        raise FileNotFoundError(
            "[Errno 2] No such file or directory: '/srv/embedhub/var/artifacts/models/7/w.bin'"
            "\nsecond line"
        )

    monkeypatch.setattr(apps.registry.api, "_models", broken)
    with caplog.at_level(logging.ERROR):
        response = api.get(f"{V1}/models", **bearer(team, member))
    body = assert_error(response, 500)
    assert body["error"] == (
        "internal error: FileNotFoundError: [Errno 2] No such file or directory: '<path>'"
    )
    assert "/srv" not in response.content.decode() and "second line" not in body["error"]
    # The whole story is in the log, for whoever runs the server.
    logged = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert logged and "/srv/embedhub/var/artifacts" in str(logged[0].exc_info[1])


def test_a_failure_before_the_view_is_a_json_500_too(api, team, member, monkeypatch):
    # The token check runs outside ninja's exception handlers: the middleware answers.
    import apps.accounts.api

    def broken(*, raw):
        raise RuntimeError("database on fire at C:\\srv\\db\\x.sqlite3")

    monkeypatch.setattr(apps.accounts.api, "api_token_authenticate", broken)
    body = assert_error(api.get(f"{V1}/datasets", HTTP_AUTHORIZATION="Bearer ehk_x"), 500)
    assert body["error"] == "internal error: RuntimeError: database on fire at <path>"


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_url_under_api_is_a_json_404(api, team, member, settings, debug):
    settings.DEBUG = debug  # no technical 404 page either
    auth = bearer(team, member)
    for url in ("/api/nothing", f"{V1}/nothing-here", f"{V1}/datasets/abc", "/api/v2/models"):
        assert assert_error(api.get(url, **auth), 404) == {"error": "not found", "problems": []}
    assert assert_error(api.get("/api/nothing"), 404)["error"] == "not found"  # no token


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(api, team, member):
    auth = bearer(team, member)
    response = api.get(f"{V1}/datasets/uploads", **auth)
    body = assert_error(response, 405)
    assert response["Allow"] == "POST"
    assert body["error"] == "method not allowed; this URL allows POST"
    assert assert_error(api.delete(f"{V1}/models"), 405)["error"].endswith("allows GET")


def test_a_uri_too_long_is_a_json_414(api, team, member, settings, client):
    settings.API_MAX_URI_LENGTH = 2000
    auth = bearer(team, member)
    long = "x" * 2100
    body = assert_error(api.get(f"{V1}/datasets?q={long}", **auth), 414)
    assert body["error"].startswith("URI too long: ") and "the limit is 2000" in body["error"]
    assert assert_error(api.get(f"{V1}/{long}", **auth), 414)
    assert api.get(f"{V1}/datasets?q={'x' * 1000}", **auth).status_code == 200
    assert client.get(f"/accounts/login/?q={long}").status_code == 200  # pages: not the API's


def test_the_schema_documents_500_and_503(api):
    schema = api.get("/api/openapi.json").json()
    responses = schema["paths"]["/api/v1/datasets"]["get"]["responses"]
    assert {"500", "503"} <= set(responses)


# --- B. Redis down ----------------------------------------------------------------------------


@pytest.fixture
def redis_down(settings):
    """Django's cache on a Redis that is not there: every call really fails to connect."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "KEY_PREFIX": "embedhub-test-down",
        }
    }
    settings.API_RATE_LIMIT = "1200/m"


@pytest.fixture
def run(team, tiny_registered_model, tiny_version):
    return TrainingRun.objects.create(
        team=team, name="r", base_model=tiny_registered_model, train_version=tiny_version
    )


def test_redis_down_reads_fail_open(api, team, member, redis_down, caplog):
    from django.core.cache import cache

    with pytest.raises(Exception, match="Connection refused|Error"):
        cache.get("probe")  # the cache really is unreachable
    auth = bearer(team, member)
    with caplog.at_level(logging.WARNING, logger="apps.accounts.throttling"):
        for _ in range(3):
            response = api.get(f"{V1}/datasets", **auth)
            assert response.status_code == 200, response.content
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    # A search reads, although it is a POST: not refused by the limiter (404: no deployment).
    search = api.post(
        f"{V1}/deployments/nope/search", {"query": "x"}, content_type="application/json", **auth
    )
    assert assert_error(search, 404)["error"] == "not found"


def test_redis_down_writes_are_a_json_503(api, team, member, run, redis_down):
    auth = bearer(team, member)
    response = api.post(f"{V1}/training-runs/{run.pk}/cancel", **auth)
    assert assert_error(response, 503) == {"error": UNAVAILABLE, "problems": []}
    assert response["Retry-After"] == "5"
    run.refresh_from_db()
    assert run.status == "pending" and not run.cancel_requested  # nothing was done


def test_redis_down_in_a_view_is_a_json_503(api, team, member, monkeypatch):
    # A view that needs the cache (or the queue) and finds it down: 503, not 500.
    import redis.exceptions

    import apps.registry.api

    def down(team):
        raise redis.exceptions.ConnectionError("Error 111 connecting to redis:6379.")

    monkeypatch.setattr(apps.registry.api, "_models", down)
    response = api.get(f"{V1}/models", **bearer(team, member))
    assert assert_error(response, 503)["error"] == UNAVAILABLE


def test_redis_down_pages_keep_working(client, member, team, redis_down, tiny_version):
    assert client.get(reverse("accounts:login")).status_code == 200
    response = client.post(
        reverse("accounts:login"), {"username": "member", "password": "pw-member"}
    )
    assert response.status_code == 302  # login throttling fails open
    for name in ("core:home", "accounts:team", "datasets:list", "registry:list", "indexes:list"):
        assert client.get(reverse(name)).status_code == 200, name
    assert client.post(reverse("accounts:logout")).status_code == 302


def test_the_rate_limit_uses_the_cache_s_public_api_only():
    import inspect

    import apps.accounts.api
    import apps.accounts.throttling

    for module in (apps.accounts.api, apps.accounts.throttling):
        assert "._cache" not in inspect.getsource(module)
