"""The locks (requirements/base.txt, dev.txt) agree with what they are made from
(requirements/*.in) and with what is installed: a fresh clone installs exactly the tested set.

Re-make them with ``bin/lock`` after changing a ``.in`` file (README: Dependencies)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REQ = Path(__file__).resolve().parent.parent / "requirements"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)")


def locked(name: str) -> dict[str, tuple[Version, int]]:
    """{package: (version, number of hashes)} of a lock file."""
    out: dict[str, tuple[Version, int]] = {}
    current = None
    for line in (REQ / name).read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1))
            out[current] = (Version(m.group(2)), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = out[current]
            out[current] = (version, hashes + 1)
        elif not line.startswith(" "):
            current = None
    return out


def direct(name: str) -> list[Requirement]:
    reqs = []
    for line in (REQ / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


@pytest.mark.parametrize("lock", ["base.txt", "dev.txt"])
def test_every_pin_has_a_hash(lock):
    pins = locked(lock)
    assert len(pins) > 50
    assert [p for p, (_, hashes) in pins.items() if hashes == 0] == []


@pytest.mark.parametrize(("source", "lock"), [("base.in", "base.txt"), ("dev.in", "dev.txt")])
def test_the_lock_satisfies_its_source(source, lock):
    pins = locked(lock)
    wanted = direct(source) + (direct("base.in") if source == "dev.in" else [])
    problems = []
    for req in wanted:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req}: missing from {lock} (run bin/lock)")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req}: {lock} pins {pins[name][0]} (run bin/lock)")
    assert problems == []


def test_dev_pins_what_base_pins():
    base, dev = locked("base.txt"), locked("dev.txt")
    assert {p: v for p, (v, _) in base.items() if dev.get(p, (None,))[0] != v} == {}


def test_the_environment_is_the_lock():
    """What runs these tests is what the lock says (a stale .venv fails here, not later)."""
    problems = []
    for name, (version, _) in locked("dev.txt").items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        if installed != version:
            problems.append(f"{name}: {installed} installed, {version} locked")
    assert problems == []
