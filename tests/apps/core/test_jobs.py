"""The job-row lifecycle, on the concrete Evaluation job."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from apps.core.models import JobStatus
from apps.core.services import InvalidTransition, job_cancel
from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create
from workers.tasks.runtime import JobCancelled, ProgressReporter, job_claim, job_run, jobs_reap

pytestmark = pytest.mark.django_db


def test_claim_is_conditional(evaluation):
    first = job_claim(model=Evaluation, pk=evaluation.pk)
    assert first is not None and first.status == JobStatus.RUNNING and first.started_at
    # A redelivered message finds the row running and does nothing.
    assert job_claim(model=Evaluation, pk=evaluation.pk) is None


def test_claim_refuses_a_cancelled_row(evaluation):
    job_cancel(job=evaluation)
    assert evaluation.status == JobStatus.CANCELLED
    assert job_claim(model=Evaluation, pk=evaluation.pk) is None


def test_enqueue_happens_after_commit(
    team, tiny_registered_model, tiny_version, django_capture_on_commit_callbacks
):
    with mock.patch("workers.tasks.evaluation.evaluate.apply_async") as apply_async:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            evaluation = evaluation_create(
                team=team, model=tiny_registered_model, dataset_version=tiny_version, split="test"
            )
        assert apply_async.call_count == 0  # nothing is sent inside the transaction
        assert len(callbacks) == 1
        callbacks[0]()
    apply_async.assert_called_once()
    kwargs = apply_async.call_args.kwargs
    assert kwargs["args"] == [evaluation.pk]  # ids only through the queue
    evaluation.refresh_from_db()
    assert kwargs["task_id"] == evaluation.celery_task_id


def test_progress_is_throttled_and_reads_cancel(evaluation):
    job = job_claim(model=Evaluation, pk=evaluation.pk)
    reporter = ProgressReporter(job, interval=3600)
    reporter("encoding documents", 0, 100)  # stage change: written
    reporter("encoding documents", 50, 100)  # within the interval: skipped
    evaluation.refresh_from_db()
    assert (evaluation.stage, evaluation.progress_done, evaluation.progress_total) == (
        "encoding documents",
        0,
        100,
    )
    reporter("encoding documents", 100, 100)  # end of a stage: always written
    evaluation.refresh_from_db()
    assert evaluation.progress_done == 100 and evaluation.progress == 1.0

    job_cancel(job=evaluation)
    assert evaluation.status == JobStatus.RUNNING and evaluation.cancel_requested
    with pytest.raises(JobCancelled):
        reporter("searching", 0, 1)


def test_job_run_records_success_failure_and_cancel(team, tiny_registered_model, tiny_version):
    def make():
        e = evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
        return job_claim(model=Evaluation, pk=e.pk)

    ok = make()
    job_run(job=ok, work=lambda report: {"metrics": {"ndcg@10": 0.5}})
    ok.refresh_from_db()
    assert ok.status == JobStatus.SUCCEEDED and ok.metrics == {"ndcg@10": 0.5} and ok.finished_at

    bad = make()

    def boom(report):
        raise RuntimeError("CUDA out of memory\nmore detail")

    job_run(job=bad, work=boom)
    bad.refresh_from_db()
    assert bad.status == JobStatus.FAILED
    assert bad.human_error == "RuntimeError: CUDA out of memory"
    assert "Traceback" in bad.error

    cancelled = make()

    def cancel_midway(report):
        Evaluation.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
        report("encoding documents", 1, 10)

    job_run(job=cancelled, work=cancel_midway)
    cancelled.refresh_from_db()
    assert cancelled.status == JobStatus.CANCELLED


def test_cancel_of_finished_job_is_refused(evaluation):
    Evaluation.objects.filter(pk=evaluation.pk).update(status=JobStatus.SUCCEEDED)
    evaluation.refresh_from_db()
    with pytest.raises(InvalidTransition):
        job_cancel(job=evaluation)


def test_reaper_fails_only_stale_running_rows(team, tiny_registered_model, tiny_version):
    def running(age_s):
        e = evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
        job_claim(model=Evaluation, pk=e.pk)
        Evaluation.objects.filter(pk=e.pk).update(
            heartbeat_at=timezone.now() - timedelta(seconds=age_s)
        )
        return e

    stale, fresh = running(3600), running(5)
    assert jobs_reap(stale_after=600) == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == JobStatus.FAILED and "stopped reporting" in stale.human_error
    assert fresh.status == JobStatus.RUNNING
    assert jobs_reap(stale_after=600) == 0


def test_eta_from_stage_rate(evaluation):
    now = timezone.now()
    evaluation.status = JobStatus.RUNNING
    evaluation.stage_started_at = now - timedelta(seconds=10)
    evaluation.heartbeat_at = now
    evaluation.progress_done, evaluation.progress_total = 100, 600
    assert evaluation.eta_seconds == pytest.approx(50.0)


def test_a_reaped_row_is_not_revived_by_its_late_worker(evaluation):
    from workers.tasks.runtime import JobLost

    job = job_claim(model=Evaluation, pk=evaluation.pk)
    Evaluation.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)  # the reaper got it
    reporter = ProgressReporter(job, interval=0)
    with pytest.raises(JobLost):
        reporter("encoding documents", 5, 10)
    job_run(job=job, work=lambda report: {"metrics": {"ndcg@10": 1.0}})
    evaluation.refresh_from_db()
    assert evaluation.status == JobStatus.FAILED and evaluation.metrics == {}
    assert evaluation.progress_done == 0


def test_heartbeat_keeps_a_silent_step_alive(evaluation, settings, transactional_db):
    import time as _time

    from workers.tasks.runtime import Heartbeat

    job = job_claim(model=Evaluation, pk=evaluation.pk)
    old = timezone.now() - timedelta(hours=1)
    Evaluation.objects.filter(pk=job.pk).update(heartbeat_at=old)
    with Heartbeat(job, interval=0.05):
        _time.sleep(0.4)
    evaluation.refresh_from_db()
    assert evaluation.heartbeat_at > old + timedelta(minutes=59)


def test_a_failed_enqueue_fails_the_row(
    team, tiny_registered_model, tiny_version, django_capture_on_commit_callbacks
):
    with mock.patch(
        "workers.tasks.evaluation.evaluate.apply_async", side_effect=ConnectionError("broker down")
    ):
        with django_capture_on_commit_callbacks(execute=True):
            evaluation = evaluation_create(
                team=team, model=tiny_registered_model, dataset_version=tiny_version, split="test"
            )
    evaluation.refresh_from_db()
    assert evaluation.status == JobStatus.FAILED
    assert "queue is unreachable" in evaluation.human_error


def test_reaper_requeues_a_resumable_run_until_its_attempts_are_spent(
    team, tiny_registered_model, tiny_version, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from apps.runs.models import TrainingRun
    from workers.tasks.runtime import jobs_reap

    sent = []
    monkeypatch.setattr(
        "celery.current_app.send_task",
        lambda name, args, queue, task_id=None: sent.append((name, args, queue)),
    )
    old = timezone.now() - timedelta(hours=2)
    run = TrainingRun.objects.create(
        team=team, name="r", base_model=tiny_registered_model, train_version=tiny_version,
        status="running", heartbeat_at=old, started_at=old,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_reap(stale_after=60) == 1
    run.refresh_from_db()
    assert run.status == "pending" and run.attempts == 1
    assert sent == [("workers.tasks.training.train", [run.pk], "gpu")]
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", heartbeat_at=old, attempts=TrainingRun.max_attempts
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_reap(stale_after=60) == 1
    run.refresh_from_db()
    assert run.status == "failed" and len(sent) == 1
