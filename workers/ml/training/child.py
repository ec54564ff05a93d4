"""The training child process: :func:`workers.ml.training.trainer.train` in a process that the
worker can watch and kill.

Usage::

    python -m workers.ml.training.child SPEC.json

``SPEC.json`` is one object::

    {"config": {...TrainConfig.to_dict()...},
     "rows": "train.jsonl" | [{"anchor": ..., "positive": ..., "negatives": [...]}, ...],
     "output_dir": "...",
     "eval_data": null | {"corpus": ..., "queries": ..., "qrels": ...} | "eval.json",
     "resume_from": null | "latest" | "<checkpoint folder>"}

Protocol (the one :func:`workers.tasks.supervisor.supervise` reads): **stdout carries only JSON
lines**, one event each, flushed as written; library output and warnings go to stderr (the
supervisor's log file). Events, in order:

* ``{"event": "start", "pid": N, "rows": N}`` — spec and rows checked; loading libraries/model.
* ``{"event": "log", "kind": "begin", "step": S, "total_steps": T}`` — the first step is about
  to run (S > 0 when resumed).
* ``{"event": "log", "kind": "step", "step", "total_steps"}`` — after an optimizer step, at
  most once a second (and after the last): the live step counter between loss points.
* ``{"event": "log", "kind": "train", "step", "total_steps", "epoch", "loss", "learning_rate",
  "grad_norm", "samples_per_s"}`` — every ``logging_steps``.
* ``{"event": "log", "kind": "eval", "step", "total_steps", "epoch", "metrics": {...}}`` —
  every ``eval_steps`` when eval data is given.
* ``{"event": "log", "kind": "checkpoint", "step", "path"}`` — a checkpoint was written.
* then exactly one of:

  - ``{"event": "done", "result": {...}}`` — exit status 0; ``result`` as returned by
    :func:`workers.ml.training.trainer.train`;
  - ``{"event": "stopped", "result": {...} | null}`` — a SIGTERM/SIGINT was honoured; exit
    status 128 + the signal number (143 for SIGTERM);
  - ``{"event": "error", "message", "kind", "detail"}`` — exit status 1 (2 for a bad spec).
    ``message`` is one human line for the page ("CUDA out of memory: lower the batch size …"),
    ``kind`` one of ``oom``, ``config``, ``data``, ``spec``, ``internal``, ``detail`` the
    exception's type and text for the log. The message is also the last line on stderr.

A child that dies without a final event (SIGKILL, the kernel's OOM killer) is reported by the
supervisor from its exit status, with the tail of its stderr in the log.

Cancel: SIGTERM (or SIGINT) before the "begin" event (imports, model loading) exits at once;
after it, the trainer stops at the end of the current optimizer step (the checkpoints stay, so a
later run can use ``resume_from: "latest"``). The supervisor sends SIGTERM to the child's
process group, waits a grace period, then SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import IO, Any

USAGE = "usage: python -m workers.ml.training.child SPEC.json"
EXIT_ERROR = 1
EXIT_SPEC = 2


# --- errors for people ---------------------------------------------------------------------


def human_error(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) for the page; never imports torch."""
    from workers.common.configs.training import ConfigError
    from workers.ml.training.data import DataError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name = type(exc).__name__
    lowered = str(exc).lower()
    if name == "OutOfMemoryError" or ("out of memory" in lowered and "cuda" in lowered):
        return "oom", (
            "CUDA out of memory: lower the batch size or max_seq_length, "
            "or turn on gradient checkpointing or LoRA"
        )
    if isinstance(exc, MemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(exc):
        return "oom", "Out of memory: lower the batch size or max_seq_length"
    if isinstance(exc, ConfigError):
        return "config", f"Bad training configuration: {text}"
    if isinstance(exc, DataError):
        return "data", f"Bad training data: {text}"
    if isinstance(exc, FileNotFoundError):
        return "data", text
    return "internal", f"Training failed: {name}: {text}"[:300]


def log_line(event: dict[str, Any]) -> str:
    """A training event as one line of the log people read (the trainer's own printing is
    off: stdout is the event protocol)."""
    kind, step, total = event.get("kind"), event.get("step"), event.get("total_steps")
    if kind == "begin":
        return f"starting at step {step} of {total}" + (" (resumed)" if step else "")
    if kind == "train":
        rate = event.get("samples_per_s")
        return (
            f"step {step}/{total} · epoch {event.get('epoch')} · loss {event['loss']:.4f} · "
            f"lr {event.get('learning_rate', 0):.2e}" + (f" · {rate:.1f} rows/s" if rate else "")
        )
    if kind == "eval":
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted((event.get("metrics") or {}).items())
                          if k.endswith("ndcg@10") or k.endswith("mrr@10"))  # fmt: skip
        return f"step {step}/{total} · evaluation: {shown or 'done'}"
    if kind == "checkpoint":
        return f"step {step}: checkpoint written"
    return ""


