"""The worker's one child-process supervisor (workers/tasks/supervisor.py), driven by small
Python children: events, cancel within 5 s, a crash, a child deaf to SIGTERM, an orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from workers.tasks.supervisor import ChildFailed, ChildStopped, supervise

# A child that says it started (with its pid) and then reports a step every 0.1 s for ever.
TICKING = """
import json, os, sys, time
print(json.dumps({"event": "start", "pid": os.getpid()}), flush=True)
step = 0
while True:
    step += 1
    print(json.dumps({"event": "log", "step": step}), flush=True)
    time.sleep(0.1)
"""

# One that says it started and then sleeps: no write that a closed pipe could kill it with.
SILENT = """
import json, os, time
print(json.dumps({"event": "start", "pid": os.getpid()}), flush=True)
time.sleep(600)
"""


def child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def gone(pid: int, within: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_events_reach_the_callback_and_the_result_comes_back(tmp_path):
    events: list[dict] = []
    result = supervise(
        child("""
            import json, sys
            print("a library printing on stdout", flush=True)
            for step in (1, 2, 3):
                print(json.dumps({"event": "log", "step": step}), flush=True)
            print("warming up", file=sys.stderr, flush=True)
            print(json.dumps({"event": "done", "result": {"steps": 3}}), flush=True)
        """),
        log_path=tmp_path / "run" / "child.log",
        on_event=events.append,
    )
    assert result == {"steps": 3}
    assert [e.get("step") for e in events] == [1, 2, 3, None]  # the stray line is skipped
    assert events[-1]["event"] == "done"
    log = (tmp_path / "run" / "child.log").read_text()
    assert log.startswith("--- attempt at ") and "warming up" in log


def test_each_attempt_appends_to_the_log(tmp_path):
    code = 'import json; print(json.dumps({"event": "done", "result": {}}))'
    for _ in range(2):
        supervise(child(code), log_path=tmp_path / "child.log")
    assert (tmp_path / "child.log").read_text().count("--- attempt at ") == 2


def test_cancel_stops_the_child_within_5_seconds(tmp_path):
    pids: list[int] = []
    asked: list[float] = []

    def on_event(event: dict) -> None:
        if event["event"] == "start":
            pids.append(event["pid"])
        elif event.get("step") == 3 and not asked:
            asked.append(time.monotonic())

    # The production timings: polled every second, 3 s of grace.
    with pytest.raises(ChildStopped):
        supervise(
            child(TICKING),
            log_path=tmp_path / "child.log",
            on_event=on_event,
            should_stop=lambda: bool(asked),
        )
    took = time.monotonic() - asked[0]
    assert took < 5.0, f"stopped {took:.2f} s after the cancel"
    assert gone(pids[0], within=0)
    print(f"cancel to stopped child: {took:.2f} s", file=sys.stderr)


def test_a_child_deaf_to_sigterm_is_killed_with_its_process_group(tmp_path):
    ready = tmp_path / "grandchild.pid"
    code = f"""
        import json, os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # A grandchild (think: a data-loader worker), deaf to SIGTERM too, in the same group.
        grandchild = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        open({str(ready)!r}, "w").write(str(grandchild.pid))
        print(json.dumps({{"event": "start", "pid": os.getpid()}}), flush=True)
        while True:
            time.sleep(0.1)
    """
    pids: list[int] = []
    asked: list[float] = []

    def should_stop() -> bool:
        if pids and ready.exists() and ready.read_text() and not asked:
            asked.append(time.monotonic())
        return bool(asked)

    with pytest.raises(ChildStopped):
        supervise(
            child(code),
            log_path=tmp_path / "child.log",
            on_event=lambda e: pids.append(e["pid"]),
            should_stop=should_stop,
            poll_s=0.2,
            grace_s=1.0,
        )
    took = time.monotonic() - asked[0]
    assert 1.0 <= took < 5.0  # it waited out the grace, then killed
    assert gone(pids[0], within=0)
    assert gone(int(ready.read_text())), "the grandchild outlived the stop"


def test_a_crashing_child_raises_with_its_tail(tmp_path):
    with pytest.raises(ChildFailed) as caught:
        supervise(
            child("""
                import json
                print(json.dumps({"event": "log", "step": 1}), flush=True)
                raise ValueError("boom in the child")
            """),
            log_path=tmp_path / "child.log",
            label="The training process",
        )
    failed = caught.value
    assert str(failed) == "The training process exited with status 1; see the log."
    assert failed.status == 1 and failed.event is None
    assert "ValueError: boom in the child" in failed.tail


def test_a_child_killed_by_a_signal_says_so(tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(ChildFailed) as caught:
        supervise(child(code), log_path=tmp_path / "child.log", label="The training process")
    assert caught.value.status == -signal.SIGKILL
    assert str(caught.value) == (
        "The training process was killed by SIGKILL (out of memory?); see the log."
    )


def test_the_childs_own_error_message_is_the_message(tmp_path):
    code = """
        import json, sys
        print(json.dumps({"event": "error", "message": "Bad training data: row 2", "kind": "data"}))
        sys.exit(1)
    """
    with pytest.raises(ChildFailed) as caught:
        supervise(child(code), log_path=tmp_path / "child.log")
    assert str(caught.value) == "Bad training data: row 2"
    assert caught.value.event["kind"] == "data"


def test_an_exit_without_a_done_event_is_a_failure(tmp_path):
    with pytest.raises(ChildFailed, match="exited with status 0"):
        supervise(child("print('no protocol here')"), log_path=tmp_path / "child.log")


def test_an_exception_in_a_callback_stops_the_child_before_it_propagates(tmp_path):
    pids: list[int] = []

    def on_event(event: dict) -> None:
        if event["event"] == "start":
            pids.append(event["pid"])
        elif event.get("step") == 2:
            raise LookupError("the row is gone")

    with pytest.raises(LookupError):
        supervise(child(TICKING), log_path=tmp_path / "child.log", on_event=on_event, grace_s=1.0)
    assert gone(pids[0], within=0)


def test_an_orphaned_child_dies_with_its_parent(tmp_path):
    """The worker killed with SIGKILL (no finally runs): its child must not live on."""
    parent_code = f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from workers.tasks.supervisor import supervise
        child = [sys.executable, "-c", {SILENT!r}]
        def on_event(event):
            if event["event"] == "start":
                print(event["pid"], flush=True)
        supervise(child, log_path={str(tmp_path / "child.log")!r}, on_event=on_event)
    """
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(parent_code)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,  # so the SIGKILL below reaches only what the test means
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not gone(pid, within=0.5), "the child should be running"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert gone(pid), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_the_log_tail_keeps_the_end(tmp_path):
    from workers.tasks.supervisor import log_tail

    path = tmp_path / "x.log"
    assert log_tail(path) == ""
    path.write_text("a" * 10 + json.dumps({"end": True}))
    assert log_tail(path, chars=13) == '{"end": true}'
