"""A user reranks a BM25 evaluation with a registered cross-encoder from the evaluation's page,
watches the rerank finish, opens the paired comparison with its first stage, and puts the
reranker on a deployment's search settings — in Chromium against a live server."""

from __future__ import annotations

import re

import pytest

from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create
from workers.tasks.evaluation import evaluate

pytestmark = [pytest.mark.browser]


@pytest.fixture
def first_stage(transactional_db, team, tiny_version):
    evaluation = evaluation_create(
        team=team,
        model=None,
        method="bm25",
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )
    evaluate.run(evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded", evaluation.error
    return evaluation


@pytest.fixture
def reranker(team, tiny_reranker_path):
    from apps.registry.services import embedding_model_register

    return embedding_model_register(team=team, name="tiny-ce", path=str(tiny_reranker_path))


def test_rerank_an_evaluation_then_compare_with_its_first_stage(
    page, shot, live_server, owner, first_stage, reranker
):
    page.goto(live_server.url + f"/runs/evaluations/{first_stage.pk}/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("#rerank-form")
    shot(page, "rerank-first-stage")
    page.select_option("#rerank-form select[name=model]", str(reranker.pk))
    page.fill("#rerank-form input[name=k_prime]", "5")
    page.click("#rerank-these")
    page.wait_for_url(re.compile(r"/runs/evaluations/\d+/$"))
    rerank = Evaluation.objects.get(method="rerank")
    assert rerank.first_stage_id == first_stage.pk and rerank.fusion == {"k_prime": 5}
    if rerank.status == "pending":  # no worker in this tier: run the task here
        evaluate.run(rerank.pk)
    page.wait_for_selector('[data-metric="ndcg@10"]', timeout=60_000)
    assert "the top 5 of" in page.inner_text("#rerank")
    assert "ms per query" in page.inner_text("#ms-per-query")
    shot(page, "rerank-done")

    page.click("#compare-first-stage")
    page.wait_for_url(re.compile(r"/runs/compare/\?"))
    page.wait_for_selector("#compare-table")
    assert page.inner_text("#baseline").startswith(f"#{first_stage.pk}")
    assert "after Holm" in page.inner_text("#significance")
    shot(page, "rerank-compare")

    page.goto(live_server.url + f"/models/{reranker.pk}/")
    page.wait_for_selector("#role")
    assert "reranker" in page.inner_text("#role")
    assert page.locator("#optimize").count() == 0
    shot(page, "rerank-model")
