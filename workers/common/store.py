"""Artifacts in an S3-compatible bucket, with a local copy on each host.

With ``ARTIFACTS_ROOT=s3://bucket/prefix`` the bucket holds every artifact (model folders,
embedding-cache entries, index folders, run files) and each host works in a local folder,
``ARTIFACTS_CACHE``: the same path on every host (a container's mount point), so the paths the
database records name the same artifact everywhere. An artifact's key is its path relative to
that folder.

- **Publish** (the host that wrote it, once it is whole): every file is uploaded, then a manifest
  (each file's size and SHA-256) is written last. An artifact without its manifest (an upload
  cut short) does not exist for readers.
- **Ensure** (any host, before reading): a path missing here is fetched from the bucket: each
  file checked against the manifest's SHA-256 in a temporary folder, then renamed into place, so
  a reader never sees half an artifact. Published artifacts never change (their keys hold a
  content hash or a row's number), so a local copy, once whole, is used as it is.
- The local copies are a **read cache**: files are kept once per content (``blobs/<sha256>``,
  hard-linked into place, so the same weights in two folders are fetched and stored once), and
  past ``ARTIFACTS_CACHE_MAX_BYTES`` the least recently used published artifacts are dropped
  (they can always be fetched again). What a host wrote and has not published stays.

Without an ``s3://`` root every function here is a no-op: the embedded default keeps its one
local folder. Plain Python and boto3 (imported when used): workers, the search process and the
web share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.common.fingerprint import file_sha256

MANIFEST = ".embedhub-manifest.json"  # beside the files in the bucket: written last
SEARCH_MANIFEST = "serving/deployments.json"  # what the search replicas serve
STATE_DIR = ".embedhub-store"  # in the local folder: blobs and one marker per artifact


class ArtifactMissing(FileNotFoundError):
    """An artifact the database names is neither here nor (whole) in the bucket."""


@dataclass(frozen=True)
class Store:
    bucket: str
    prefix: str
    local_root: Path
    max_bytes: int | None = None
    endpoint_url: str | None = None

    # --- naming ------------------------------------------------------------------------
    def key_of(self, path: str | Path) -> str | None:
        """The artifact key of a local path (its place under the local folder), or None for a
        path outside it (an installed package's model, a folder registered by an admin)."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.local_root))
        except ValueError:
            return None
        key = rel.as_posix()
        if key in ("", ".") or key.split("/")[0] == STATE_DIR:
            return None
        return key

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _manifest_key(self, key: str) -> str:
        return self._object(f"{key}/{MANIFEST}")

    def _marker(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.local_root / STATE_DIR / "markers" / digest[:2] / f"{digest}.json"

    def _blob(self, sha256: str) -> Path:
        return self.local_root / STATE_DIR / "blobs" / sha256[:2] / sha256

    @functools.cached_property
    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url)

    # --- writing -----------------------------------------------------------------------
    def publish(self, path: str | Path) -> dict | None:
        """Upload a whole artifact (a folder or one file), its manifest last. Returns the
        manifest, or None for a path outside the local folder."""
        key = self.key_of(path)
        if key is None:
            return None
        root = Path(path)
        if root.is_dir():
            files = [f for f in sorted(root.rglob("*")) if f.is_file()]
            kind = "folder"
        elif root.is_file():
            files, kind = [root], "file"
        else:
            raise ArtifactMissing(f"{key}: nothing to publish")
        entries = {}
        for file in files:
            name = file.relative_to(root).as_posix() if kind == "folder" else ""
            sha = file_sha256(file)
            entries[name] = {"size": file.stat().st_size, "sha256": sha}
            target = f"{key}/{name}" if name else f"{key}/{MANIFEST}.data"
            self.client.upload_file(str(file), self.bucket, self._object(target))
        manifest = {"kind": kind, "files": entries, "published_at": time.time()}
        body = json.dumps(manifest, sort_keys=True).encode()
        # No marker: what this host wrote is its own copy, never dropped by the read cache.
        self.client.put_object(Bucket=self.bucket, Key=self._manifest_key(key), Body=body)
        return manifest

    def remove(self, path: str | Path) -> int:
        """Delete an artifact from the bucket, manifest first (so no reader fetches it half
        deleted), and its local marker; returns the objects deleted."""
        key = self.key_of(path)
        if key is None:
            return 0
        self.client.delete_object(Bucket=self.bucket, Key=self._manifest_key(key))
        deleted = 1
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._object(key) + "/"):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
                deleted += len(objects)
        self._marker(key).unlink(missing_ok=True)
        return deleted

    def published_under(self, path: str | Path) -> list[Path]:
        """The local paths of the artifacts published directly under the folder ``path``."""
        key = self.key_of(path)
        if key is None:
            return []
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self._object(key) + "/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                rest = item["Key"][len(prefix) :].split("/")
                if len(rest) == 2 and rest[1] == MANIFEST:
                    found.append(Path(path) / rest[0])
        return found

    # --- reading -----------------------------------------------------------------------
    def manifest(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._manifest_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(answer["Body"].read())

    def ensure(self, path: str | Path) -> Path:
        """The local path, fetched from the bucket first when it is not here. ``ArtifactMissing``
        when the bucket has no whole copy either (never published, or its upload was cut
        short); ``ValueError`` when a fetched file does not match its manifest."""
        path = Path(path)
        key = self.key_of(path)
        if key is None:
            return path
        marker = self._marker(key)
        if path.exists():
            if marker.exists():
                os.utime(marker)  # recently used: evicted last
            return path  # whole here: fetched before, or written by this host
        manifest = self.manifest(key)
        if manifest is None:
            raise ArtifactMissing(
                f"{key}: not in the artifact store (never published, or its upload did not finish)"
            )
        self._fetch(key, path, manifest)
        self._mark(key, manifest)
        self.evict(keep=key)
        return path

    def _fetch(self, key: str, path: Path, manifest: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=path.parent))
        try:
            for name, entry in manifest["files"].items():
                blob = self._blob(entry["sha256"])
                if not blob.exists():
                    source = f"{key}/{name}" if name else f"{key}/{MANIFEST}.data"
                    self._download(self._object(source), blob, entry)
                target = tmp / (name or "file")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(blob, target)
                except OSError:  # another filesystem: a copy
                    shutil.copyfile(blob, target)
            if manifest["kind"] == "file":
                os.replace(tmp / "file", path)
            else:
                try:
                    os.rename(tmp, path)
                except OSError:
                    if not path.is_dir():  # another reader put the same artifact first
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _download(self, source: str, blob: Path, entry: dict) -> None:
        blob.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=blob.parent)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, source, tmp)
            if file_sha256(Path(tmp)) != entry["sha256"]:
                raise ValueError(
                    f"{source}: its content does not match the artifact's manifest (a corrupt "
                    "or replaced object); it was not used"
                )
            os.replace(tmp, blob)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _mark(self, key: str, manifest: dict) -> None:
        marker = self._marker(key)
        marker.parent.mkdir(parents=True, exist_ok=True)
        size = sum(int(e["size"]) for e in manifest["files"].values())
        marker.write_text(json.dumps({"key": key, "bytes": size}), encoding="utf-8")

    # --- the search manifest: one object, replaced whole, that replicas follow -------------
    def put_manifest(self, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._object(SEARCH_MANIFEST), Body=data)

    def changed_manifest(self, etag: str | None) -> tuple[bytes, str] | None:
        """(content, etag) of the bucket's search manifest when it differs from ``etag``; None
        when it is the same or there is none yet."""
        from botocore.exceptions import ClientError

        extra = {"IfNoneMatch": etag} if etag else {}
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object(SEARCH_MANIFEST),
                                            **extra)  # fmt: skip
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("304", "NotModified", "NoSuchKey", "404"):
                return None
            raise
        return answer["Body"].read(), answer["ETag"]

    # --- the read cache ----------------------------------------------------------------
    def cached_bytes(self) -> int:
        blobs = self.local_root / STATE_DIR / "blobs"
        return sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file())

    @contextlib.contextmanager
    def _exclusive(self):
        """One evicting process at a time on this host's folder (the Celery pool's children,
        the training child and the search process share it)."""
        state = self.local_root / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        with open(state / "evict.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def evict(self, *, keep: str | None = None) -> list[str]:
        """Drop the least recently used fetched artifacts until the local blobs fit in
        ``max_bytes``; returns the keys dropped. Only fetched artifacts (a marker, files that
        are blobs) are dropped: what this host wrote stays. An artifact is renamed out of sight
        before it is deleted, so a reader finds it whole or not at all (then fetches it)."""
        if not self.max_bytes:
            return []
        dropped: list[str] = []
        with self._exclusive():
            total = self.cached_bytes()
            markers = sorted(
                (self.local_root / STATE_DIR / "markers").rglob("*.json"),
                key=lambda m: m.stat().st_mtime,
            )
            for marker in markers:
                if total <= self.max_bytes:
                    break
                key = json.loads(marker.read_text(encoding="utf-8"))["key"]
                if key == keep:
                    continue
                local = self.local_root / key
                if local.exists():
                    trash = local.with_name(f".evict-{os.getpid()}-{local.name}")
                    os.rename(local, trash)
                    if trash.is_dir():
                        shutil.rmtree(trash, ignore_errors=True)
                    else:
                        trash.unlink(missing_ok=True)
                marker.unlink(missing_ok=True)
                total -= self._drop_unlinked_blobs()
                dropped.append(key)
        return dropped

    def _drop_unlinked_blobs(self) -> int:
        """Delete the blobs no artifact links to any more; returns the bytes freed."""
        freed = 0
        for blob in (self.local_root / STATE_DIR / "blobs").rglob("*"):
            if blob.is_file():
                st = blob.stat()
                if st.st_nlink == 1:
                    blob.unlink(missing_ok=True)
                    freed += st.st_size
        return freed


def parse_root(root: str) -> tuple[str, str] | None:
    """(bucket, prefix) of an ``s3://bucket/prefix`` root, or None for a local path."""
    if not root.startswith("s3://"):
        return None
    bucket, _, prefix = root[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"ARTIFACTS_ROOT: {root!r} names no bucket (s3://bucket/prefix)")
    return bucket, prefix.strip("/")


@functools.lru_cache(maxsize=8)
def _store(root: str, local: str, max_bytes: int | None, endpoint: str | None) -> Store | None:
    parsed = parse_root(root)
    if parsed is None:
        return None
    return Store(bucket=parsed[0], prefix=parsed[1], local_root=Path(local),
                 max_bytes=max_bytes, endpoint_url=endpoint)  # fmt: skip


def local_root() -> Path:
    """This host's artifacts folder, by the web's settings' default chain (ARTIFACTS_CACHE with a
    bucket, else ARTIFACTS_ROOT; then VAR_DIR/artifacts)."""
    root = os.environ.get("ARTIFACTS_ROOT", "")
    if root and not root.startswith("s3://"):
        return Path(root)
    if os.environ.get("ARTIFACTS_CACHE"):
        return Path(os.environ["ARTIFACTS_CACHE"])
    var = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parents[2] / "var")
    return var / "artifacts"


