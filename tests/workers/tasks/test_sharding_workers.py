"""A large corpus encoded by two real worker processes: both take shards, and the merged
vectors (what the embedding cache holds after the evaluation) equal a one-worker encode."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from apps.core.models import JobStatus
from apps.runs.models import Evaluation
from tests.conftest import write_beir
from tests.support.tiny_model import DEFAULT_SENTENCES
from tests.support.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.worker

DOCS = 4000  # 16 shards of 256


@pytest.fixture
def shard_env(monkeypatch):
    monkeypatch.setenv("ENCODE_SHARD_MIN_DOCS", "1000")
    monkeypatch.setenv("ENCODE_SHARD_DOCS", "256")


@pytest.fixture
def two_workers(shard_env, celery_worker_process, tmp_path):
    log = tmp_path / "worker2.log"
    second = start_worker(celery_worker_process.env, log, name="second@%h")
    second.log = log
    yield celery_worker_process, second
    stop_worker(second)


@pytest.fixture
def big_version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    rng = random.Random(0)
    corpus = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choices(DEFAULT_SENTENCES,
              k=rng.randint(1, 5)))} for i in range(DOCS)]  # fmt: skip
    queries = [{"_id": f"q{i}", "text": DEFAULT_SENTENCES[i]} for i in range(5)]
    qrels = {"test": [(f"q{i}", f"d{i}", 1) for i in range(5)]}
    folder = write_beir(tmp_path / "big", corpus=corpus, queries=queries, qrels=qrels)
    return dataset_import_beir(team=team, name="big", path=folder).version


def test_two_workers_share_the_shards_and_the_merge_equals_one_worker(
    two_workers, team, tiny_registered_model, big_version
):
    from apps.core.models import EncodeShard
    from apps.runs.services import evaluation_create
    from workers.ml.encode import document_text, encode_texts
    from workers.ml.evaluate import EncoderSpec
    from workers.tasks.encoding import embedding_cache

    first, second = two_workers
    evaluation = evaluation_create(team=team, model=tiny_registered_model,
                                   dataset_version=big_version, split="test")  # fmt: skip
    done = wait_for(
        lambda: Evaluation.objects.filter(pk=evaluation.pk, status__in=Evaluation.TERMINAL).first(),
        timeout=300,
        what="the sharded evaluation",
        log=first.log,
    )
    assert done.status == JobStatus.SUCCEEDED, done.error
    logs = first.log.read_text() + second.log.read_text()
    by = {}
    for worker in re.findall(r"Encoded shard \d+ of run \w+ \(\d+ texts\) in (\S+)", logs):
        by[worker] = by.get(worker, 0) + 1
    assert sum(by.values()) == DOCS // 256 + 1 and len(by) == 2, by  # both took shards
    assert not EncodeShard.objects.exists()
    vectors, ids = embedding_cache().get(done.embedding_key)
    m = tiny_registered_model
    rows = list(big_version.documents.order_by("pk").values_list("doc_id", "title", "text"))
    assert ids == [doc_id for doc_id, _, _ in rows]
    single = encode_texts(
        encoder=EncoderSpec(**m.encoder_settings()).load(),
        texts=[m.document_prefix + document_text(title, text) for _, title, text in rows],
        normalize=m.normalize,
    )  # fmt: skip
    assert np.array_equal(np.asarray(vectors), single)
