"""The test tiers (tests/support/tiers.py): a test's marker follows from what it uses, one that
starts a worker or Chromium by its own code cannot be collected unmarked, the starters refuse an
unmarked test at run time, and worker and browser tests refuse to run under pytest-xdist."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.worker import start_worker


class Item:
    """What the tier rules read of a collected test."""

    def __init__(self, function, path: Path, fixturenames=(), marks=()) -> None:
        self.function, self.path = function, path
        self.fixturenames = list(fixturenames)
        self.nodeid = f"{path.name}::{function.__name__}"
        self.marks = set(marks)

    def add_marker(self, name: str) -> None:
        self.marks.add(name)

    def get_closest_marker(self, name: str):
        return name if name in self.marks else None


def plain():
    return 1


def starts_a_worker(tmp_path):
    start_worker({}, tmp_path / "w.log")


def drives_chromium():
    from playwright.sync_api import sync_playwright

    return [sync_playwright for _ in range(1)]  # inside a comprehension: still found


def test_markers_follow_from_fixtures_path_and_name():
    unit = Item(plain, tiers.TESTS / "apps" / "test_x.py", ["db", "tmp_path"])
    tiers.mark_by_use(unit)
    assert unit.marks == set()
    worker = Item(plain, tiers.TESTS / "apps" / "test_x.py", ["celery_worker_process"])
    tiers.mark_by_use(worker)
    assert worker.marks == {"worker"}
    browser = Item(plain, tiers.TESTS / "browser" / "test_flow.py")
    tiers.mark_by_use(browser)
    assert browser.marks == {"browser"}
    page = Item(plain, tiers.TESTS / "apps" / "test_x.py", ["page"])
    tiers.mark_by_use(page)
    assert page.marks == {"browser"}
    slow = Item(plain, tiers.TESTS / "test_demo_slow.py")
    tiers.mark_by_use(slow)
    assert slow.marks == {"slow"}


def test_a_test_that_starts_a_worker_or_chromium_itself_must_be_marked():
    here = Path(__file__)
    assert tiers.unmarked_starts(Item(plain, here)) == []
    (problem,) = tiers.unmarked_starts(Item(starts_a_worker, here))
    assert "starts_a_worker" in problem and "@pytest.mark.worker" in problem
    assert tiers.unmarked_starts(Item(starts_a_worker, here, marks=["worker"])) == []
    (problem,) = tiers.unmarked_starts(Item(drives_chromium, here))
    assert "Chromium" in problem and "@pytest.mark.browser" in problem


def test_starting_a_worker_from_an_unmarked_test_fails_before_it_starts(tmp_path):
    # This test is in the unit tier: a helper that starts a worker is refused here.
    with pytest.raises(pytest.fail.Exception, match="not marked @pytest.mark.worker"):
        starts_a_worker(tmp_path)
    assert not (tmp_path / "w.log").exists()


def test_worker_and_browser_tests_refuse_xdist(monkeypatch):
    worker = Item(plain, Path(__file__), marks=["worker"])
    unit = Item(plain, Path(__file__))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert tiers.serial_under_xdist(worker) is None
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert "runs serially" in tiers.serial_under_xdist(worker)
    assert tiers.serial_under_xdist(unit) is None
