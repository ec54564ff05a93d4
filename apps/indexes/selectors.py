from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.indexes.models import Deployment, DeploymentEvent, IndexBuild

_local = threading.local()


class SearchUnavailable(OSError):
    """The search process could not be reached or answered badly."""


def search_call(method: str, path: str, body: dict | None = None, *, timeout: float = 10.0):
    """One JSON call to the search process over a kept-alive connection per thread (a new TCP
    connection per query would cost more than the search itself). Returns (status, body)
    for /search, the body for other paths; raises SearchUnavailable when it is down."""
    url = urlsplit(settings.SEARCH_URL)
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    for attempt in (1, 2):
        conn = getattr(_local, "conn", None)
        if conn is None or getattr(_local, "url", None) != settings.SEARCH_URL:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
            _local.conn, _local.url = conn, settings.SEARCH_URL
        conn.timeout = timeout
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _local.conn = None
            if attempt == 2:
                raise SearchUnavailable(f"search process at {settings.SEARCH_URL}: {exc}") from exc
            continue  # a kept-alive connection the server closed: retry once on a fresh one
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise SearchUnavailable(f"search process answered {response.status}: {exc}") from exc
        if path == "/search":
            return response.status, data
        return data
    raise AssertionError("unreachable")


def search_health() -> dict:
    """Ask the search process for its health. Never raises: a down service is a result."""
    try:
        body = search_call("GET", "/health", timeout=settings.SEARCH_HEALTH_TIMEOUT)
    except (OSError, ValueError) as exc:
        return {"up": False, "url": settings.SEARCH_URL, "error": str(exc)}
    return {"up": body.get("status") == "ok", "url": settings.SEARCH_URL, **body}


def index_build_list(*, team: Team) -> QuerySet[IndexBuild]:
    return IndexBuild.objects.filter(team=team).select_related("model", "dataset_version__dataset")


def index_build_get(*, user, pk, role: str = "viewer") -> IndexBuild:
    return team_scoped_get(
        queryset=IndexBuild.objects.select_related("model", "dataset_version__dataset"),
        user=user,
        pk=pk,
        role=role,
    )


def index_siblings(*, build: IndexBuild) -> list[IndexBuild]:
    """Built indexes of the same model over the same corpus: the recall/latency chart's points."""
    return list(
        IndexBuild.objects.filter(
            team_id=build.team_id,
            model_id=build.model_id,
            dataset_version_id=build.dataset_version_id,
            status="succeeded",
        ).order_by("pk")
    )


def deployment_list(*, team: Team) -> QuerySet[Deployment]:
    return Deployment.objects.filter(team=team).select_related(
        "index__model", "index__dataset_version__dataset", "deployed_by"
    )


def deployment_get(*, team: Team, name: str) -> Deployment:
    """A deployment of ``team`` by name; another team's name is a 404 like a missing one."""
    found = deployment_list(team=team).filter(name=name).first()
    if found is None:
        raise Http404(f"No deployment named {name!r}.")
    return found


def deployment_events(*, team: Team, name: str | None = None) -> QuerySet[DeploymentEvent]:
    events = DeploymentEvent.objects.filter(team=team).select_related(
        "user", "from_index", "to_index"
    )
    return events.filter(name=name) if name else events


def deployment_search(
    *, deployment: Deployment, queries: list[str], k: int = 10, filters: dict | None = None
) -> tuple[int, dict]:
    """Run queries on the deployment in the search process: (status, body)."""
    return search_call(
        "POST",
        "/search",
        {"deployment": deployment.serving_key, "queries": queries, "k": k, "filters": filters},
        timeout=settings.SEARCH_TIMEOUT,
    )
