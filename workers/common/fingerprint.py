"""A model folder's fingerprint: what the embedding cache keys on and what the search process
checks a deployed model against. Stdlib only, so the web can record one at deploy time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workers.common.configs.optimize import ONNX_CONFIG

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")


def model_fingerprint(path: str) -> str:
    """Name, size and mtime of the files that define a model (cheap; no weights are read)."""
    root = Path(path)
    suffixes = WEIGHT_SUFFIXES
    if (root / ONNX_CONFIG).is_file():
        # An optimized variant's weights are its graph. Only there: a plain model folder that
        # happens to ship .onnx files keeps the fingerprint its indexes were built with.
        suffixes += (".onnx", ".data")
    items = []
    for file in sorted(root.rglob("*")):
        if file.is_file() and file.suffix in suffixes:
            st = file.stat()
            items.append((str(file.relative_to(root)), st.st_size, int(st.st_mtime)))
    return hashlib.sha256(json.dumps([str(root.resolve()), items]).encode()).hexdigest()
