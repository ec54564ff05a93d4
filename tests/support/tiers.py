"""Test tiers (README, "Tests"): what each marker means and how the markers are kept honest.

- unit: everything else; runs in parallel under pytest-xdist (each worker isolated, see
  ``isolate_xdist_worker``).
- ``worker``: starts a real Celery worker process (one at a time: they share the broker).
- ``browser``: drives headless Chromium (every test under tests/browser).
- ``slow``: a real-model run (files named ``test_*_slow.py``).
- ``gpu``: needs CUDA.

A test gets its marker from what it uses (``mark_by_use``, at collection); a test that starts a
worker or Chromium by its own code must carry the marker itself, or collection fails
(``unmarked_starts``); and the starters check at run time that the running test carries it
(``require``), which catches the routes through helpers that neither of the first two sees.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import CodeType

import pytest

TESTS = Path(__file__).resolve().parents[1]
SERIAL = ("worker", "browser")

# Fixture → the tier of every test that uses it.
FIXTURE_TIERS = {"celery_worker_process": "worker", "browser": "browser", "page": "browser"}
# A name in a test's own code → the tier it must be marked with.
STARTERS = {
    "start_worker": "worker",
    "sync_playwright": "browser",
    "async_playwright": "browser",
}
WHAT = {"worker": "a real Celery worker", "browser": "Chromium"}

# The markers of the test now running (None outside a test), for ``require``.
running: frozenset[str] | None = None


def mark_by_use(item: pytest.Item) -> None:
    path = Path(item.path)
    if TESTS / "browser" in path.parents:
        item.add_marker("browser")
    if path.stem.endswith("_slow"):
        item.add_marker("slow")
    for fixture in getattr(item, "fixturenames", ()):
        if fixture in FIXTURE_TIERS:
            item.add_marker(FIXTURE_TIERS[fixture])


def _names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):  # nested functions, comprehensions
            names |= _names(const)
    return names


def unmarked_starts(item: pytest.Item) -> list[str]:
    """Why ``item`` is in the wrong tier: its own code starts a worker or Chromium, unmarked."""
    function = getattr(item, "function", None)
    code = getattr(function, "__code__", None)
    if code is None:
        return []
    return [
        f"{item.nodeid}: starts {WHAT[tier]} ({name}) but is not marked "
        f"@pytest.mark.{tier}; mark it (tiers: tests/support/tiers.py)"
        for name, tier in STARTERS.items()
        if name in _names(code) and item.get_closest_marker(tier) is None
    ]


def require(tier: str) -> None:
    """Called by what starts a worker or Chromium: the running test must be in ``tier``."""
    if running is not None and tier not in running:
        pytest.fail(
            f"this test starts {WHAT[tier]} but is not marked @pytest.mark.{tier} "
            "(tiers: tests/support/tiers.py)",
            pytrace=False,
        )


def serial_under_xdist(item: pytest.Item) -> str | None:
    """Worker and browser tests share one broker, ports and the two cores: they run one at a
    time (bin/test runs them after the parallel unit tier), never under pytest-xdist."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    tiers = [t for t in SERIAL if item.get_closest_marker(t) is not None]
    if not tiers:
        return None
    return (
        f"a {tiers[0]} test runs serially, not under pytest-xdist: run it without -n, or "
        f'select the unit tier with -m "not slow and not browser and not worker and not gpu"'
    )


def isolate_xdist_worker(worker: str) -> None:
    """Give one pytest-xdist worker process its own var folder (search token, secret key,
    artifacts, the search manifest) and its own Redis key prefixes (cache counts, broker
    queues); pytest-django already gives it its own test database (``test_<name>_gw0``).
    Subprocesses (the search process) inherit the folder through the environment, so both sides
    of the shared search token read the same file."""
    from django.conf import settings
    from django.test.utils import override_settings

    var = Path(settings.VAR_DIR) / "xdist" / worker
    artifacts = var / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    os.environ.update(VAR_DIR=str(var), ARTIFACTS_ROOT=str(artifacts))
    changes: dict = {
        "VAR_DIR": var,
        "ARTIFACTS_ROOT": artifacts,
        "SEARCH_MANIFEST": artifacts / "serving" / "deployments.json",
    }
    if settings.REDIS_URL:
        cache = settings.CACHES["default"]
        changes["CACHES"] = {
            **settings.CACHES,
            "default": {**cache, "KEY_PREFIX": f"{cache.get('KEY_PREFIX', '')}-{worker}"},
        }
        changes["CELERY_BROKER_TRANSPORT_OPTIONS"] = {
            **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            "global_keyprefix": f"{worker}:",
        }
    # For the whole life of this process: the test's own ``settings`` changes stack on top.
    override_settings(**changes).enable()
