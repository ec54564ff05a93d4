"""A user ticks two real evaluations of the tiny model (full and truncated max sequence length)
in the evaluations list, compares them, reads the p-values, opens the per-query drill-down and
clicks a query to see both top-10 lists side by side — in Chromium against a live server."""

from __future__ import annotations

import re

import pytest

from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create
from workers.tasks.evaluation import evaluation_execute
from workers.tasks.runtime import job_claim, job_run

pytestmark = [pytest.mark.browser]


def _evaluate(*, team, model, version) -> Evaluation:
    evaluation = evaluation_create(
        team=team, model=model, dataset_version=version, split="test", enqueue=False
    )
    job = job_claim(model=Evaluation, pk=evaluation.pk)
    job_run(job=job, work=lambda report: evaluation_execute(evaluation=job, report=report))
    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded", evaluation.error
    return evaluation


@pytest.fixture
def two_evaluations(transactional_db, team, tiny_registered_model, tiny_version, tiny_model_path):
    from apps.registry.services import embedding_model_register

    # The same weights read only the first 6 tokens: a genuinely different ranking.
    short = embedding_model_register(team=team, name="tiny-short", path=str(tiny_model_path))
    short.max_seq_length = 6
    short.save()
    a = _evaluate(team=team, model=tiny_registered_model, version=tiny_version)
    b = _evaluate(team=team, model=short, version=tiny_version)
    return a, b


def test_compare_two_evaluations_then_drill_down_to_a_query(
    page, shot, live_server, owner, two_evaluations
):
    a, b = two_evaluations
    page.goto(live_server.url + "/runs/evaluations/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("#compare-form")
    page.check(f'input[name="e"][value="{a.pk}"]')
    page.check(f'input[name="e"][value="{b.pk}"]')
    shot(page, "compare-pick")
    page.click("#compare-selected")
    page.wait_for_url(re.compile(r"/runs/compare/\?"))
    page.wait_for_selector("#compare-table")
    # No baseline chosen: the earlier evaluation (full length) is the baseline.
    assert page.inner_text("#baseline") == f"#{a.pk} tiny"
    baseline_pk, other_pk = a.pk, b.pk
    significance = page.inner_text("#significance")
    assert "after Holm" in significance and "p randomization" in significance
    assert page.locator("#compare-table tr[data-metric]").count() == len(a.metrics)
    assert page.locator("#compare-table td.best").count() >= len(a.metrics)
    assert page.inner_text("#n-queries") == "3"
    shot(page, "compare-table")

    page.click("#compare-table a.per-query")
    page.wait_for_url(re.compile(rf"/runs/compare/queries/\?a={baseline_pk}&b={other_pk}"))
    page.wait_for_selector("#scatter svg circle")
    assert page.locator("#diagonal").count() == 1
    assert page.locator("#query-deltas tbody tr").count() == 3
    shot(page, "compare-queries")

    first = page.locator("#query-deltas a.query-link").first
    qid = first.inner_text()
    first.click()
    page.wait_for_selector("#side-a ol.hits li")
    page.wait_for_selector("#side-b ol.hits li")
    assert qid in page.inner_text("#query-heading")
    # Eight documents in the collection: each top-10 holds all of them.
    assert page.locator("#side-a ol.hits li").count() == 8
    assert page.locator("#side-b ol.hits li").count() == 8
    assert "q=" in page.url  # the panel's URL was pushed: a reload shows the same query
    shot(page, "compare-query-sides")

    page.select_option("#id_metric", "recall@10")
    page.wait_for_selector('#id_metric option[value="recall@10"][selected]', state="attached")
    assert "metric=recall%4010" in page.url or "metric=recall@10" in page.url

    page.goto(live_server.url + f"/runs/leaderboard/{a.dataset_version_id}/")
    page.wait_for_selector("#leaderboard")
    assert page.locator("#leaderboard tbody tr").count() == 2
    page.click('#leaderboard a[data-sort="mrr@10"]')
    page.wait_for_url(re.compile(r"sort=mrr"))
    shot(page, "leaderboard")