def store() -> Store | None:
    """The artifact store the environment names, or None (artifacts on local disk only)."""
    root = os.environ.get("ARTIFACTS_ROOT", "")
    limit = os.environ.get("ARTIFACTS_CACHE_MAX_BYTES", "")
    return _store(
        root,
        str(local_root()),
        int(limit) if limit else None,
        os.environ.get("ARTIFACTS_S3_ENDPOINT") or None,
    )


def artifact_ensure(path: str | Path) -> Path:
    """``path`` ready to read on this host (fetched from the bucket if needed)."""
    current = store()
    return current.ensure(path) if current is not None else Path(path)


def artifact_inside(path: str | Path | None, root: str | Path) -> Path | None:
    """``path`` (as a row records it) ready to read, if it lies inside the artifacts folder
    ``root`` and exists here or in the bucket; else None. Never reads a path a row names
    without that check."""
    if not path:
        return None
    path = Path(path)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        return None
    try:
        path = artifact_ensure(path)
    except ArtifactMissing:
        return None
    return path if path.exists() else None


def artifact_publish(path: str | Path) -> None:
    """Upload a finished artifact, when artifacts live in a bucket."""
    current = store()
    if current is not None:
        current.publish(path)


def artifact_remove(path: str | Path) -> None:
    """Delete an artifact from the bucket, when artifacts live in one."""
    current = store()
    if current is not None:
        current.remove(path)


def artifact_delete(path: str | Path) -> None:
    """Delete an artifact (a folder or a file) here and, when artifacts live in a bucket, there
    too. Runs after a delete has committed: a bucket that cannot be reached is logged, and what
    is left there is never read again (no row names it)."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    try:
        artifact_remove(path)
    except Exception:  # noqa: BLE001 (the row is gone; the objects are only orphans now)
        logging.getLogger("embedhub.store").warning("could not delete %s from the bucket", path,
                                                    exc_info=True)  # fmt: skip
