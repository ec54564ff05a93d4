"""The one supervisor of the worker's child processes (a training run today).

Work that holds a GPU runs in a child process so that a cancel can free it at once: killing a
thread cannot release CUDA memory, killing a process can. :func:`supervise` starts the child
and stays with it until it ends:

* the child gets its own process group (a stop reaches the data-loader processes it forks) and,
  on Linux, a parent-death signal: a worker killed with ``kill -9`` or by the OOM killer takes
  its child along, so a resumed run never races a leftover for the GPU;
* the child speaks JSON lines on stdout, one event per line (``{"event": "...", ...}``), and
  ends with ``{"event": "done", "result": {...}}`` and exit status 0, or with
  ``{"event": "error", "message": "<one line for people>", ...}``; anything it writes to
  stderr is appended to the log file, under one header line per attempt;
* every event goes to ``on_event``; ``should_stop`` is called at least every ``poll_s``
  (it may do the caller's periodic work too); when it answers True the child's group gets
  SIGTERM, then SIGKILL after ``grace_s``, and :class:`ChildStopped` is raised. With the
  defaults (1 s poll, 3 s grace) a cancel ends the child within 5 s even if it ignores SIGTERM;
* an exception from a callback (the row was lost, a time limit) stops the child the same way
  before it propagates: no exit from here leaves the child running.

Django-free and ML-free (only the standard library): the tests drive it with small scripts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

POLL_S = 1.0
GRACE_S = 3.0
TAIL_CHARS = 6000


class ChildStopped(Exception):
    """The child was stopped because ``should_stop`` asked for it."""


class ChildFailed(RuntimeError):
    """The child ended without a result. ``str()`` is one line for people: the child's own
    error message when it sent one, else how it ended; ``status`` is its exit status (negative:
    killed by that signal), ``event`` its error event (or None), ``tail`` the log's last lines
    (for the log, not the page)."""

    def __init__(
        self, message: str, *, status: int, event: dict[str, Any] | None, tail: str
    ) -> None:
        super().__init__(message)
        self.status, self.event, self.tail = status, event, tail


def supervise(
    command: Sequence[str],
    *,
    log_path: str | Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = POLL_S,
    grace_s: float = GRACE_S,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    label: str = "The child process",
) -> dict[str, Any]:
    """Run ``command`` to its end and return the ``result`` of its ``done`` event.

    Raises :class:`ChildStopped` when stopped through ``should_stop``, :class:`ChildFailed`
    when the child sent an error, died, or exited without a ``done`` event. ``label`` names
    the child in the messages ("The training process exited with status 1; see the log.").
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.getpid()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"--- attempt at {datetime.now(UTC).isoformat()}\n")
        log.flush()
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # its own process group: a stop reaches its workers too
            preexec_fn=lambda: _die_with_parent(parent),
            env=env,
            cwd=cwd,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name=f"child-{process.pid}-stdout", daemon=True)
    reader.start()
    final: dict[str, Any] | None = None
    last_poll = float("-inf")

    def poll() -> None:
        nonlocal last_poll
        now = time.monotonic()
        if should_stop is None or now - last_poll < poll_s:
            return
        last_poll = now
        if should_stop():
            stop(process, grace_s)
            raise ChildStopped()

    try:
        eof = False
        while not eof:
            try:
                line = lines.get(timeout=poll_s)
            except queue.Empty:
                line = ""
            if line is None:
                eof = True
            else:
                event = _event(line)
                if event is not None:
                    if event.get("event") in ("done", "error", "stopped"):
                        final = event
                    if on_event is not None:
                        on_event(event)
            poll()
        # stdout closed; the child may still be finishing (or may have closed it early).
        while True:
            try:
                status = process.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                poll()
    finally:
        if process.poll() is None:
            stop(process, grace_s)
        _sweep(process)
        reader.join(timeout=5)
    if final is not None and final.get("event") == "done" and status == 0:
        return final.get("result") or {}
    error = final if final is not None and final.get("event") == "error" else None
    raise ChildFailed(
        (error or {}).get("message") or _ended(label, status),
        status=status,
        event=error,
        tail=log_tail(log_path),
    )


def stop(process: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it if the child outlives ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _sweep(process: subprocess.Popen) -> None:
    """Once the child has exited, kill what it left in its group (a data-loader worker that
    outlived it would keep GPU memory). The group id stays reserved while any member lives."""
    if process.poll() is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: str | Path, chars: int = TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file ("" when there is none yet)."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _event(line: str) -> dict[str, Any] | None:
    """One protocol line as a dict; a stray non-JSON line (a library printing) is skipped."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _ended(label: str, status: int) -> str:
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
        hint = " (out of memory?)" if -status == signal.SIGKILL else ""
        return f"{label} was killed by {name}{hint}; see the log."
    return f"{label} exited with status {status}; see the log."


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGKILL it when the worker dies (kill -9, OOM), so a dead
    worker never leaves a process behind to race the resumed run for the GPU."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)
