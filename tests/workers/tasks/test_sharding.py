"""A large corpus encode split into shards: the merged vectors are the bytes of a one-worker
encode, a failed shard is retried, a lost one taken back, a cancel stops everything and leaves
no rows or files. Here the splitting job encodes every shard itself (no message is sent); the
worker tier runs it with two real workers (test_sharding_workers.py)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.support.tiny_model import DEFAULT_SENTENCES
from workers.tasks import sharding

pytestmark = pytest.mark.django_db


def corpus(n: int = 700) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choices(DEFAULT_SENTENCES, k=rng.randint(1, 4))) for _ in range(n)]


@pytest.fixture
def spec(tiny_model_path):
    from workers.ml.evaluate import EncoderSpec

    return EncoderSpec(path=str(tiny_model_path), layout="sentence-transformers",
                       pooling="mean", normalize=True, max_seq_length=64)  # fmt: skip


@pytest.fixture
def encoder(spec):
    return spec.load()


@pytest.fixture
def sharded(settings, monkeypatch):
    settings.ENCODE_SHARD_MIN_DOCS = 300
    settings.ENCODE_SHARD_DOCS = 1  # rounded up to one chunk: 256 texts per shard
    sent = []
    monkeypatch.setattr(sharding, "_dispatch", lambda run, count: sent.append((run, count)))
    return sent


def one_worker(encoder, texts, spec):
    from workers.ml.encode import encode_texts

    return encode_texts(encoder=encoder, texts=texts, normalize=True, batch_size=32,
                        precision=spec.precision)  # fmt: skip


def nothing_left(settings) -> bool:
    from apps.core.models import EncodeShard

    folder = Path(settings.ARTIFACTS_ROOT) / "shards"
    return not EncodeShard.objects.exists() and not any(folder.glob("*/*"))


def test_shards_merge_to_the_bytes_of_a_one_worker_encode(spec, encoder, sharded, settings):
    texts = corpus()
    progress = []
    encode = sharding.document_encoder(spec=spec, check=lambda: None)
    vectors = encode(encoder, texts, 32, lambda done, total: progress.append((done, total)))
    assert [count for _, count in sharded] == [3]  # 256 + 256 + 188
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, one_worker(encoder, texts, spec))
    assert progress[0] == (0, 700) and progress[-1] == (700, 700)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert nothing_left(settings)


def test_below_the_size_setting_nothing_is_sharded(spec, encoder, sharded):
    texts = corpus(200)
    vectors = sharding.document_encoder(spec=spec, check=lambda: None)(
        encoder, texts, 32, lambda d, t: None
    )
    assert sharded == [] and np.array_equal(vectors, one_worker(encoder, texts, spec))


def test_a_failed_shard_is_retried_and_one_failing_every_time_is_named(
    spec, encoder, sharded, settings, monkeypatch
):
    import workers.ml.encode

    real = workers.ml.encode.encode_texts
    calls = {"n": 0}

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second shard's first attempt
            raise RuntimeError("out of memory (simulated)")
        return real(**kwargs)

    monkeypatch.setattr(workers.ml.encode, "encode_texts", flaky)
    texts = corpus()
    encode = sharding.document_encoder(spec=spec, check=lambda: None)
    vectors = encode(encoder, texts, 32, lambda d, t: None)
    assert calls["n"] == 4  # three shards, one of them twice
    monkeypatch.setattr(workers.ml.encode, "encode_texts", real)
    assert np.array_equal(vectors, one_worker(encoder, texts, spec))
    assert nothing_left(settings)

    def broken(**kwargs):
        raise RuntimeError("CUDA error: device-side assert (simulated)")

    monkeypatch.setattr(workers.ml.encode, "encode_texts", broken)
    with pytest.raises(sharding.ShardFailed, match=r"shard 1 of 3 failed 3 times: .*simulated"):
        encode(encoder, texts, 32, lambda d, t: None)
    assert nothing_left(settings)


def test_a_shard_whose_worker_died_is_taken_back(spec, encoder, settings, monkeypatch):
    from django.utils import timezone

    from apps.core.models import EncodeShard

    settings.ENCODE_SHARD_MIN_DOCS, settings.ENCODE_SHARD_DOCS = 300, 1
    settings.ENCODE_SHARD_STALE_S = 60

    def another_worker_takes_one_and_dies(run, count):
        EncodeShard.objects.filter(run=run, index=1).update(
            status="running", worker="elsewhere:1", attempts=1,
            heartbeat_at=timezone.now() - timedelta(minutes=5),
        )  # fmt: skip

    monkeypatch.setattr(sharding, "_dispatch", another_worker_takes_one_and_dies)
    texts = corpus()
    vectors = sharding.document_encoder(spec=spec, check=lambda: None)(
        encoder, texts, 32, lambda d, t: None
    )
    assert np.array_equal(vectors, one_worker(encoder, texts, spec))


def test_cancel_stops_every_shard_and_leaves_nothing(spec, encoder, sharded, settings):
    from apps.core.models import EncodeShard
    from workers.tasks.runtime import JobCancelled

    seen = []

    def check():
        seen.append(list(EncodeShard.objects.values_list("status", flat=True)))
        if "done" in seen[-1]:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        sharding.document_encoder(spec=spec, check=check)(encoder, corpus(), 32,
                                                          lambda d, t: None)  # fmt: skip
    assert seen[-1].count("done") == 1 and "pending" in seen[-1]
    assert nothing_left(settings)


def test_a_shard_message_for_an_ended_run_does_nothing():
    assert sharding.encode_shard.run("0" * 32, 0) == 0


def test_curation_encodes_in_shards_too(team, tiny_registered_model, tiny_version, sharded,
                                        settings):  # fmt: skip
    """Semantic dedup over the same documents, sharded and not: the same result."""
    from apps.datasets.curation import curation_create
    from apps.datasets.models import CurationJob
    from tests.apps.datasets.test_curation import run

    def dedup() -> CurationJob:
        job = curation_create(team=team, source=tiny_version, kind="semdedup",
                              model=tiny_registered_model, enqueue=False,
                              params={"threshold": 0.6, "seed": 1})  # fmt: skip
        return run(job)

    settings.ENCODE_SHARD_MIN_DOCS = 0
    whole = dedup()
    import shutil

    shutil.rmtree(Path(settings.ARTIFACTS_ROOT) / "embeddings")  # encode again, not a cache hit
    settings.ENCODE_SHARD_MIN_DOCS = 2  # the 8 documents are one shard
    sharded_job = dedup()
    assert [count for _, count in sharded] == [1]
    assert whole.status == sharded_job.status == "succeeded", sharded_job.error
    keep = ("items", "removed", "kept", "examples")
    assert {k: whole.result[k] for k in keep} == {k: sharded_job.result[k] for k in keep}


def test_a_worker_that_cannot_load_the_model_leaves_the_shards(spec, settings):
    from apps.core.models import EncodeShard

    bad = {**sharding.asdict(spec), "path": "/nonexistent/model"}
    EncodeShard.objects.create(run="r" * 32, index=0, size=3, encoder=bad, batch_size=32)
    assert sharding.encode_shard.run("r" * 32, 0) == 0
    assert EncodeShard.objects.get().status == "pending"  # for another worker to take


def test_runs_older_than_any_job_are_swept(spec, settings):
    from django.utils import timezone

    from apps.core.models import EncodeShard

    for run, age in (("a" * 32, timedelta(days=2)), ("b" * 32, timedelta(minutes=1))):
        sharding.shard_folder(run).mkdir(parents=True)
        row = EncodeShard.objects.create(run=run, index=0, size=1, batch_size=32,
                                         encoder=sharding.asdict(spec))  # fmt: skip
        EncodeShard.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
    assert sharding.shards_sweep(older_than_s=24 * 3600) == 1
    assert list(EncodeShard.objects.values_list("run", flat=True)) == ["b" * 32]
    assert not sharding.shard_folder("a" * 32).exists() and sharding.shard_folder("b" * 32).exists()
