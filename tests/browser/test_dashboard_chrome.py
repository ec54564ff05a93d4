"""The surroundings of the science pages, in Chromium as a user meets them: lists that filter
as you type (with the choice in the URL), "/" to search, document search without a reload,
datasets as a tree, breadcrumbs, the wait that says no worker listens, a styled 404, and a
header that fits a 360 px phone. A screenshot of each page is kept (var/screenshots)."""

import re

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def journey(team, owner, tiny_registered_model, tiny_version):
    from apps.core.models import JobStatus
    from apps.datasets.services import dataset_version_pairs_from_qrels
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    for value in (0.41, 0.52):
        done = evaluation_create(
            team=team, model=tiny_registered_model, dataset_version=tiny_version, split="test",
            enqueue=False,
        )  # fmt: skip
        Evaluation.objects.filter(pk=done.pk).update(
            status=JobStatus.SUCCEEDED, metrics={"ndcg@10": value, "mrr@10": value}
        )
    waiting = evaluation_create(
        team=team, model=tiny_registered_model, dataset_version=tiny_version, split="test",
        enqueue=False,
    )  # fmt: skip
    # As if sent to the broker (the test has no worker, so nothing takes it).
    Evaluation.objects.filter(pk=waiting.pk).update(
        celery_task_name="workers.tasks.evaluation.evaluate"
    )
    return {"version": tiny_version, "pairs": pairs, "waiting": waiting}


# What sticks out past a 360 px viewport (named in a failure).
WIDE = (
    "[...document.querySelectorAll('body *')]"
    ".filter(e => e.getBoundingClientRect().right > 360).slice(0, 8)"
    ".map(e => e.tagName + '#' + e.id + '.' + e.className)"
)


def login(page, url):
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_selector("nav")


def test_the_dashboard_around_the_science(page, shot, live_server, journey):
    base = live_server.url
    login(page, base)

    # Models: typing filters the list in place, and the URL keeps the choice.
    page.goto(base + "/models/")
    page.evaluate("window.__same_page = true")
    page.keyboard.press("/")  # focuses the list's search box
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("zzz")
    page.wait_for_selector("#model-list >> text=No model matches")
    assert re.search(r"[?&]q=zzz", page.url)
    page.fill("#model-q", "tin")
    page.wait_for_selector("#models >> text=tiny")
    assert page.evaluate("window.__same_page") is True  # no reload
    shot(page, "chrome-models-filtered")

    # Evaluations: sort by nDCG@10, best first, from the URL.
    page.goto(base + "/runs/evaluations/?sort=ndcg%4010")
    values = page.locator("table.evaluations tbody tr td.num").all_inner_texts()
    assert values[0::3] == ["0.5200", "0.4100", ""], values  # nDCG@10, best first, unscored last
    shot(page, "chrome-evaluations-sorted")

    # Datasets: the collection with its derived set under it, on the list and the page.
    page.goto(base + "/datasets/")
    assert "pairs from judgements" in page.inner_text("#datasets")
    page.click("#datasets >> text=tiny")
    page.wait_for_selector("#version-tree")
    assert page.locator("#version-tree tr.depth-1").count() == 1
    shot(page, "chrome-dataset-tree")

    # A version: document search answers in place, below its own box, and the URL says so.
    page.click("#version-tree >> text=v1")
    page.wait_for_selector("#search")
    crumbs = page.inner_text("nav.crumbs")
    assert crumbs.startswith("Home › Datasets › tiny › v1"), crumbs
    page.evaluate("window.__same_page = true")
    page.fill("#search input[name=q]", "planet")
    page.wait_for_selector("#search-results >> text=d8")
    assert page.evaluate("window.__same_page") is True
    assert re.search(r"[?&]q=planet", page.url)
    shot(page, "chrome-document-search")
    page.click("nav.crumbs >> text=Datasets")
    page.wait_for_url(re.compile(r"/datasets/$"))

    # A job nothing listens to says so, with its queue.
    page.goto(base + f"/runs/evaluations/{journey['waiting'].pk}/")
    place = page.inner_text("#queue-place")
    assert "no worker listens to it" in place and re.search(r"worker -Q \w+ ", place), place
    shot(page, "chrome-no-listener")

    # A wrong address: the site's own page, with its navigation.
    response = page.goto(base + "/runs/evaluations/999999/")
    assert response.status == 404
    assert page.locator("header.topbar nav").count() == 1 and page.locator("#not-found").count()
    shot(page, "chrome-404")

    # A 360 px phone: the header wraps; nothing pushes the page sideways but wide tables,
    # which scroll inside their card.
    page.set_viewport_size({"width": 360, "height": 800})
    for path in ("/", "/models/", "/datasets/", "/runs/evaluations/"):
        page.goto(base + path)
        header = page.evaluate("document.querySelector('header.topbar').scrollWidth")
        assert header <= 360, (path, header)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, (
            path,
            page.evaluate(WIDE),
        )
    shot(page, "chrome-360px")
