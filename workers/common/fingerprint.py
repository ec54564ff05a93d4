"""A model folder's fingerprint: what the embedding cache keys on and what the search process
checks a deployed model against. Stdlib only, so the web can record one at deploy time.

The fingerprint is a content hash of the files that define the model (their names relative to
the folder, and the SHA-256 of their bytes): the folder's path and the files' times play no
part, so two hosts holding the same model under different mounts agree on it, and a copy of a
model is the same model. Hashing reads every weight byte (about 0.2 s per 100 MB here), so a
process remembers each folder's digest against its files' names, sizes and modification times,
and reads them again only when one of those changes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from workers.common.configs.optimize import ONNX_CONFIG

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")
FORMAT = "sha256-content-v1"
_CHUNK = 1 << 20
_MEMO_SIZE = 256

_memo: dict[tuple, str] = {}
_memo_lock = threading.Lock()


def _model_files(root: Path) -> list[Path]:
    suffixes = WEIGHT_SUFFIXES
    if (root / ONNX_CONFIG).is_file():
        # An optimized variant's weights are its graph. Only there: a plain model folder that
        # happens to ship .onnx files keeps the fingerprint its indexes were built with.
        suffixes += (".onnx", ".data")
    return [f for f in sorted(root.rglob("*")) if f.is_file() and f.suffix in suffixes]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(path: str) -> str:
    """SHA-256 over the model's defining files: each one's path within the folder and the
    SHA-256 of its content (remembered while their sizes and times stay the same)."""
    root = Path(path)
    files = _model_files(root)
    stats = tuple(
        (str(f.relative_to(root)), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]
    )
    key = (str(root.resolve()), stats)
    with _memo_lock:
        known = _memo.get(key)
    if known is not None:
        return known
    items = [(str(f.relative_to(root)).replace("\\", "/"), file_sha256(f)) for f in files]
    fingerprint = hashlib.sha256(json.dumps([FORMAT, items]).encode()).hexdigest()
    with _memo_lock:
        if len(_memo) >= _MEMO_SIZE:
            _memo.pop(next(iter(_memo)))
        _memo[key] = fingerprint
    return fingerprint
