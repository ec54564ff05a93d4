"""A user logs in, opens the dataset, starts an evaluation and sees the metric appear —
in Chromium, against a live server, with the job on a real Celery worker."""

import re

import pytest

from apps.runs.models import Evaluation

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_login_open_dataset_evaluate_see_metrics(
    page, shot, live_server, celery_worker_process, owner, tiny_registered_model, tiny_version
):
    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Recent evaluations")
    shot(page, "home")

    page.click("nav >> text=Datasets")
    page.wait_for_url(re.compile(r"/datasets/$"))
    page.click("table >> text=tiny")
    page.click("table >> text=v1")
    page.wait_for_selector("#evaluate-form")
    assert page.input_value("#id_model") == str(tiny_registered_model.pk)
    page.select_option("#id_split", "test")
    shot(page, "version")
    page.click("#evaluate-form button[type=submit]")
    page.wait_for_url(re.compile(r"/runs/evaluations/\d+/$"))

    # The status fragment polls every 2 s and is replaced by the metrics when the job ends.
    page.wait_for_selector('[data-metric="ndcg@10"]', timeout=120_000)
    evaluation = Evaluation.objects.get()
    assert evaluation.status == "succeeded"
    shown = page.inner_text('[data-metric="ndcg@10"]')
    assert shown == f"{evaluation.metrics['ndcg@10']:.4f}"
    assert page.inner_text("#status-label") == "Succeeded"
    shot(page, "evaluation-done")
