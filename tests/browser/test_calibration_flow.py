"""A user opens a deployment, fits a relevance calibration from its page, and reads the results
(ECE, the reliability diagram, the threshold against a global raw-score one); after a swap the
deployment says its calibration is stale — in Chromium against a live server."""

from __future__ import annotations

import re

import pytest

from apps.indexes.models import Calibration
from tests.apps.indexes.conftest import build_sync
from workers.tasks.calibration import calibrate

pytestmark = [pytest.mark.browser]


@pytest.fixture
def deployed(transactional_db, team, tiny_registered_model, tiny_version):
    from apps.indexes.services import deployment_deploy

    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    other = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                       index_type="hnsw")  # fmt: skip
    return deployment_deploy(team=team, name="prod", index=build), other


def test_fit_a_calibration_then_see_it_stale_after_a_swap(page, shot, live_server, owner,
                                                           deployed):  # fmt: skip
    deployment, other = deployed
    page.goto(live_server.url + "/indexes/deployments/prod/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("#calibration")
    assert "not calibrated" in page.inner_text("#calibration")
    page.click("#calibration-link")
    page.wait_for_selector("#calibration-form")
    page.select_option("#calibration-form select[name=split]", "test")
    # The tiny version's train split has one query: measure on a held-out share of test.
    page.select_option("#calibration-form select[name=held_out_split]", "")
    page.select_option("#calibration-form select[name=method]", "cosine_adapter")
    page.fill("#calibration-form input[name=depth]", "10")
    page.fill("#calibration-form input[name=target_value]", "0.6")
    page.click("#fit-calibration")
    page.wait_for_url(re.compile(r"/indexes/deployments/prod/calibration/\d+/$"))
    job = Calibration.objects.get(deployment=deployment)
    assert job.params["method"] == "cosine_adapter" and job.params["target_value"] == 0.6
    if job.status == "pending":  # no worker in this tier: run the task here
        calibrate.run(job.pk)
    page.wait_for_selector("#ece", timeout=60_000)
    assert page.locator("#reliability-chart svg circle").count() >= 1
    assert "single global raw-score threshold" in page.inner_text("#threshold-table")
    # The list below says so too (swapped in with the status, not left at "Pending").
    page.wait_for_selector("#calibration-list >> text=Succeeded")
    # The reliability line is a line: no filled area (browsers fill a bare polyline black).
    fill = page.eval_on_selector("#reliability-chart polyline.front",
                                 "e => getComputedStyle(e).fill")  # fmt: skip
    assert fill == "none"
    shot(page, "calibration-results")

    from apps.indexes.services import deployment_deploy

    deployment_deploy(team=deployment.team, name="prod", index=other)
    page.goto(live_server.url + "/indexes/deployments/prod/")
    page.wait_for_selector("#calibration-stale")
    assert f"index #{job.index_id}" in page.inner_text("#calibration")
    shot(page, "calibration-stale")
