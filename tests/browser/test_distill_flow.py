"""A member distills a static model from the model page (on a real Celery worker), and the
distillation's page says how much quality the speed costs once both evaluations ran; the
model page says which way precision "auto" goes. In Chromium."""

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_distill_a_static_model_in_the_browser(
    page, shot, live_server, celery_worker_process, member, tiny_registered_model, tiny_version
):
    from apps.registry.models import DistillJob, EmbeddingModel

    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", "pw-member")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/models/{tiny_registered_model.pk}/")
    assert "not checked yet" in page.inner_text("#bf16-check")
    shot(page, "model-distill-form")
    # Filled after the full-page screenshot: clicked right after one, the button missed the
    # click in Chromium once the model page grew past two screens.
    page.fill("#id_pca_dims", "16")
    page.select_option("#id_evaluate_version", str(tiny_version.pk))
    page.click("#distill-start")
    page.wait_for_url(re.compile(r"/models/distillations/\d+/$"))
    page.wait_for_selector("#distill-speed", timeout=120_000)
    # The page keeps polling until both evaluations ran, then says what the speed costs.
    page.wait_for_selector("#distill-quality", timeout=180_000)
    verdict = page.inner_text("#distill-verdict")
    assert re.search(r"keeps [\d.]+ % of the source's nDCG@10 .* for [\d.]+× the speed", verdict)
    job = DistillJob.objects.get()
    static = EmbeddingModel.objects.get(pk=job.result_model_id)
    assert static.kind == "static" and static.dimension == 16
    shot(page, "distillation")
    page.click(f"text={static.name}")
    page.wait_for_selector("#distilled-by")
    assert "Model2Vec" in page.inner_text("#distilled-by")
    shot(page, "static-model")
