"""A user builds an index with a sparse side (a SPLADE model's vectors) from the page, sets the
deployment's hybrid to fuse with it, and queries it in mode sparse in the console, against a
real search process, in Chromium."""

import re

import pytest

from tests.apps.indexes.conftest import META_CORPUS
from tests.conftest import write_beir

pytestmark = [pytest.mark.browser]


@pytest.fixture
def meta_version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    folder = write_beir(tmp_path / "meta-beir", corpus=META_CORPUS)
    return dataset_import_beir(team=team, name="planets", path=folder).version


def test_an_index_with_a_sparse_side_is_built_deployed_and_queried(
    page, shot, live_server, serving, owner, team, tiny_registered_model, tiny_sparse_path,
    meta_version, monkeypatch,
):  # fmt: skip
    from apps.indexes.models import Deployment, IndexBuild
    from apps.registry.services import embedding_model_register
    from workers.tasks.indexing import build_index

    splade = embedding_model_register(team=team, name="tiny-splade", path=str(tiny_sparse_path))
    # The build runs in this process when the page enqueues it (no worker in this test).
    monkeypatch.setattr(build_index, "apply_async", lambda args, **kw: build_index.run(*args))
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.goto(live_server.url + "/indexes/new/")
    page.select_option("#id_index_type", "flat")
    page.select_option("#id_sparse_model", str(splade.pk))
    shot(page, "sparse-index-new")
    page.click("#build")
    page.wait_for_url(re.compile(r"/indexes/\d+/$"))
    build = IndexBuild.objects.get()
    assert build.params == {"sparse_model": splade.pk} and build.status == "succeeded"
    page.wait_for_selector("#deploy-name")
    page.fill("#deploy-name", "planets")
    page.click("#deploy")
    page.wait_for_url(re.compile(r"/indexes/deployments/planets/$"))
    page.wait_for_selector("#serving >> text=live", timeout=60_000)
    assert "sparse (tiny-splade's vectors" in page.inner_text("#search-modes")
    # Hybrid fuses with the only lexical side the index has.
    assert page.input_value("#lexical") == "sparse"
    assert Deployment.objects.get(name="planets").fusion["lexical"] == "sparse"
    shot(page, "sparse-deployment")

    page.click("#query-link")
    page.wait_for_selector("#q")
    page.select_option("#mode", "sparse")
    page.type("#q", "red planet mars", delay=40)
    page.wait_for_selector("#results li[data-doc]")
    page.wait_for_selector("#results .sparse-ms")
    timing = page.inner_text("#results .timing >> nth=0")
    assert timing.startswith("sparse") and "encode" not in timing
    shot(page, "sparse-console")
