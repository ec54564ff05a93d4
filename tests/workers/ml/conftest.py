"""workers/ml tests run without Django (``-p no:django``) as well as inside the full suite."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _artifacts() -> None:
    """Overrides the suite-wide fixture of that name, which needs pytest-django's ``settings``:
    nothing under workers/ml writes artifacts, and these tests must not need Django."""
