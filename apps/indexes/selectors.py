from __future__ import annotations

import os
import threading

import httpx2
from django.conf import settings
from django.db.models import F, QuerySet
from django.http import Http404
from pydantic import ValidationError

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.listing import Sort
from apps.datasets.models import Document
from apps.indexes.models import Deployment, DeploymentEvent, IndexBuild, serving_key
from apps.runs.models import TrainingRun
from workers.common.atomic import scrub_paths
from workers.serving.auth import TokenError, shared_token, token_path
from workers.serving.schema import (
    DEFAULT_K,
    SearchRequestError,
    SearchResponse,
    search_request,
)


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


class _SearchToken(httpx2.Auth):
    """The Bearer token read at each request: settings (and the shared file) may change under
    a long-lived client."""

    def auth_flow(self, request):
        try:
            token = search_token()
        except (OSError, TokenError) as exc:  # an unwritable VAR_DIR, an emptied token file
            raise SearchUnavailable(f"no search token: {exc}") from exc
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


_clients: dict[tuple[int, str], httpx2.Client] = {}
_clients_lock = threading.Lock()


def search_client() -> httpx2.Client:
    """The process's pooled client for SEARCH_URL: kept-alive connections shared by every
    thread (a new TCP connection per query would cost more than the search itself). Made on
    first use in each process, so a forking server's workers never share sockets."""
    key = (os.getpid(), settings.SEARCH_URL)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = httpx2.Client(
                    base_url=settings.SEARCH_URL,
                    auth=_SearchToken(),
                    # The search process is ours: no proxy from the environment in between.
                    trust_env=False,
                    # Idle connections are dropped after 30 s, before the search process's
                    # own 75 s, so the client never sends on a socket the server is closing.
                    limits=httpx2.Limits(
                        max_connections=64, max_keepalive_connections=32, keepalive_expiry=30
                    ),
                    timeout=httpx2.Timeout(10.0, connect=2.0),
                    headers={"Accept": "application/json"},
                )
    return client


def search_call(method: str, path: str, body: dict | None = None, *, timeout: float = 10.0):
    """One JSON call to the search process through the pooled client. Returns (status, body)
    for /search, the body for other paths; raises SearchUnavailable when it is down. Only a
    connection the server closed before answering is tried again (once): a timeout is not
    sent twice."""
    client = search_client()
    for attempt in (1, 2):
        try:
            response = client.request(method, path, json=body, timeout=timeout)
        except httpx2.RemoteProtocolError as exc:
            if attempt == 1:
                continue  # a kept-alive socket the server had closed: a new connection
            raise SearchUnavailable(f"search process at {settings.SEARCH_URL}: {exc}") from exc
        except httpx2.HTTPError as exc:
            raise SearchUnavailable(f"search process at {settings.SEARCH_URL}: {exc}") from exc
        break
    if response.status_code == 401:
        _tokens.clear()  # a token file made anew is read again on the next call
        raise SearchUnavailable(
            f"the search process at {settings.SEARCH_URL} refused this web's token: "
            "set the same SEARCH_TOKEN (or SEARCH_TOKEN_FILE) for both"
        )
    try:
        data = response.json() if response.content else {}
    except ValueError as exc:
        raise SearchUnavailable(f"search process answered {response.status_code}: {exc}") from exc
    if path == "/search":
        return response.status_code, data
    return data


def search_health() -> dict:
    """Ask the search process for its health. Never raises: a down service is a result."""
    try:
        body = search_call("GET", "/health", timeout=settings.SEARCH_HEALTH_TIMEOUT)
    except (OSError, ValueError) as exc:
        return {"up": False, "url": settings.SEARCH_URL, "error": str(exc)}
    return {"up": body.get("status") == "ok", "url": settings.SEARCH_URL, **body}


# The index builds list's sort keys (``apps.core.listing``): newest first by default; a
# measured figure best first, builds without it last.
INDEX_SORTS = {
    "new": Sort("newest first", ("-created_at", "-pk"), "▼"),
    "old": Sort("oldest first", ("created_at", "pk"), "▲"),
    "recall": Sort("Recall@10, best first",
                   (F("metrics__recall_at_10").desc(nulls_last=True), "-pk"), "▼"),
    "ndcg": Sort("nDCG@10, best first",
                 (F("metrics__ndcg_at_10").desc(nulls_last=True), "-pk"), "▼"),
    "latency": Sort("p50 latency, fastest first",
                    (F("metrics__latency_p50_ms").asc(nulls_last=True), "-pk"), "▲"),
    "bytes": Sort("bytes per vector, fewest first",
                  (F("metrics__bytes_per_vector").asc(nulls_last=True), "-pk"), "▲"),
}  # fmt: skip


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


