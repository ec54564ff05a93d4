"""A user logs in, opens the demo dataset (SciFact, as `manage.py demo` imports it), starts an
evaluation with the tiny model and sees the progress bar and then the metrics — in Chromium,
against a live server, with the job on a real Celery worker."""

import re

import pytest

from apps.runs.models import Evaluation

pytestmark = [pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def demo_dataset(team):
    from apps.datasets.services import dataset_import_beir
    from tests.conftest import REPO

    return dataset_import_beir(team=team, name="SciFact", path=REPO / "demo" / "scifact").version


def test_login_open_demo_dataset_evaluate_see_progress_then_metrics(
    page, shot, live_server, celery_worker_process, owner, tiny_registered_model, demo_dataset
):
    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Recent evaluations")
    shot(page, "home")
    # At 800 px the header wraps instead of pushing the page sideways.
    page.set_viewport_size({"width": 800, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    shot(page, "home-800px")
    page.emulate_media(color_scheme="dark")
    shot(page, "home-dark")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.click("nav >> text=Datasets")
    page.wait_for_url(re.compile(r"/datasets/$"))
    page.click("table >> text=SciFact")
    page.click("table >> text=v1")
    page.wait_for_selector("#evaluate-form")
    assert page.inner_text("#doc-count") == "5,183"
    assert page.input_value("#id_model") == str(tiny_registered_model.pk)
    page.select_option("#id_split", "test")
    shot(page, "version")
    page.click("#evaluate-form button[type=submit]")
    page.wait_for_url(re.compile(r"/runs/evaluations/\d+/$"))

    # While it runs, the polled fragment shows documents done / total.
    page.wait_for_selector("#progress-text:has-text('/ 5,183 documents')", timeout=120_000)
    shot(page, "evaluation-running")
    # Then the fragment (polled every 2 s) is replaced by the metrics.
    page.wait_for_selector('[data-metric="ndcg@10"]', timeout=300_000)
    evaluation = Evaluation.objects.get()
    assert evaluation.status == "succeeded" and evaluation.query_count == 300
    assert page.inner_text('[data-metric="ndcg@10"]') == f"{evaluation.metrics['ndcg@10']:.4f}"
    assert page.inner_text("#status-label") == "Succeeded"
    shot(page, "evaluation-done")

    # Next: the same model fused with BM25, one click; an ordinary evaluation that says how.
    page.click("#baseline-hybrid")
    page.wait_for_url(re.compile(r"/runs/evaluations/\d+/$"))
    page.wait_for_selector('[data-metric="ndcg@10"]', timeout=300_000)
    hybrid = Evaluation.objects.get(method="hybrid")
    assert hybrid.status == "succeeded" and hybrid.cache_hit  # the dense side from the cache
    assert "reciprocal rank fusion, k = 60" in page.inner_text("#fusion")
    shot(page, "evaluation-hybrid")
