"""What every API router shares: bearer-token auth, the per-token throttle, the error shape.

A path operation of the one ``NinjaAPI`` (``embedhub.api``) requires a token by default:
``TokenAuth`` sets ``request.api_token`` and ``request.team`` before the view runs, and
``TokenRateThrottle`` counts the request against that token. Errors are always
``{"error": "...", "problems": ["FILE:LINE: reason", ...]}``: return ``error(...)``,
``not_found()`` or ``forbidden_below(...)`` from a view, or raise ``BadRequest`` /
``ninja.errors.HttpError`` / ``Http404`` (the API's exception handlers give them this shape).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from ninja import Schema
from ninja.security import HttpBearer
from ninja.throttling import AuthRateThrottle

from apps.accounts.models import ApiToken
from apps.accounts.selectors import api_token_authenticate, membership_get
from apps.accounts.throttling import (
    UNAVAILABLE,
    CacheUnavailable,
    ServiceUnavailable,
    unavailable_errors,
    window_incr,
)

logger = logging.getLogger(__name__)

TOKEN_REQUIRED = "a valid API token is required"


class TokenAuth(HttpBearer):
    """``Authorization: Bearer ehk_…``; sets ``request.api_token`` and ``request.team``.

    Only the header counts, never the session cookie: a browser that is logged in cannot be
    made to call the API by another site, so the API needs no CSRF token.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, tuple[float, ApiToken]] = {}
        self._lock = threading.Lock()

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        api_token = self._recent(token.strip())
        if api_token is None:
            return None
        request.api_token, request.team = api_token, api_token.team
        return api_token

    def _recent(self, raw: str) -> ApiToken | None:
        """A token checked in the last ``API_TOKEN_CACHE_S`` seconds is trusted again without
        the database (its lookup is a tenth of a search request's time); a revoked token or a
        member who left stops working within that many seconds. Only valid tokens are kept."""
        ttl = settings.API_TOKEN_CACHE_S
        if ttl <= 0:
            return api_token_authenticate(raw=raw)
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(raw)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        api_token = api_token_authenticate(raw=raw)
        with self._lock:
            if len(self._seen) > 10_000:  # bounded: stale entries go in bulk
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < ttl}
            if api_token is None:
                self._seen.pop(raw, None)
            else:
                self._seen[raw] = (now, api_token)
        return api_token


token_auth = TokenAuth()


