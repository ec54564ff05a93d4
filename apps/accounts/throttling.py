"""Counting in Django's cache, and what to do when the cache is down.

Two users: the API's per-token rate limit (``apps.accounts.api.TokenRateThrottle``) and login
throttling (``LoginGate``). Both count with the cache's public, atomic ``incr`` and ``add``
only (Redis when ``REDIS_URL`` is set, shared by every web process; else each process's
memory), and both survive an unreachable cache: a failed cache call raises
``CacheUnavailable`` here, and the caller decides (login fails open; the API fails open for
reads and answers 503 for writes: see ``TokenRateThrottle``).

After a failure the cache is not asked again for ``CACHE_RETRY_S`` seconds (per backend
object, that is per thread and cache): a Redis that does not answer must not cost every
request a connection timeout, nor fill the log with one traceback per request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import weakref

from django.conf import settings
from django.core.cache import caches

logger = logging.getLogger(__name__)

CACHE_RETRY_S = 5.0
# Backend object → monotonic time before which it is not asked again.
_down_until: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

UNAVAILABLE = "the service is temporarily unavailable (cache/queue unreachable); try again shortly"


class CacheUnavailable(Exception):
    """The cache could not be reached (or was recently unreachable)."""


class ServiceUnavailable(Exception):
    """A request needs Redis (cache or queue) and Redis is down: the API answers 503."""


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "Redis (cache or broker) is unreachable" wherever they are raised:
    the API answers them with a 503 instead of a 500."""
    errors: list[type[BaseException]] = [ServiceUnavailable, CacheUnavailable]
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a base requirement
        pass
    try:
        import kombu.exceptions

        errors.append(kombu.exceptions.OperationalError)
    except ImportError:  # pragma: no cover - kombu is a base requirement
        pass
    return tuple(errors)


class _Guarded:
    """``with _Guarded(cache, what):`` around cache calls: any failure becomes
    ``CacheUnavailable`` (logged once, then the cache rests for ``CACHE_RETRY_S``)."""

    def __init__(self, cache, what: str) -> None:
        self.cache, self.what = cache, what

    def __enter__(self):
        until = _down_until.get(self.cache)
        if until is not None and time.monotonic() < until:
            raise CacheUnavailable("the cache was unreachable moments ago")
        return self.cache

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, ValueError | CacheUnavailable):
            return False  # ValueError: incr of a missing key, the caller's business
        logger.warning(
            "The cache is unreachable (%s: %s); %s. Not retried for %.0f s.",
            type(exc).__name__,
            exc,
            self.what,
            CACHE_RETRY_S,
        )
        try:
            _down_until[self.cache] = time.monotonic() + CACHE_RETRY_S
        except TypeError:  # pragma: no cover - a backend that cannot be weakly referenced
            pass
        raise CacheUnavailable(f"{type(exc).__name__}: {exc}") from exc


def guarded(what: str, alias: str = "default") -> _Guarded:
    return _Guarded(caches[alias], what)


def window_incr(key: str, *, ttl: int, what: str) -> int:
    """Add one to the counter ``key`` (created with a lifetime of ``ttl`` seconds by its first
    increment) and return its new value. Public, atomic cache calls only: ``incr`` (on Redis
    EXISTS + INCR), then ``add`` (SET NX with expiry) for the first of a window, so concurrent
    requests never undercount. Raises ``CacheUnavailable``."""
    with guarded(what) as cache:
        try:
            return cache.incr(key)
        except ValueError:  # the first of its window (or it just expired)
            pass
        if cache.add(key, 1, ttl):
            return 1
        try:  # another request created it between our incr and add
            return cache.incr(key)
        except ValueError:
            return 1


# --- login throttling ------------------------------------------------------------------------


def client_address(request) -> str:
    """The client's address: ``REMOTE_ADDR``, or behind ``TRUSTED_PROXY_COUNT`` reverse proxies
    the address the outermost trusted proxy saw (counted from the right of X-Forwarded-For,
    so a client cannot choose its address by sending the header itself)."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return remote


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def lockout_message(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many failed sign-ins; try again in {minutes} minute{'s' if minutes != 1 else ''}."


class LoginGate:
    """Failed sign-ins of one username from one address, and of one address altogether.

    ``LOGIN_FAILURE_LIMIT`` failures for a username from an address within
    ``LOGIN_LOCKOUT_S`` seconds lock that pair for ``LOGIN_LOCKOUT_S`` seconds;
    ``LOGIN_ADDRESS_FAILURE_LIMIT`` failures from an address (any usernames) lock the address.
    While locked even the right password is refused. A success clears the pair's failures
    (not the address's: signing into one's own account must not reset a password-guessing
    count). Keyed per pair, not per username alone, so nobody can lock a user out from
    elsewhere. The cache unreachable: fails open (every attempt is checked by the password
    alone), with a warning in the log.
    """

    def __init__(self, request, username: str) -> None:
        address = client_address(request)
        pair = _digest(username.casefold(), address)
        self.keys = {
            "pair": (f"login:fail:pair:{pair}", f"login:lock:pair:{pair}"),
            "address": (
                f"login:fail:addr:{_digest(address)}",
                f"login:lock:addr:{_digest(address)}",
            ),
        }
        self.limits = {
            "pair": settings.LOGIN_FAILURE_LIMIT,
            "address": settings.LOGIN_ADDRESS_FAILURE_LIMIT,
        }

    def locked_for(self) -> float | None:
        """Seconds left of the longest lock on this pair or address, None if not locked."""
        locks = [lock for _, lock in self.keys.values()]
        try:
            with guarded("login throttling is off until it answers") as cache:
                found = cache.get_many(locks)
        except CacheUnavailable:
            return None
        now = time.time()
        left = [until - now for until in found.values() if isinstance(until, int | float)]
        left = [s for s in left if s > 0]
        return max(left) if left else None

    def failed(self) -> float | None:
        """Count a failure; the seconds of the lock it caused, if it caused one."""
        period = settings.LOGIN_LOCKOUT_S
        locked = None
        try:
            for name, (counter, lock) in self.keys.items():
                limit = self.limits[name]
                if limit <= 0:
                    continue
                count = window_incr(
                    counter, ttl=period, what="login throttling is off until it answers"
                )
                if count >= limit:
                    with guarded("login throttling is off until it answers") as cache:
                        cache.set(lock, time.time() + period, period)
                        cache.delete(counter)
                    locked = float(period)
        except CacheUnavailable:
            return None
        return locked

    def clear(self) -> None:
        """The pair signed in (or reset its password): forget its failures and lock."""
        try:
            with guarded("login throttling is off until it answers") as cache:
                cache.delete_many(list(self.keys["pair"]))
        except CacheUnavailable:
            pass
