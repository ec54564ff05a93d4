"""A user moves a deployment to a new model from its page: starts the upgrade, reads the
compatibility report, serves the new model through the adapter, re-embeds, is refused an
unforced cutover to a significantly worse model, forces it, and rolls back — in Chromium
against a live server."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.apps.indexes.conftest import build_sync
from tests.apps.indexes.test_upgrades import (  # noqa: F401 (fixtures)
    _judge,
    judged_version,
    new_model,
    tiny_model_v2_path,
)

pytestmark = [pytest.mark.browser]


def test_upgrade_a_deployment_from_its_page(
    page, shot, live_server, transactional_db, owner, team, tiny_registered_model, new_model,  # noqa: F811
    judged_version,  # noqa: F811
):  # fmt: skip
    from apps.indexes.models import Deployment, ModelUpgrade
    from apps.indexes.services import deployment_deploy
    from workers.tasks.indexing import build_index
    from workers.tasks.upgrade import prepare_upgrade

    old = build_sync(team=team, model=tiny_registered_model, version=judged_version)
    deployment_deploy(team=team, name="prod", index=old)
    page.goto(live_server.url + "/indexes/deployments/prod/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("#upgrade-form")
    page.select_option("#upgrade-model", str(new_model.pk))
    page.click("#upgrade-start")
    page.wait_for_url(re.compile(r"/indexes/upgrades/\d+/$"))
    upgrade = ModelUpgrade.objects.get()
    assert upgrade.status == "pending"
    prepare_upgrade.run(upgrade.pk)  # no worker in this tier: run the task here
    page.wait_for_selector("#compat-report", timeout=60_000)  # the page's poll brings it
    assert "µs" in page.inner_text("#adapter-summary")
    shot(page, "upgrade-report")

    page.click("#adapter-on")
    page.wait_for_selector("#adapter-off")
    assert Deployment.objects.get(name="prod").adapter["upgrade"] == upgrade.pk
    page.click("#reembed-start")
    page.wait_for_selector("#reembed-status")
    upgrade.refresh_from_db()
    build_index.run(upgrade.new_index_id)
    rng = np.random.default_rng(0)
    _judge(upgrade.old_evaluation, np.clip(0.8 + rng.normal(0, 0.05, 40), 0, 1))
    _judge(upgrade.new_evaluation, np.clip(0.4 + rng.normal(0, 0.05, 40), 0, 1))
    page.wait_for_selector("#cutover-button", timeout=60_000)
    assert page.get_attribute("#verdict", "data-worse") == "true"
    shot(page, "upgrade-verdict")

    page.click("#cutover-button")  # not forced: refused
    page.wait_for_selector("#cutover-button")
    assert "significantly worse" in page.content()
    assert Deployment.objects.get(name="prod").index_id == old.pk
    page.check("#force")
    page.click("#cutover-button")
    page.wait_for_selector("#rollback")
    assert Deployment.objects.get(name="prod").index_id == upgrade.new_index_id
    assert "forced" in page.inner_text("#cut-over")
    shot(page, "upgrade-cut-over")
    page.click("#rollback")
    page.wait_for_selector("#cut-over")
    assert "Rolled back" in page.inner_text("#cut-over")
    assert Deployment.objects.get(name="prod").index_id == old.pk
    page.goto(live_server.url + "/indexes/deployments/prod/")
    page.wait_for_selector("#upgrade-list")
    assert "rolled back" in page.inner_text("#upgrade-list")
