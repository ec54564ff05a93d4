"""Artifacts in a bucket (a local S3-compatible server): published whole or not at all,
fetched into an empty cache checked against their manifest, stored once per content, evicted
least recently used, deleted with their rows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import boto3
import pytest

from workers.common.store import ArtifactMissing, Store, store


def _folder(root: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = root / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def _other_host(current: Store, cache: Path, **changes) -> Store:
    """The same bucket seen from a host whose local folder is ``cache``."""
    return Store(bucket=current.bucket, prefix=current.prefix, local_root=cache,
                 endpoint_url=current.endpoint_url, **changes)  # fmt: skip


def test_a_published_folder_is_fetched_whole_into_an_empty_cache(s3_env, settings, tmp_path):
    here = store()
    assert here is not None and here.prefix == "team-artifacts"
    files = {"model.safetensors": os.urandom(3000), "sub/config.json": b'{"a": 1}'}
    folder = _folder(settings.ARTIFACTS_ROOT, "models/run-1", files)
    manifest = here.publish(folder)
    assert set(manifest["files"]) == set(files)

    # Another host: the same path under its own (empty) folder.
    there = _other_host(here, tmp_path / "host-b")
    target = there.local_root / "models/run-1"
    assert not target.exists()
    assert there.ensure(target) == target
    assert {p.relative_to(target).as_posix(): p.read_bytes()
            for p in target.rglob("*") if p.is_file()} == files  # fmt: skip
    assert there.ensure(target) == target  # a second time: nothing fetched, nothing changed
    # A path outside the artifacts folder is never fetched or published.
    assert there.key_of(tmp_path / "elsewhere") is None


def test_a_half_uploaded_artifact_is_never_used(s3_env, settings, tmp_path):
    here = store()
    folder = _folder(settings.ARTIFACTS_ROOT, "indexes/7", {"index.faiss": b"x" * 100})
    # The files went up, the manifest (written last) did not: an upload cut short.
    here.client.upload_file(str(folder / "index.faiss"), here.bucket,
                            here._object("indexes/7/index.faiss"))  # fmt: skip
    there = _other_host(here, tmp_path / "host-b")
    with pytest.raises(ArtifactMissing, match="indexes/7: not in the artifact store"):
        there.ensure(there.local_root / "indexes/7")
    assert not (there.local_root / "indexes/7").exists()


def test_a_corrupt_object_is_refused_and_nothing_is_left_in_place(s3_env, settings, tmp_path):
    here = store()
    folder = _folder(settings.ARTIFACTS_ROOT, "embeddings/ab/abc", {"vectors.npy": b"1" * 64})
    here.publish(folder)
    here.client.put_object(Bucket=here.bucket, Key=here._object("embeddings/ab/abc/vectors.npy"),
                           Body=b"2" * 64)  # fmt: skip
    there = _other_host(here, tmp_path / "host-b")
    with pytest.raises(ValueError, match="does not match the artifact's manifest"):
        there.ensure(there.local_root / "embeddings/ab/abc")
    assert not (there.local_root / "embeddings/ab/abc").exists()


def test_one_file_artifacts_and_content_stored_once(s3_env, settings, tmp_path):
    here = store()
    weights = os.urandom(5000)
    a = _folder(settings.ARTIFACTS_ROOT, "models/a", {"model.safetensors": weights})
    b = _folder(settings.ARTIFACTS_ROOT, "models/b", {"model.safetensors": weights})
    run = settings.ARTIFACTS_ROOT / "evaluations" / "3" / "run.trec"
    run.parent.mkdir(parents=True)
    run.write_text("q1 Q0 d1 1 0.5 tag\n")
    for artifact in (a, b, run):
        here.publish(artifact)
    there = _other_host(here, tmp_path / "host-b")
    for artifact in (a, b, run):
        there.ensure(there.local_root / artifact.relative_to(settings.ARTIFACTS_ROOT))
    assert (there.local_root / "evaluations/3/run.trec").read_text() == run.read_text()
    # The same weights in two folders: one blob, linked into both.
    fetched = there.local_root / "models/a/model.safetensors"
    assert fetched.stat().st_nlink == 3 and there.cached_bytes() == 5000 + run.stat().st_size


def test_the_read_cache_drops_the_least_recently_used_first(s3_env, settings, tmp_path):
    here = store()
    for name in ("one", "two", "three"):
        here.publish(_folder(settings.ARTIFACTS_ROOT, f"models/{name}",
                             {"w.bin": os.urandom(1000)}))  # fmt: skip
    there = _other_host(here, tmp_path / "host-b", max_bytes=2500)
    root = there.local_root
    there.ensure(root / "models/one")
    there.ensure(root / "models/two")
    there.ensure(root / "models/one")  # used again: now two is the least recently used
    there.ensure(root / "models/three")
    assert (root / "models/one").exists() and (root / "models/three").exists()
    assert not (root / "models/two").exists() and there.cached_bytes() <= 2500
    there.ensure(root / "models/two")  # dropped here, still in the bucket
    assert (root / "models/two/w.bin").stat().st_size == 1000


def test_a_delete_removes_the_artifact_from_the_bucket(s3_env, settings, tmp_path):
    from workers.common.store import artifact_delete

    here = store()
    folder = _folder(settings.ARTIFACTS_ROOT, "indexes/9", {"index.faiss": b"z" * 10})
    here.publish(folder)
    artifact_delete(folder)
    assert not folder.exists()
    listed = boto3.client("s3", endpoint_url=here.endpoint_url).list_objects_v2(
        Bucket=here.bucket, Prefix=here._object("indexes/9")
    )
    assert listed.get("KeyCount", 0) == 0
    with pytest.raises(ArtifactMissing):
        _other_host(here, tmp_path / "host-b").ensure(tmp_path / "host-b" / "indexes/9")


def test_without_a_bucket_nothing_changes(settings, monkeypatch):
    from workers.common import store as store_module

    monkeypatch.setenv("ARTIFACTS_ROOT", str(settings.ARTIFACTS_ROOT))
    store_module._store.cache_clear()
    assert store() is None
    path = settings.ARTIFACTS_ROOT / "x"
    assert store_module.artifact_ensure(path) == path
    store_module.artifact_publish(path)  # a no-op, even for a path that does not exist
    shutil.rmtree(settings.ARTIFACTS_ROOT, ignore_errors=True)


def test_a_run_resumes_on_another_host_from_its_last_published_checkpoint(s3_env, settings):
    from workers.common.checkpoints import last_checkpoint
    from workers.tasks.training import _fetch_last_checkpoint, _publish_checkpoint

    out = settings.ARTIFACTS_ROOT / "runs" / "4"
    for step in (2, 4):
        folder = _folder(out / "checkpoints", f"checkpoint-{step}",
                         {"trainer_state.json": b'{"global_step": %d}' % step,
                          "model.safetensors": os.urandom(100)})  # fmt: skip
        _publish_checkpoint(str(folder))
    # A checkpoint whose upload did not finish (no manifest) is not a resume point.
    cut = _folder(out / "checkpoints", "checkpoint-6", {"trainer_state.json": b"{}"})
    store().client.upload_file(str(cut / "trainer_state.json"), store().bucket,
                               store()._object("runs/4/checkpoints/checkpoint-6/x"))  # fmt: skip
    shutil.rmtree(out)  # the first host is gone; this one starts with nothing
    _fetch_last_checkpoint(out)
    assert last_checkpoint(out).endswith("checkpoint-4")
    assert (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_bytes() == (
        b'{"global_step": 4}'
    )
    assert not (out / "checkpoints" / "checkpoint-2").exists()  # only the newest is fetched


def test_what_a_host_wrote_is_never_dropped_by_its_read_cache(s3_env, settings, tmp_path):
    here = store()
    for name in ("one", "two"):
        here.publish(_folder(settings.ARTIFACTS_ROOT, f"models/{name}",
                             {"w.bin": os.urandom(1000)}))  # fmt: skip
    there = _other_host(here, tmp_path / "host-b", max_bytes=1500)
    mine = _folder(there.local_root, "indexes/mine", {"index.faiss": os.urandom(4000)})
    there.publish(mine)
    there.ensure(there.local_root / "models/one")
    there.ensure(there.local_root / "models/two")  # over the limit: "one" goes, "mine" stays
    assert mine.is_dir() and (mine / "index.faiss").stat().st_size == 4000
    assert not (there.local_root / "models/one").exists()
    assert not list(there.local_root.glob("models/.evict-*"))  # nothing left half-deleted


def test_a_search_process_takes_the_buckets_manifest_only_when_it_is_newer(tmp_path):
    import json as json_module

    from workers.serving.server import SearchState

    state = SearchState(manifest=tmp_path / "serving" / "deployments.json")
    older = json_module.dumps({"written_at": 1.0, "deployments": {"1/a": {}}}).encode()
    newer = json_module.dumps({"written_at": 2.0, "deployments": {"1/b": {}}}).encode()
    assert state.take_manifest(older)  # a replica with no manifest of its own
    assert state.take_manifest(newer)
    assert not state.take_manifest(older)  # the web wrote a later one here: kept
    assert json_module.loads(state.manifest.read_text())["deployments"] == {"1/b": {}}
