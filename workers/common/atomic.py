"""Atomic artifact files, and the page message for a failed write.

Every artifact a worker writes goes through :func:`atomic_write` (a file object) or
:func:`atomic_path` (a file name, for a library that insists on one): the bytes go to a hidden
temporary file in the same folder, are flushed and fsynced, and only then renamed over the final
name with ``os.replace``. A reader sees the old file or the new one, never half of one; on any
error (a full disk included) the temporary file is removed and the final name is untouched.

:func:`human_message_for` turns an exception into the one line a job's page shows: a full disk
or quota is one fixed sentence, any other ``OSError`` its reason only, and no message ever
carries an absolute server path (the full detail stays in the job's log).

Pure Python: no Django, no ML library.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

DISK_FULL_MESSAGE = "No space left on the artifacts volume; free space or enlarge it, then re-run."
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What C libraries (faiss, via strerror) and child processes print for the same two errnos.
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def _temp_name(path: Path) -> Path:
    # Hidden, unique, in the same folder (so os.replace is a rename), and keeping the final
    # suffix (numpy.save appends ".npy" to a name without it).
    return path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}")


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; best effort (some filesystems refuse a directory fsync)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = None,
    fsync: bool = True,
) -> Iterator[IO[Any]]:
    """``with atomic_write(path, "w") as fh: fh.write(...)``: ``path`` appears complete or not
    at all. ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding``) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode {mode!r}, expected 'w' or 'wb'")
    path = Path(path)
    tmp = _temp_name(path)
    text = mode == "w"
    # "x": created here and nowhere else; the umask applies as for a plain open().
    fh = open(tmp, "x" if text else "xb", encoding=(encoding or "utf-8") if text else None)
    try:
        with fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """``with atomic_path(path) as tmp: library.save(obj, str(tmp))``: for writers that take a
    file name. The library writes ``tmp``; it becomes ``path`` when the block ends without an
    error, and is removed otherwise."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(errno.ENOENT, "the writer produced no file", path.name)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)


# --- the page message ------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) is a full disk or an exceeded quota: an
    ``OSError`` with ENOSPC/EDQUOT, or a message saying so (faiss raises a ``RuntimeError``
    with strerror's text; a training child reports the error as text)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        text = str(e)
        if any(t in text for t in DISK_FULL_TEXTS):
            return True
    return False


# An absolute path: a "/" that starts a token (not inside a URL or a relative path), then at
# least two components.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"`,;:()\[\]{}<>]+){2,}/?")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last component (``…/run.trec``)."""

    def short(m: re.Match[str]) -> str:
        name = m.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"…/{name}"

    return _ABSOLUTE_PATH.sub(short, text)


# Errnos a file operation raises without naming the file (a write() on an open file object).
_FILE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EFBIG, errno.EMFILE, errno.ENFILE}
)


def _is_file_error(exc: BaseException) -> bool:
    """An ``OSError`` about a file (not a socket or a connection), with a reason to show."""
    if not isinstance(exc, OSError) or not exc.strerror:
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return False
    return exc.filename is not None or exc.errno in _FILE_ERRNOS


def human_message_for(exc: BaseException) -> str:
    """The one line a failed job's page shows for ``exc``.

    - a full disk or quota: :data:`DISK_FULL_MESSAGE`, exactly;
    - an exception with a ``human_message``: that message;
    - any other ``OSError`` about a file: "Could not read or write an artifact file (reason).";
    - anything else: "TypeName: message".

    Only the first line is kept and absolute server paths are cut to their last component.
    """
    if is_disk_full(exc):
        return DISK_FULL_MESSAGE
    human = getattr(exc, "human_message", None)
    if not human and _is_file_error(exc):
        human = f"Could not read or write an artifact file ({exc.strerror})."
    if not human:
        human = f"{type(exc).__name__}: {exc}"
    lines = str(human).strip().splitlines()
    return scrub_paths(lines[0]) if lines else "Failed."
