from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.runs.models import Evaluation, QueryResult
from apps.runs.services import evaluation_create
from workers.tasks.evaluation import evaluate
from workers.tasks.runtime import job_claim

pytestmark = pytest.mark.django_db


@pytest.fixture
def evaluation(team, tiny_registered_model, tiny_version, owner):
    return evaluation_create(
        team=team,
        model=tiny_registered_model,
        created_by=owner,
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )


def test_version_page_offers_the_team_models_preselected(
    client, owner, tiny_version, tiny_registered_model
):
    client.force_login(owner)
    body = client.get(reverse("datasets:version", args=[tiny_version.pk])).content.decode()
    assert f'<option value="{tiny_registered_model.pk}" selected>' in body
    assert "---------" not in body
    assert 'value="test" selected' in body


def test_running_fragment_polls_and_shows_documents_and_eta(client, owner, evaluation):
    job_claim(model=Evaluation, pk=evaluation.pk)
    now = timezone.now()
    Evaluation.objects.filter(pk=evaluation.pk).update(
        stage="encoding documents",
        progress_done=1000,
        progress_total=5183,
        progress=1000 / 5183,
        stage_started_at=now - timedelta(seconds=100),
        heartbeat_at=now,
    )
    client.force_login(owner)
    url = reverse("runs:evaluation", args=[evaluation.pk])
    fragment = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="evaluation-status")
    body = fragment.content.decode()
    assert fragment["Vary"] and "HX-Request" in fragment["Vary"]
    assert "<html" not in body and 'hx-trigger="every 2s"' in body
    assert "1,000 / 5,183 documents" in body and 'value="19"' in body
    assert "about 6 min 58 s left" in body


def test_finished_fragment_stops_polling_and_shows_metrics(client, owner, evaluation):
    evaluate(evaluation.pk)  # the task code, in-process
    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded"
    assert QueryResult.objects.filter(evaluation=evaluation).count() == 3
    client.force_login(owner)
    body = client.get(
        reverse("runs:evaluation", args=[evaluation.pk]), HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="evaluation-status",
    ).content.decode()  # fmt: skip
    assert "hx-trigger" not in body
    for name in ("ndcg@10", "mrr@10", "recall@100"):
        assert f'data-metric="{name}">{evaluation.metrics[name]:.4f}<' in body
    trec = client.get(reverse("runs:evaluation_run_file", args=[evaluation.pk]))
    assert trec.status_code == 200 and b" Q0 " in b"".join(trec.streaming_content)


def test_failed_evaluation_shows_a_human_error(
    client, owner, evaluation, tiny_model_path, tmp_path
):
    evaluation.model.path = str(tmp_path / "gone")
    evaluation.model.save()
    evaluate(evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.status == "failed" and evaluation.human_error
    client.force_login(owner)
    body = client.get(reverse("runs:evaluation", args=[evaluation.pk])).content.decode()
    assert 'id="human-error"' in body


def test_cancel_a_pending_evaluation_from_the_page(client, owner, evaluation):
    client.force_login(owner)
    client.post(reverse("runs:evaluation_cancel", args=[evaluation.pk]))
    evaluation.refresh_from_db()
    assert evaluation.status == "cancelled"
    evaluate(evaluation.pk)  # a message still in the queue does nothing
    evaluation.refresh_from_db()
    assert evaluation.status == "cancelled" and not evaluation.metrics


def test_the_evaluation_list_filters_sorts_and_pages(
    client, owner, team, other_team, tiny_registered_model, tiny_version
):
    def make(method, ndcg, status="succeeded", t=team, model=tiny_registered_model):
        e = evaluation_create(
            team=t, model=None if method == "bm25" else model, method=method,
            dataset_version=tiny_version, split="test", enqueue=False,
        )  # fmt: skip
        metrics = {"ndcg@10": ndcg} if ndcg else {}
        Evaluation.objects.filter(pk=e.pk).update(status=status, metrics=metrics)
        return e

    low, high, bm25 = make("dense", 0.2), make("dense", 0.9), make("bm25", 0.5)
    failed = make("dense", None, status="failed")
    client.force_login(owner)
    url = reverse("runs:evaluations")

    def listed(**query) -> list[int]:
        html = client.get(url, query, HTTP_HX_REQUEST="true",
                          HTTP_HX_TARGET="evaluation-list").content.decode()  # fmt: skip
        assert html.lstrip().startswith('<div id="evaluation-list">')
        import re

        return [int(n) for n in re.findall(r'/runs/evaluations/(\d+)/"', html)]

    assert listed() == [failed.pk, bm25.pk, high.pk, low.pk]
    assert listed(method="bm25") == [bm25.pk]
    assert listed(status="failed") == [failed.pk]
    assert listed(sort="ndcg@10") == [high.pk, bm25.pk, low.pk, failed.pk]
    assert listed(model=str(tiny_registered_model.pk), sort="old") == [low.pk, high.pk, failed.pk]
    assert listed(method="nonsense") == listed()  # a URL's unknown value is ignored
    page = client.get(url, {"method": "dense"}).content.decode()
    assert 'id="evaluation-filters"' in page and 'value="dense" selected' in page
