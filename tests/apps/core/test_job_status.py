"""Every job page shows its row through one partial (templates/core/_job_status.html): the same
status label, progress, count, Cancel and errors, while the page polls; each kind with its own
unit, waiting line and extras."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db


@pytest.fixture
def jobs(team, owner, tiny_registered_model, tiny_version, evaluation, tmp_path):
    """One row of each kind with its page, its polling element and its cancel view."""
    from apps.datasets.models import CurationJob, IngestJob
    from apps.indexes.models import IndexBuild
    from apps.runs.models import TrainingRun

    build = IndexBuild.objects.create(
        team=team, model=tiny_registered_model, dataset_version=tiny_version, index_type="flat"
    )
    run = TrainingRun.objects.create(
        team=team, name="run", base_model=tiny_registered_model, train_version=tiny_version
    )
    curation = CurationJob.objects.create(
        team=team, kind="semdedup", source=tiny_version, model=tiny_registered_model
    )
    ingest = IngestJob.objects.create(
        team=team, dataset_name="up", upload_dir=str(tmp_path / "up"), file_names=["pairs.jsonl"]
    )
    return {
        "evaluation": (
            evaluation,
            "runs:evaluation",
            "evaluation-status",
            "runs:evaluation_cancel",
        ),
        "index": (build, "indexes:detail", "index-status", "indexes:cancel"),
        "training": (run, "runs:training", "run-live", "runs:training_cancel"),
        "curation": (curation, "datasets:curation", "curation-status", "datasets:curation_cancel"),
        "ingest": (ingest, "datasets:ingest", "ingest-status", None),
    }


KINDS = ["evaluation", "index", "training", "curation", "ingest"]


TARGETS = {"runs:evaluation": "evaluation-status", "indexes:detail": "index-status",
           "runs:training": "run-live", "datasets:curation": "curation-status",
           "datasets:ingest": "ingest-status"}  # fmt: skip


def fragment(client, view: str, job) -> str:
    # As htmx polls: HX-Target names the polling element.
    response = client.get(reverse(view, args=[job.pk]), HTTP_HX_REQUEST="true",
                          HTTP_HX_TARGET=TARGETS[view])  # fmt: skip
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("kind", KINDS)
def test_a_running_job_polls_and_shows_progress_count_and_cancel(client, owner, jobs, kind):
    job, view, element, cancel = jobs[kind]
    now = timezone.now()
    stage = {"evaluation": "encoding documents", "index": "building"}.get(kind, "working")
    type(job).objects.filter(pk=job.pk).update(
        status="running",
        stage=stage,
        progress_done=250,
        progress_total=1000,
        progress=0.25,
        stage_started_at=now - timedelta(seconds=10),
        heartbeat_at=now,
    )
    client.force_login(owner)
    body = fragment(client, view, job)
    assert f'id="{element}"' in body and 'hx-trigger="every 2s"' in body
    assert 'id="status-label">Running<' in body and f"· {stage}" in body
    assert '<progress id="progress" max="100" value="25">' in body
    count = {
        "evaluation": "250 / 1,000 documents (25%)",
        "index": "250 / 1,000 vectors added (25%)",
        "training": "step 250 / 1,000 (25%)",
        "curation": "250 / 1,000 (25%)",
        "ingest": "250 / 1,000 documents (25%)",
    }[kind]
    assert count in body and "about 30 s left" in body
    if cancel:
        url = reverse(cancel, args=[job.pk])
        assert f'hx-post="{url}" hx-target="#{element}"' in body and ">Cancel</button>" in body
    else:
        assert ">Cancel</button>" not in body


@pytest.mark.parametrize("kind", KINDS)
def test_a_pending_job_says_what_it_waits_for(client, owner, jobs, kind):
    job, view, _, _ = jobs[kind]
    client.force_login(owner)
    body = fragment(client, view, job)
    waiting = {"index": "Waiting for a worker on the index queue…"}
    waiting["training"] = "Waiting for a training worker (the gpu queue)…"
    assert waiting.get(kind, "Waiting for a worker…") in body
    assert '<progress id="progress"></progress>' in body


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_job_stops_polling_and_shows_the_plain_error(client, owner, jobs, kind):
    job, view, _, _ = jobs[kind]
    type(job).objects.filter(pk=job.pk).update(
        status="failed", human_error="The model folder is gone.", error="Traceback: /srv/x"
    )
    client.force_login(owner)
    body = fragment(client, view, job)
    assert "hx-trigger" not in body and 'id="progress"' not in body
    assert '<p class="error" id="human-error">The model folder is gone.</p>' in body
    assert "Traceback" not in body  # the log is for staff only
    owner.is_staff = True
    owner.save()
    assert "Traceback: /srv/x" in fragment(client, view, job)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancel_asked_for_shows_cancelling_and_a_cancelled_job_its_note(
    client, owner, jobs, kind
):
    job, view, _, _ = jobs[kind]
    type(job).objects.filter(pk=job.pk).update(status="running", cancel_requested=True)
    client.force_login(owner)
    body = fragment(client, view, job)
    assert "Cancelling…" in body and ">Cancel</button>" not in body
    type(job).objects.filter(pk=job.pk).update(status="cancelled", human_error="Cancelled by you.")
    body = fragment(client, view, job)
    assert '<p class="muted">Cancelled by you.</p>' in body and "Cancelling…" not in body


def test_a_viewer_sees_the_status_but_no_cancel(client, viewer, jobs):
    job, view, _, _ = jobs["evaluation"]
    type(job).objects.filter(pk=job.pk).update(status="running")
    client.force_login(viewer)
    body = fragment(client, view, job)
    assert 'id="status-label">Running<' in body and ">Cancel</button>" not in body


def test_kind_extras_beside_the_status_and_count(client, owner, jobs, tmp_path):
    client.force_login(owner)
    curation = jobs["curation"][0]
    assert 'id="review-label"' not in fragment(client, "datasets:curation", curation)
    type(curation).objects.filter(pk=curation.pk).update(status="succeeded", review="pending")
    body = fragment(client, "datasets:curation", curation)
    assert 'id="review-label">Waiting for review<' in body
    run = jobs["training"][0]
    type(run).objects.filter(pk=run.pk).update(
        status="succeeded",
        progress_done=8,
        progress_total=8,
        attempts=1,
        log=[{"step": 8, "epoch": 1.0, "loss": 0.5, "samples_per_s": 12.34}],
    )
    body = fragment(client, "runs:training", run)
    # A run keeps its last step and speed once it ended.
    assert "step 8 / 8 (100%) · epoch 1.00 · 12.3 samples/s" in body and "resumed 1×" in body
    ingest = jobs["ingest"][0]
    (tmp_path / "up" / "incoming").mkdir(parents=True)
    (tmp_path / "up" / "incoming" / "pairs.jsonl").write_text('{"anchor": "a", "positive": "b"}\n')
    type(ingest).objects.filter(pk=ingest.pk).update(awaiting_confirmation=True)
    body = fragment(client, "datasets:ingest", ingest)
    assert "Check the columns before importing" in body
    assert 'id="progress"' not in body and "Waiting for a worker" not in body


def test_every_job_page_draws_its_status_through_the_one_partial():
    from tests.conftest import REPO

    for name in ("runs/evaluation", "runs/training", "indexes/detail", "datasets/curation",
                 "datasets/ingest"):  # fmt: skip
        text = (REPO / "templates" / f"{name}.html").read_text()
        assert '{% include "core/_job_status.html"' in text, name
        assert 'id="status-label"' not in text and 'id="human-error"' not in text, name
