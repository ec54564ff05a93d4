"""A member mines hard negatives and deduplicates from the version page, in Chromium, with the
jobs on a real Celery worker: the inspector's chart, then a dedup reviewed and accepted."""

import re

import pytest

from apps.datasets.models import CurationJob
from tests.conftest import TINY_CORPUS, write_beir

pytestmark = [pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def dup_version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    corpus = [*TINY_CORPUS, {"_id": "d9", "title": "Coffee", "text": TINY_CORPUS[4]["text"]}]
    folder = write_beir(tmp_path / "dups", corpus=corpus)
    return dataset_import_beir(team=team, name="dups", path=folder).version


def test_mine_then_inspect_then_dedup_and_accept(
    page, shot, live_server, celery_worker_process, member, tiny_registered_model, dup_version
):
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", "pw-member")
    page.click("button[type=submit]")
    page.goto(live_server.url + f"/datasets/versions/{dup_version.pk}/")
    page.wait_for_selector("#words-chart svg rect")
    shot(page, "version-curate")

    page.select_option("#mine-form select[name=split]", "test")
    page.fill("#mine-form input[name=range_max]", "8")
    page.fill("#mine-form input[name=num_negatives]", "3")
    page.fill("#mine-form input[name=relative_margin]", "")  # no margin: robust to a random model
    page.click("#mine-form button")
    page.wait_for_url(re.compile(r"/datasets/curation/\d+/$"))
    page.wait_for_selector("#score-chart svg rect", timeout=120_000)
    assert page.inner_text("#status-label") == "Succeeded"
    assert page.locator("details.sample").count() == 3  # the three judged test queries
    shot(page, "negatives-inspector")
    mined = CurationJob.objects.get(kind="mine").version
    page.click("#result-version a")
    page.wait_for_selector("#training-count")
    assert page.inner_text("#training-count") == str(mined.training_count)

    page.goto(live_server.url + f"/datasets/versions/{dup_version.pk}/")
    page.fill("#semdedup-form input[name=threshold]", "0.9999")
    page.click("#semdedup-form button")
    page.wait_for_selector("#dedup-examples", timeout=120_000)
    assert "1 of 9 would be removed" in page.inner_text("#dedup-result")
    shot(page, "dedup-review")
    page.click("#accept")
    page.wait_for_selector("#doc-count")
    assert page.inner_text("#doc-count") == "8"
    assert "by semantic dedup" in page.inner_text("dl.facts")
    shot(page, "dedup-accepted")
