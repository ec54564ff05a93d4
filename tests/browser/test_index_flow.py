"""A user builds an HNSW index from the page (on a real Celery worker), sees it measured,
deploys it, then queries it in the console as they type — with a filter, and side by side with
a second deployment — against a real search process, in Chromium."""

import re

import pytest

from tests.apps.indexes.conftest import LANGS, META_CORPUS, build_sync
from tests.conftest import write_beir

pytestmark = [pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def meta_version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    folder = write_beir(tmp_path / "meta-beir", corpus=META_CORPUS)
    return dataset_import_beir(team=team, name="planets", path=folder).version


def test_build_deploy_and_query_an_index_in_the_browser(page, shot, live_server,
                                                        celery_worker_process, serving, owner,
                                                        team, tiny_registered_model,
                                                        meta_version):  # fmt: skip
    from apps.indexes.models import IndexBuild
    from apps.indexes.services import deployment_deploy

    # A second index, deployed beforehand, for the side-by-side view.
    baseline = build_sync(team=team, model=tiny_registered_model, version=meta_version)
    deployment_deploy(team=team, name="baseline", index=baseline)

    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.click("nav >> text=Indexes")
    page.wait_for_url(re.compile(r"/indexes/$"))
    page.click("#new-index")
    page.select_option("#id_index_type", "hnsw")
    # Only HNSW's parameters show.
    assert page.is_visible("#id_ef_search") and not page.is_visible("#id_nprobe")
    page.fill("#id_hnsw_m", "16")
    shot(page, "index-new")
    page.click("#build")
    page.wait_for_url(re.compile(r"/indexes/\d+/$"))
    page.wait_for_selector('[data-metric="recall_at_10"]', timeout=120_000)
    build = IndexBuild.objects.get(index_type="hnsw")
    assert build.status == "succeeded" and build.spec["hnsw_m"] == 16
    assert page.inner_text('[data-metric="recall_at_10"]') == f"{build.metrics['recall_at_10']:.4f}"
    page.wait_for_selector("#tradeoff svg circle")
    assert page.locator("#tradeoff figure").count() == 2
    shot(page, "index-detail")

    page.fill("#deploy-name", "planets")
    page.click("#deploy")
    page.wait_for_url(re.compile(r"/indexes/deployments/planets/$"))
    page.wait_for_selector("#serving >> text=live", timeout=60_000)
    shot(page, "deployment")

    page.click("#query-link")
    page.wait_for_selector("#q")
    page.select_option("#b", "baseline")
    page.type("#q", "the red planet", delay=40)  # the console searches as one types
    page.wait_for_selector("#results .side >> nth=1")
    page.wait_for_selector("#results li[data-doc]")
    assert page.locator("#results .side").count() == 2
    assert page.locator("#results .side").first.locator("li[data-doc]").count() == 8
    assert "encode" in page.inner_text("#results .timing >> nth=0")
    assert page.locator("#results mark").count() > 0
    shot(page, "console")

    page.fill("#filters", "lang=de")
    page.press("#filters", "Enter")
    page.wait_for_function(
        "document.querySelectorAll('#results .side:first-child li[data-doc]').length === 2"
    )
    shown = page.eval_on_selector_all(
        "#results .side:first-child li[data-doc]", "els => els.map(e => e.dataset.doc)"
    )
    german = [row["_id"] for row, lang in zip(META_CORPUS, LANGS, strict=True) if lang == "de"]
    assert sorted(shown) == sorted(german)
    shot(page, "console-filtered")

    # Swap the name to the other index from the deployment page; the badge follows the load.
    page.goto(live_server.url + "/indexes/deployments/planets/")
    page.select_option("#swap-index", str(baseline.pk))
    page.click("#swap")
    page.wait_for_selector("#serving >> text=live", timeout=60_000)
    assert "Swapped" in page.inner_text("#audit")
    assert f"#{baseline.pk}" in page.inner_text("#deployment-facts")
    shot(page, "deployment-swapped")
