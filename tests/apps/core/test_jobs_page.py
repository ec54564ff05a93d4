"""Queues you can see: a pending job says how many wait before it in its queue (every team's
count, no other team's job named), and the Jobs page lists the team's waiting and running
jobs of every kind with their queue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create

pytestmark = pytest.mark.django_db

TASK = "workers.tasks.evaluation.evaluate"


def _queued(evaluation, minutes_ago: int, status: str = "pending"):
    Evaluation.objects.filter(pk=evaluation.pk).update(
        celery_task_name=TASK, status=status,
        queued_at=timezone.now() - timedelta(minutes=minutes_ago),
    )  # fmt: skip
    evaluation.refresh_from_db()
    return evaluation


def test_a_pending_job_knows_its_place_and_the_jobs_page_lists_the_teams(
    client, member, team, other_team, tiny_registered_model, tiny_version, settings
):
    from apps.datasets.services import dataset_import_beir
    from apps.registry.services import embedding_model_register
    from tests.conftest import write_beir

    def make(t, model, version, split):
        return evaluation_create(team=t, model=model, dataset_version=version, split=split,
                                 precision="fp32", enqueue=False)  # fmt: skip

    running = _queued(make(team, tiny_registered_model, tiny_version, "test"), 30, "running")
    # Another team's job waits first: it counts, unnamed.
    theirs_version = dataset_import_beir(
        team=other_team, name="t", path=write_beir(Path(settings.ARTIFACTS_ROOT) / "b")
    ).version
    theirs_model = embedding_model_register(team=other_team, name="m",
                                            path=tiny_registered_model.path)  # fmt: skip
    _queued(make(other_team, theirs_model, theirs_version, "test"), 20)
    mine = _queued(make(team, tiny_registered_model, tiny_version, "train"), 10)
    client.force_login(member)
    page = client.get(f"/runs/evaluations/{mine.pk}/").content.decode()
    assert 'id="queue-place"' in page
    assert f"1 job ahead in the <code>{settings.ENCODE_QUEUE}</code> queue, 1 running" in page
    jobs = client.get("/jobs/").content.decode()
    assert (
        f'data-job="Evaluation {mine.pk}"' in jobs and f'data-job="Evaluation {running.pk}"' in jobs
    )
    assert jobs.count("data-job=") == 2  # the other team's job is not listed
    assert "1 ahead, 1 running" in jobs
    Evaluation.objects.update(status="succeeded")
    assert 'id="no-jobs"' in client.get("/jobs/").content.decode()