class SearchFailed(Exception):
    """A search that cannot be answered; ``status`` is what the API should reply."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def deployment_query(
    *,
    team: Team,
    name: str,
    queries: list[str],
    k: int = DEFAULT_K,
    filters: dict | None = None,
    documents: bool = False,
    mode: str = "dense",
    rerank: bool = True,
    min_relevance: float | None = None,
) -> dict:
    """Run ``queries`` on ``team``'s deployment ``name`` in the search process (``mode``:
    dense, bm25, sparse or hybrid), each hit joined
    to its document (title and text) when ``documents``. Raises SearchFailed with the status
    to answer (404: no such deployment in this team).

    The search process is asked first, by the team's own key, without reading the deployment
    row: it serves only what the database's manifest lists, so the lookup would add a query
    (0.8 ms, a tenth of the API's overhead) to every search to learn what the answer says
    anyway. The row is read only when the process does not know the name or cannot be
    reached (a missing deployment is a 404 either way) and when documents are joined (the
    version of the index that answered, which a swap may have changed since)."""
    try:
        # The search process's own schema and limits: what it would refuse is refused here.
        request = search_request(
            deployment=serving_key(team_id=team.pk, name=name),
            queries=queries,
            k=k,
            filters=filters,
            mode=mode,
            rerank=rerank,
            min_relevance=min_relevance,
        )
    except SearchRequestError as exc:
        raise SearchFailed(str(exc), 400) from None
    try:
        status, found = search_call(
            "POST",
            "/search",
            request.model_dump(mode="json"),
            timeout=settings.SEARCH_TIMEOUT,
        )
    except SearchUnavailable as exc:
        if not Deployment.objects.filter(team=team, name=name).exists():
            raise SearchFailed("not found", 404) from None
        raise SearchFailed(f"the search service is not reachable ({exc})", 503) from exc
    if status == 404:
        if not Deployment.objects.filter(team=team, name=name).exists():
            # Another team's name answers exactly like a missing one.
            raise SearchFailed("not found", 404)
        raise SearchFailed(
            f"{name} is not loaded in the search service yet; try again shortly", 503
        )
    if status != 200:
        # The process's own message, but never a server path (an index folder, a model's).
        message = scrub_paths(str(found.get("error", "search failed")))
        raise SearchFailed(message, 503 if status >= 500 else status)
    try:
        answer = SearchResponse.model_validate(found)
    except ValidationError as exc:
        raise SearchFailed(
            f"the search service answered badly ({exc.error_count()} problems)", 503
        ) from None
    docs = {}
    if documents:
        ids = {h.id for row in answer.results for h in row}
        version = IndexBuild.objects.filter(team=team, pk=answer.index_id).values_list(
            "dataset_version_id", flat=True
        )
        docs = {
            d.doc_id: d
            for d in Document.objects.filter(version_id__in=version, doc_id__in=ids).only(
                "doc_id", "title", "text", "metadata"
            )
        }
    results = []
    for query, row in zip(request.queries, answer.results, strict=True):
        hits = []
        for h in row:
            hit = {"id": h.id, "score": h.score}
            if h.relevance is not None:  # the deployment's calibration, for its index
                hit["relevance"] = h.relevance
            if documents:
                hit["document"] = docs.get(h.id)
            hits.append(hit)
        results.append({"query": query, "hits": hits})
    timings = answer.timings.model_dump(exclude_none=True)
    return {"index": answer.index_id, "results": results, "timings": timings}


def deployment_serving(*, deployment: Deployment, health: dict) -> dict:
    """What the search process says about one deployment: live (on which index), refused (and
    still serving what), loading, or the service is down."""
    if not health.get("up"):
        return {"state": "down"}
    key = deployment.serving_key
    live = (health.get("deployments") or {}).get(key)
    error = (health.get("errors") or {}).get(key)
    stage = live.get("rerank") if live else None
    wanted = (
        {k: deployment.rerank[k] for k in ("model", "model_name", "k_prime")}
        if deployment.rerank
        else None
    )
    if live and live["index_id"] == deployment.index_id and stage == wanted:
        return {"state": "live", **live, "error": error}
    if error:
        return {"state": "refused", "error": error, "live": live}
    return {"state": "loading", "live": live}


def trained_by(*, model) -> TrainingRun | None:
    """The training run that made a fine-tuned model (lineage), if any."""
    return TrainingRun.objects.filter(result_model=model).select_related("train_version").first()
