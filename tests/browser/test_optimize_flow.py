"""A member builds an int8 ONNX variant from the model page (on a real Celery worker); the
optimization's page shows the export check, the speed and, once both evaluations ran, the
paired comparison and the verdict against the quality bar. In Chromium."""

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_optimize_a_model_in_the_browser(
    page, shot, live_server, celery_worker_process, member, tiny_registered_model, tiny_version
):
    from apps.registry.models import EmbeddingModel, OptimizeJob

    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", "pw-member")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/models/{tiny_registered_model.pk}/")
    shot(page, "model-optimize-form")
    # Set after the full-page screenshot (a click right after one can miss in Chromium).
    page.select_option("#optimize_quantize", "int8")
    page.select_option("#optimize_evaluate_version", str(tiny_version.pk))
    page.click("#optimize-start")
    page.wait_for_url(re.compile(r"/models/optimizations/\d+/$"))
    page.wait_for_selector("#optimize-speed", timeout=180_000)
    assert "cosine" in page.inner_text("#optimize-result")
    page.wait_for_selector("#optimize-quality", timeout=180_000)
    verdict = page.inner_text("#optimize-verdict")
    assert re.search(r"keeps [\d.]+ % of the source's nDCG@10 .* for [\d.]+× the speed", verdict)
    assert "quality bar" in verdict
    job = OptimizeJob.objects.get()
    variant = EmbeddingModel.objects.get(pk=job.result_model_id)
    assert variant.kind == "optimized" and variant.quality["metric"] == "ndcg@10"
    shot(page, "optimization")
    page.click(f"#optimize-result >> text={variant.name}")
    page.wait_for_selector("#optimized-by")
    assert "ONNX int8" in page.inner_text("#optimized-by")
    shot(page, "optimized-model")
