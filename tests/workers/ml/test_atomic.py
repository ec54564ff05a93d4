"""Artifact files are all or nothing, and a full disk is one plain sentence on the page."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from tests.workers.ml.disk_full import fill_disk_on
from workers.common.atomic import (
    DISK_FULL_MESSAGE,
    atomic_path,
    atomic_write,
    human_message_for,
    is_disk_full,
)

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_writes_the_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.json", "w") as fh:
        fh.write(json.dumps({"é": 1}))
    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"é": 1}
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]
    # The umask applies as for a plain open() (a temp file would be 0600).
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_write_that_fails_midway_leaves_neither_the_file_nor_a_temp(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught:
        with atomic_write(tmp_path / "run.trec", "w") as fh:
            fh.write("q1 Q0 d1 1 0.5 tag\n" * 1000)
            fh.flush()  # some bytes really are on disk
            assert any(p.name.endswith("run.trec") for p in tmp_path.iterdir())
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    target.write_text('{"old": true}')
    with pytest.raises(OSError):
        with atomic_write(target, "w") as fh:
            fh.write('{"new": ')
            raise ENOSPC
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_a_full_disk_inside_the_file_object_is_cleaned_up(tmp_path: Path, monkeypatch) -> None:
    hits = fill_disk_on(monkeypatch, "vectors.npy", room=100)
    with pytest.raises(OSError) as caught:
        with atomic_write(tmp_path / "vectors.npy", "wb") as fh:
            np.save(fh, np.ones((100, 8), dtype=np.float32))
    assert hits and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_failing_flush_or_fsync_is_cleaned_up(tmp_path: Path, monkeypatch) -> None:
    def no_room(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("workers.common.atomic.os.fsync", no_room)
    with pytest.raises(OSError):
        with atomic_write(tmp_path / "ids.json", "w") as fh:
            fh.write("[]")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_for_writers_that_need_a_file_name(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "v.npy") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy"
        np.save(str(tmp), np.arange(3))  # numpy keeps a name that ends with .npy
    assert np.load(tmp_path / "v.npy").tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["v.npy"]

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "index.faiss") as tmp:
            tmp.write_bytes(b"IxF" * 100)  # the library wrote part of the file, then failed
            raise RuntimeError(
                f"Error in faiss::FileIOWriter: write error in {tmp}: 0 != 4 "
                "(No space left on device)"
            )
    assert [p.name for p in tmp_path.iterdir()] == ["v.npy"]


def test_trec_run_on_a_full_disk_leaves_no_partial_run(tmp_path: Path, monkeypatch) -> None:
    from workers.ml.metrics import write_trec_run

    run = {f"q{i}": {f"d{j}": float(j) for j in range(50)} for i in range(20)}
    hits = fill_disk_on(monkeypatch, "run.trec", room=500)
    with pytest.raises(OSError) as caught:
        write_trec_run(run=run, path=tmp_path / "run.trec", tag="t")
    assert hits and is_disk_full(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("index_type", ["flat", "binary"])
def test_index_build_on_a_full_disk_leaves_no_folder(tmp_path: Path, monkeypatch,
                                                     index_type: str) -> None:  # fmt: skip
    from workers.ml.indexing import IndexSpec, build_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    hits = fill_disk_on(monkeypatch, "index.faiss", room=100)  # the index is larger
    with pytest.raises(OSError) as caught:
        build_index(vectors=vectors, doc_ids=[f"d{i}" for i in range(200)],
                    spec=IndexSpec(index_type), out_dir=tmp_path / "indexes" / "7")  # fmt: skip
    # The OSError itself, through faiss: not a RuntimeError naming the server path.
    assert hits and caught.value.errno == errno.ENOSPC
    assert list((tmp_path / "indexes").iterdir()) == []


def test_index_files_written_through_python_still_load(tmp_path: Path) -> None:
    from workers.ml.indexing import IndexSpec, LoadedIndex, build_index

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(300)]
    for name, spec in {
        "pca": IndexSpec("flat", pca_dim=8),
        "bin": IndexSpec("binary", rescore=5),
    }.items():
        build_index(vectors=vectors, doc_ids=ids, spec=spec, out_dir=tmp_path / name,
                    metadata=[{"n": i % 3} for i in range(300)])  # fmt: skip
        loaded = LoadedIndex.load(tmp_path / name)
        _, found = loaded.search(vectors[:4], 3)
        assert len(found) == 4
        assert not [p for p in (tmp_path / name).iterdir() if p.name.startswith(".")]


def test_embedding_cache_on_a_full_disk_keeps_no_entry(tmp_path: Path, monkeypatch) -> None:
    from workers.ml.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    key = "ab" * 32
    fill_disk_on(monkeypatch, "vectors.npy", room=100)
    with pytest.raises(OSError):
        cache.put(key, np.ones((50, 8), dtype=np.float32), [str(i) for i in range(50)])
    assert cache.get(key) is None
    assert list((tmp_path / "ab").iterdir()) == []


def test_a_checkpoint_with_a_cut_short_state_file_is_not_resumed(tmp_path: Path) -> None:
    from workers.ml.training.trainer import CHECKPOINTS, last_checkpoint

    good = tmp_path / CHECKPOINTS / "checkpoint-10"
    cut = tmp_path / CHECKPOINTS / "checkpoint-20"
    for folder in (good, cut):
        folder.mkdir(parents=True)
    (good / "trainer_state.json").write_text('{"global_step": 10}')
    (cut / "trainer_state.json").write_text('{"global_step": 2')  # the disk filled up here
    assert last_checkpoint(tmp_path) == str(good)


# --- the page message --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device", "/srv/embedhub/artifacts/e/1/run.trec"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        RuntimeError(
            "Error in void faiss::write_index(...) at /project/faiss/impl/index_write.cpp:"
            "600: write error in /srv/art/indexes/3/index.faiss: 0 != 4 (No space left on device)"
        ),
    ],
)
def test_a_full_disk_is_one_fixed_sentence(exc: BaseException) -> None:
    assert human_message_for(exc) == DISK_FULL_MESSAGE


def test_a_full_disk_behind_another_exception_is_still_a_full_disk() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("could not save the results") from inner
    except ValueError as outer:
        assert human_message_for(outer) == DISK_FULL_MESSAGE


def test_other_os_errors_show_their_reason_and_no_server_path() -> None:
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/embedhub/artifacts/x")
    reason = "Could not read or write an artifact file (Permission denied)."
    assert human_message_for(denied) == reason
    exists = FileExistsError("/srv/embedhub/artifacts/indexes/3 exists and is not an empty folder")
    assert human_message_for(exists) == "FileExistsError: …/3 exists and is not an empty folder"
    opened = RuntimeError("could not open /srv/art/indexes/3/index.faiss for writing: EACCES")
    assert "/srv" not in human_message_for(opened) and "index.faiss" in human_message_for(opened)


def test_other_messages_keep_their_meaning() -> None:
    class Human(Exception):
        human_message = "2 problems, the first: qrels/test.tsv:2: unknown query"

    assert human_message_for(Human()) == Human.human_message
    oom = RuntimeError("CUDA out of memory")
    assert human_message_for(oom) == "RuntimeError: CUDA out of memory"
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert human_message_for(refused) == "ConnectionRefusedError: [Errno 111] Connection refused"
    url = ValueError("GET http://hub:8080/api/models/x/y: 404, ratio 1/2")
    assert human_message_for(url) == f"ValueError: {url}"
    assert os.sep == "/"  # the path rule is POSIX's, as the servers are
