"""Another host, on this machine: a process whose artifacts folder is a folder of its own
mounted at the same path (a private mount namespace, as a container's volume), so what it
finds there is only what it wrote or fetched from the bucket."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def namespaces_available() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True)
    return probe.returncode == 0


def require_namespaces() -> None:
    if not namespaces_available():
        pytest.skip("needs private mount namespaces (unshare -m) to give a process a host's disk")


def own_folder(disk: Path, at: Path) -> list[str]:
    """The command prefix that runs a command with the empty folder ``disk`` mounted at ``at``."""
    disk.mkdir(parents=True, exist_ok=True)
    at.mkdir(parents=True, exist_ok=True)
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return [shutil.which("unshare") or "unshare", "-m", "--", "sh", "-c", script, "sh", str(disk),
            str(at)]  # fmt: skip
