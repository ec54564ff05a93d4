"""A member brings a model in from the Hub by name, in Chromium: the models list's form, the
job page while it waits, then (the job run here, as a worker would) the registered model with
the commit it came from; and a repo on no allowed organisation is refused at once."""

import re

import pytest

from apps.registry.models import HubImport

pytestmark = pytest.mark.browser


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    from tests.support.hub import LocalHub

    server = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


def test_a_model_from_the_hub_in_the_browser(
    page, shot, live_server, member, hub, tiny_model_path, monkeypatch, settings
):
    from workers.tasks.hub import hub_import

    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    sha = hub.add_folder("model", "acme/tiny-embed", tiny_model_path)
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", "pw-member")
    page.click("button[type=submit]")
    page.wait_for_selector("nav")
    page.goto(live_server.url + "/models/")
    page.fill("#hub-repo-model", "acme/tiny-embed")
    page.fill("#hub-name-model", "tiny from the hub")
    shot(page, "hub-form")
    page.click("#hub-start-model")
    page.wait_for_url(re.compile(r"/models/hub/\d+/$"))
    assert "Pending" in page.inner_text("#hub-status")
    job = HubImport.objects.get()
    hub_import.run(job.pk)
    page.reload()
    page.wait_for_selector("#hub-result")
    assert "Registered tiny from the hub: 64 dimensions" in page.inner_text("#hub-result")
    assert sha in page.inner_text("#hub-sha")
    shot(page, "hub-done")
    page.click("#hub-result a")
    page.wait_for_url(re.compile(r"/models/\d+/$"))
    assert f"acme/tiny-embed@{sha}" in page.inner_text("main")

    settings.HUB_ALLOWED_ORGS = ["BAAI"]
    page.goto(live_server.url + "/models/")
    page.fill("#hub-repo-model", "evil/model")
    page.click("#hub-start-model")
    page.wait_for_selector(".messages .error")
    assert "evil is not on this server's list" in page.inner_text(".messages")
    assert HubImport.objects.count() == 1
    shot(page, "hub-refused")
