"""Where a training run can resume: plain path logic (no ML library), so the web can say
whether a failed run has a checkpoint to resume from, and the worker resumes from it."""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINTS = "checkpoints"


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder under ``output_dir/checkpoints``, or None.

    The trainer writes ``trainer_state.json`` last, so a folder without it is a checkpoint cut
    short by a kill and is skipped; so is one whose state file is cut short (a full disk).
    """
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        name = child.name
        if name.startswith("checkpoint-") and name[11:].isdigit():
            if _complete_json(child / "trainer_state.json"):
                found.append((int(name[11:]), child))
    return str(max(found)[1]) if found else None


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True
