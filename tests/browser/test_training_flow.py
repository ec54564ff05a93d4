"""A member starts a LoRA fine-tune from the browser, previews its estimate, watches it run on a
real worker (progress and the loss curve updating) and gets a registered model."""

import re

import pytest

from apps.runs.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def pairs(tiny_version):
    from apps.datasets.services import dataset_version_pairs_from_qrels

    return dataset_version_pairs_from_qrels(version=tiny_version, split="test").version


def test_start_preview_watch_finish(
    page, shot, live_server, celery_worker_process, member, tiny_registered_model, tiny_version,
    pairs,
):  # fmt: skip
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", "pw-member")
    page.click("button[type=submit]")
    page.click("nav >> text=Training")
    page.click("#new-run")
    page.wait_for_selector("#train-form")
    page.select_option("#id_train_version", str(pairs.pk))
    page.select_option("#id_eval_version", str(tiny_version.pk))
    assert page.is_hidden("fieldset[data-when='method=lora']")  # LoRA settings for LoRA only
    page.select_option("#id_method", "lora")
    assert page.is_visible("#id_lora_r")
    page.fill("#id_batch_size", "2")
    page.fill("#id_max_steps", "30")
    page.click("summary:has-text('More settings')")  # the rarely changed ones are folded
    page.fill("#id_eval_steps", "10")
    page.fill("#id_save_steps", "10")
    page.click("#preview-button")
    page.wait_for_selector("#trainable")
    assert "30 steps" in page.inner_text("#preview")
    shot(page, "training-preview")
    page.click("#start-button")
    page.wait_for_url(re.compile(r"/runs/training/\d+/$"))
    page.wait_for_selector("#loss-chart svg polyline", timeout=120_000)
    shot(page, "training-running")
    page.wait_for_selector("#result a", timeout=240_000)
    run = TrainingRun.objects.get()
    assert run.status == "succeeded" and run.result_model is not None
    assert page.inner_text("#status-label") == "Succeeded"
    assert page.locator("#eval-chart svg").count() == 1
    shot(page, "training-done")