class TokenRateThrottle(AuthRateThrottle):
    """``settings.API_RATE_LIMIT`` requests per API token (``"1200/m"``; empty: no limit).

    Keyed on the token's id, so two tokens of one user or one address are counted apart. A
    fixed window counted with the cache's public, atomic ``incr`` and ``add``
    (``throttling.window_incr``; Redis when ``REDIS_URL`` is set, shared by every web
    process): concurrent requests cannot undercount. The rate is read per request, so a
    settings change applies without a restart.

    The cache unreachable: reads (GET, HEAD, OPTIONS, and a search, which only reads) fail
    open, served without a limit so that search and the read API stay up; every other write
    is refused with a 503 (``ServiceUnavailable``) before it does anything, since writes
    queue jobs on that same Redis.
    """

    scope = "api_token"
    # POST operations (by URL name in the "api" namespace) that only read.
    READS_BY_POST = frozenset({"api:search"})

    def __init__(self) -> None:
        # ninja keeps the wait on the instance, which every thread shares; here it lives in a
        # thread-local so that concurrent requests never read each other's.
        self._local = threading.local()
        super().__init__()  # parses the rate now: a malformed setting fails at start-up

    def get_rate(self) -> str | None:
        return settings.API_RATE_LIMIT or None

    def get_cache_key(self, request: HttpRequest) -> str | None:
        token = getattr(request, "api_token", None)
        if token is None:
            return None  # only token-authenticated operations are throttled
        return self.cache_format % {"scope": self.scope, "ident": token.pk}

    def allow_request(self, request: HttpRequest) -> bool:
        self._local.wait = None
        limit, duration = self.parse_rate(self.get_rate())
        key = self.get_cache_key(request)
        if limit is None or duration is None or key is None:
            return True
        now = self.timer()
        window = int(now // duration)
        try:
            count = self._count(f"{key}:{window}", ttl=duration + 1)
        except CacheUnavailable:
            if self.is_read(request):
                return True  # fail open
            raise ServiceUnavailable(UNAVAILABLE) from None
        if count > limit:
            self._local.wait = (window + 1) * duration - now
            return False
        return True

    def _count(self, counter: str, *, ttl: int) -> int:
        """This window's count after this request; raises ``CacheUnavailable``."""
        return window_incr(counter, ttl=ttl, what="API rate limit not counted")

    @classmethod
    def is_read(cls, request: HttpRequest) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        match = getattr(request, "resolver_match", None)
        return match is not None and match.view_name in cls.READS_BY_POST

    def wait(self) -> float | None:
        return getattr(self._local, "wait", None)


class ErrorOut(Schema):
    """The API's one error shape."""

    error: str
    problems: list[str]


# The error statuses an authenticated operation may answer, for the OpenAPI schema.
ERRORS: dict[Any, type[Schema]] = {
    frozenset({400, 401, 403, 404, 409, 422, 429, 500, 503}): ErrorOut
}


def error(message: str, status: int = 400, problems: list[str] | None = None) -> JsonResponse:
    """The API's one error shape: ``{"error": ..., "problems": ["FILE:LINE: reason", ...]}``."""
    return JsonResponse({"error": message, "problems": problems or []}, status=status)


def not_found() -> JsonResponse:
    # Another team's object answers exactly like a missing one.
    return error("not found", status=404)


def forbidden_below(request: HttpRequest, role: str) -> JsonResponse | None:
    """403 unless the token's user holds ``role`` or above in the token's team."""
    membership = membership_get(user=request.api_token.user, team=request.team)
    if membership is None or not membership.allows(role):
        return error(f"this needs the {role} role in {request.team}", status=403)
    return None


# An absolute path, POSIX (two segments or more, not inside a URL) or Windows.
_PATH = re.compile(r"(?<![\w.:/~-])~?/(?:[^\s/'\"<>:]+/)+[^\s/'\"<>:,;)]*|\b[A-Za-z]:\\[^\s'\"<>]*")


def scrub(message: str) -> str:
    """One line of ``message`` (at most 300 characters) with every path replaced by ``<path>``:
    an error message must not tell a client how the server's disk is laid out."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    return _PATH.sub("<path>", line)[:300]


def exception_response(request: HttpRequest, exc: BaseException) -> JsonResponse:
    """The API's answer to an exception nothing else handled: 503 when Redis (the cache or the
    queue) is unreachable, else a 500 naming the exception in one line, never a path. The
    traceback goes to the log."""
    if isinstance(exc, unavailable_errors()):
        logger.warning(
            "API %s %s: Redis unreachable (%s: %s)",
            request.method,
            request.path,
            type(exc).__name__,
            exc,
        )
        response = error(UNAVAILABLE, 503)
        response["Retry-After"] = "5"
        return response
    logger.error(
        "API %s %s failed",
        request.method,
        request.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    detail = scrub(str(exc))
    name = type(exc).__name__
    return error(f"internal error: {name}: {detail}" if detail else f"internal error: {name}", 500)


class BadRequest(Exception):
    """Raised by the helpers below (or a view); the API answers with ``response``."""

    def __init__(self, response: JsonResponse) -> None:
        super().__init__(response.content)
        self.response = response


def team_object(queryset, body: dict, key: str, *, what: str):
    """``queryset``'s row whose pk is ``body[key]`` (the caller scopes it to the team), else a
    404 BadRequest: another team's object reads exactly like a missing one."""
    value = body.get(key)
    found = queryset.filter(pk=int(value)).first() if str(value or "").isdigit() else None
    if found is None:
        raise BadRequest(error(f"{key}: no such {what} in your team", status=404))
    return found
