"""A simulated full disk: no small tmpfs here, so files are wrapped instead.

``fill_disk_on(monkeypatch, "run.trec")`` makes every file opened for writing whose name ends
with ``run.trec`` take a few bytes (flushed to the real file, so a partial file really is on
disk) and then fail the way a full disk does: ``OSError(ENOSPC)``. It patches ``open``, the
lowest level the writers reach from Python, so the product's own code path runs above it.
"""

from __future__ import annotations

import builtins
import errno
import os
from typing import Any


class FullDisk:
    """A file that takes ``room`` bytes (or characters), then raises ENOSPC."""

    def __init__(self, f: Any, room: int) -> None:
        self._f = f
        self._room = room

    def write(self, data: Any) -> int:
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._f.flush()
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def fill_disk_on(monkeypatch: Any, suffix: str, room: int = 64) -> list[str]:
    """Patch ``open``; returns the list of names that got a full disk (to check it was hit)."""
    real_open = builtins.open
    hits: list[str] = []

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        name = os.fspath(file) if isinstance(file, str | os.PathLike) else None
        if isinstance(name, str) and name.endswith(suffix) and set(mode) & set("wxa"):
            hits.append(name)
            return FullDisk(f, room)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    return hits
