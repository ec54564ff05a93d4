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
from apps.datasets.models import Document
from apps.indexes.models import Deployment, DeploymentEvent, IndexBuild
from apps.runs.models import TrainingRun
from workers.serving.auth import TokenError, bearer, shared_token, token_path
from workers.serving.server import MAX_QUERIES  # the search process's own limit (Django-free)

_local = threading.local()


class SearchUnavailable(OSError):
    """The search process could not be reached or answered badly."""


_tokens: dict = {}  # path → token: the shared file is read once per process


def search_token() -> str:
    """The shared secret for the search process: SEARCH_TOKEN (or SEARCH_TOKEN_FILE), else the
    file under VAR_DIR that the search process reads too (made by whichever needs it first)."""
    if settings.SEARCH_TOKEN:
        return settings.SEARCH_TOKEN
    path = token_path(settings.VAR_DIR)
    cached = _tokens.get(path)
    if cached is None:
        cached = _tokens[path] = shared_token(path)
    return cached


# Errors of a kept-alive socket the server closed while it idled: safe to send again once.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def search_call(method: str, path: str, body: dict | None = None, *, timeout: float = 10.0):
    """One JSON call to the search process over a kept-alive connection per thread (a new TCP
    connection per query would cost more than the search itself). Returns (status, body)
    for /search, the body for other paths; raises SearchUnavailable when it is down. Only a
    stale kept-alive socket is retried: a timeout is not sent twice."""
    url = urlsplit(settings.SEARCH_URL)
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    try:
        headers.update(bearer(search_token()))
    except (OSError, TokenError) as exc:  # an unwritable VAR_DIR, an emptied token file
        raise SearchUnavailable(f"no search token: {exc}") from exc
    for attempt in (1, 2):
        conn = getattr(_local, "conn", None)
        reused = conn is not None and getattr(_local, "url", None) == settings.SEARCH_URL
        if not reused:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
            _local.conn, _local.url = conn, settings.SEARCH_URL
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _local.conn = None
            if attempt == 1 and reused and isinstance(exc, STALE):
                continue
            raise SearchUnavailable(f"search process at {settings.SEARCH_URL}: {exc}") from exc
        if response.status == 401:
            _tokens.clear()  # a token file made anew is read again on the next call
            raise SearchUnavailable(
                f"the search process at {settings.SEARCH_URL} refused this web's token: "
                "set the same SEARCH_TOKEN (or SEARCH_TOKEN_FILE) for both"
            )
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


def deployment_for_search(*, team: Team, name: str) -> Deployment | None:
    """A deployment with only what a query needs: the serving key, the index and its
    documents' version. Loading the index's and version's JSON (metrics, stats, health) cost
    4 ms a query on the search API, a sixth of the whole encode-and-search."""
    return (
        Deployment.objects.filter(team=team, name=name)
        .select_related("index")
        .only("name", "team", "index", "index__dataset_version")
        .first()
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


class SearchFailed(Exception):
    """A search that cannot be answered; ``status`` is what the API should reply."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def deployment_query(
    *,
    deployment: Deployment,
    queries: list[str],
    k: int = 10,
    filters: dict | None = None,
    documents: bool = False,
) -> dict:
    """Run ``queries`` on a deployment in the search process, each hit joined to its document
    (title and text) when ``documents``. Raises SearchFailed with the status to answer."""
    if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
        raise SearchFailed("queries: give at least one query, and no empty query", 400)
    if len(queries) > MAX_QUERIES:
        raise SearchFailed(f"queries: at most {MAX_QUERIES} per request", 400)
    try:
        status, found = search_call(
            "POST",
            "/search",
            {
                "deployment": deployment.serving_key,
                "queries": queries,
                "k": k,
                "filters": filters or None,
            },  # fmt: skip
            timeout=settings.SEARCH_TIMEOUT,
        )
    except SearchUnavailable as exc:
        raise SearchFailed(f"the search service is not reachable ({exc})", 503) from exc
    if status == 404:
        raise SearchFailed(
            f"{deployment.name} is not loaded in the search service yet; try again shortly", 503
        )
    if status != 200:
        raise SearchFailed(found.get("error", "search failed"), 503 if status >= 500 else status)
    docs = {}
    if documents:
        ids = {h["id"] for row in found["results"] for h in row}
        docs = {
            d.doc_id: d
            for d in Document.objects.filter(
                version_id=deployment.index.dataset_version_id, doc_id__in=ids
            ).only("doc_id", "title", "text", "metadata")
        }
    results = []
    for query, row in zip(queries, found["results"], strict=True):
        hits = []
        for h in row:
            hit = {"id": h["id"], "score": h["score"]}
            if documents:
                doc = docs.get(h["id"])
                hit["document"] = doc
            hits.append(hit)
        results.append({"query": query, "hits": hits})
    return {"index": found["index_id"], "results": results, "timings": found["timings"]}


def deployment_serving(*, deployment: Deployment, health: dict) -> dict:
    """What the search process says about one deployment: live (on which index), refused (and
    still serving what), loading, or the service is down."""
    if not health.get("up"):
        return {"state": "down"}
    key = deployment.serving_key
    live = (health.get("deployments") or {}).get(key)
    error = (health.get("errors") or {}).get(key)
    if live and live["index_id"] == deployment.index_id:
        return {"state": "live", **live, "error": error}
    if error:
        return {"state": "refused", "error": error, "live": live}
    return {"state": "loading", "live": live}


def trained_by(*, model) -> TrainingRun | None:
    """The training run that made a fine-tuned model (lineage), if any."""
    return TrainingRun.objects.filter(result_model=model).select_related("train_version").first()