# --- the child -----------------------------------------------------------------------------


class _Events:
    """JSON lines to the real stdout, whatever else writes to fd 1 or sys.stdout."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self.out: IO[str] = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)  # stray prints (and C-level writes) go to stderr from now on
        sys.stdout = sys.stderr
        self.lock = threading.Lock()

    def emit(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, **data}, default=str)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


def _load_spec(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        spec = json.load(fh)
    if not isinstance(spec, dict):
        raise ValueError("the spec must be a JSON object")
    for key in ("config", "rows", "output_dir"):
        if key not in spec:
            raise ValueError(f"the spec has no {key!r}")
    unknown = set(spec) - {"config", "rows", "output_dir", "eval_data", "resume_from"}
    if unknown:
        raise ValueError(f"unknown spec keys: {', '.join(sorted(unknown))}")
    eval_data = spec.get("eval_data")
    if isinstance(eval_data, str):
        with open(eval_data, encoding="utf-8") as fh:
            spec["eval_data"] = json.load(fh)
    return spec


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print(USAGE, file=sys.stderr)
        return EXIT_SPEC
    # Before the heavy imports read them: no progress bars, no hub.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    events = _Events()

    def fail(kind: str, message: str, detail: str, status: int) -> int:
        events.emit("error", message=message, kind=kind, detail=detail)
        print(message, file=sys.stderr, flush=True)
        return status

    try:
        spec = _load_spec(argv[0])
    except (OSError, ValueError) as exc:
        return fail("spec", f"Bad training spec: {exc}", f"{type(exc).__name__}: {exc}", EXIT_SPEC)

    from workers.common.configs.training import TrainConfig
    from workers.ml.training.data import read_rows
    from workers.ml.training.trainer import train

    stop = {"requested": 0, "training": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["requested"] = signum
        if not stop["training"]:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            config = TrainConfig.from_dict(spec["config"])
            rows = read_rows(spec["rows"])  # checked here, before torch is imported
            events.emit("start", pid=os.getpid(), rows=len(rows))

            def on_log(event: dict[str, Any]) -> None:
                if event.get("kind") == "begin":
                    stop["training"] = True  # from now on a signal stops at a step boundary
                events.emit("log", **event)
                line = log_line(event)
                if line:
                    print(line, file=sys.stderr, flush=True)  # the run page's log panel

            result = train(
                config=config,
                rows=rows,
                output_dir=spec["output_dir"],
                eval_data=spec.get("eval_data"),
                resume_from=spec.get("resume_from"),
                on_log=on_log,
                should_stop=lambda: bool(stop["requested"]),
            )
        except SystemExit:
            events.emit("stopped", result=None)
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an error event
            if stop["requested"]:
                events.emit("stopped", result=None)
                return 128 + stop["requested"]
            kind, message = human_error(exc)
            import traceback

            traceback.print_exc(file=sys.stderr)
            return fail(kind, message, f"{type(exc).__name__}: {exc}"[:2000], EXIT_ERROR)
    finally:
        stop["training"] = False
    if result.get("stopped"):
        events.emit("stopped", result=result)
        return 128 + (stop["requested"] or signal.SIGTERM)
    events.emit("done", result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
