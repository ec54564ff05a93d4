"""An on-disk cache of embeddings, so a corpus is encoded once per (model, data, max length).

Entries are folders named by a key that hashes everything that changes the vectors: the model
folder and its weight files' sizes and times, layout, pooling, normalisation, max sequence
length, the prefix, and the data's content hash. Writes go to a temporary folder renamed into
place, so a crash never leaves a half-written entry that a later reader would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from workers.common.atomic import atomic_write
from workers.common.fingerprint import WEIGHT_SUFFIXES, model_fingerprint  # noqa: F401 (re-exported)


def embedding_key(**parts) -> str:
    """A stable key over keyword parts (model fingerprint, prefix, max length, data hash, …)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[np.ndarray, list[str]] | None:
        """(vectors, ids) or None. Vectors are memory-mapped: a hit costs no encode and no copy."""
        from workers.common.store import ArtifactMissing, artifact_ensure

        folder = self.path(key)
        try:
            artifact_ensure(folder)  # with a bucket: another host's entry is a hit too
        except ArtifactMissing:
            return None
        try:
            ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            return None
        if len(ids) != len(vectors):
            return None
        return vectors, ids

    def put(self, key: str, vectors: np.ndarray, ids: list[str], meta: dict | None = None) -> Path:
        folder = self.path(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=folder.parent))
        try:
            # Each file fsynced before the folder is renamed into place: a hit is never short.
            with atomic_write(tmp / "vectors.npy", "wb") as fh:
                np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
            with atomic_write(tmp / "ids.json", "w") as fh:
                fh.write(json.dumps(ids))
            with atomic_write(tmp / "meta.json", "w") as fh:
                fh.write(json.dumps(meta or {}, indent=1))
            try:
                os.replace(tmp, folder)
            except OSError:
                # Another worker wrote the same entry first; theirs is as good as ours.
                if not folder.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        from workers.common.store import artifact_publish

        artifact_publish(folder)
        return folder
