"""An evaluation crosses the real queue: Redis broker, a real Celery worker, PostgreSQL rows."""

import pytest

from apps.core.models import JobStatus
from apps.runs.models import Evaluation, QueryResult
from apps.runs.services import evaluation_create
from tests.support.worker import wait_for

pytestmark = pytest.mark.worker


def test_evaluation_runs_on_a_real_worker(
    celery_worker_process, team, tiny_registered_model, tiny_version, settings
):
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    evaluation = evaluation_create(
        team=team, model=tiny_registered_model, dataset_version=tiny_version, split="test"
    )
    done = wait_for(
        lambda: Evaluation.objects.filter(pk=evaluation.pk, status__in=Evaluation.TERMINAL).first(),
        timeout=180,
        what="the worker to finish the evaluation",
        log=celery_worker_process.log,
    )
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.started_at and done.finished_at and done.celery_task_id
    assert set(done.metrics) >= {"ndcg@10", "mrr@10", "recall@100"}
    assert QueryResult.objects.filter(evaluation=done).count() == 3  # test split judges 3 queries
    run_lines = open(done.run_file).read().splitlines()
    assert run_lines and all(len(line.split()) == 6 for line in run_lines)


def test_redelivered_message_is_a_no_op(
    celery_worker_process, team, tiny_registered_model, tiny_version
):
    from workers.tasks.evaluation import evaluate

    evaluation = evaluation_create(
        team=team, model=tiny_registered_model, dataset_version=tiny_version, split="test"
    )
    wait_for(
        lambda: Evaluation.objects.filter(pk=evaluation.pk, status="succeeded").exists(),
        timeout=180,
        what="the first run",
        log=celery_worker_process.log,
    )
    finished = Evaluation.objects.get(pk=evaluation.pk).finished_at
    evaluate.apply_async(args=[evaluation.pk])  # the same message again
    marker = evaluate.apply_async(args=[-1])  # a later message, to know the first was consumed
    wait_for(
        lambda: marker.id in celery_worker_process.log.read_text(),
        timeout=60,
        what="the worker to take the later message",
        log=celery_worker_process.log,
    )
    assert Evaluation.objects.get(pk=evaluation.pk).finished_at == finished


def test_cancel_stops_a_running_evaluation_within_seconds(
    celery_worker_process, team, tiny_registered_model, tmp_path
):
    import time

    from apps.core.services import job_cancel
    from apps.datasets.services import dataset_import_beir
    from tests.conftest import write_beir

    words = "cats dogs python rust coffee tea moon mars planet drink language".split()
    corpus = [
        {"_id": f"d{i}", "title": "", "text": " ".join(words * 6) + f" {i}"} for i in range(3000)
    ]
    folder = write_beir(
        tmp_path / "big",
        corpus=corpus,
        queries=[{"_id": "q", "text": "tea"}],
        qrels={"test": [("q", "d1", 1)]},
    )
    version = dataset_import_beir(team=team, name="big", path=folder).version
    evaluation = evaluation_create(
        team=team, model=tiny_registered_model, dataset_version=version, split="test"
    )
    wait_for(
        lambda: Evaluation.objects.filter(
            pk=evaluation.pk, stage="encoding documents", progress_done__gt=0
        ).exists(),
        timeout=120,
        what="encoding to start",
        log=celery_worker_process.log,
    )
    asked = time.monotonic()
    job_cancel(job=evaluation)
    done = wait_for(
        lambda: Evaluation.objects.filter(pk=evaluation.pk, status__in=Evaluation.TERMINAL).first(),
        timeout=30,
        what="the cancel",
        log=celery_worker_process.log,
    )
    assert done.status == JobStatus.CANCELLED
    assert time.monotonic() - asked < 5
    assert done.progress_done < 3000 and not done.metrics
    assert not QueryResult.objects.filter(evaluation=done).exists()
