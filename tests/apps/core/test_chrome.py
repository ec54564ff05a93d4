"""Breadcrumbs on every page, the nav's current section, and one way to show a moment."""

import datetime as dt

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from tests.apps.core.test_job_status import TARGETS, jobs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


def crumbs(html: str) -> str:
    return html.split('<nav class="crumbs" aria-label="Breadcrumb">')[1].split("</nav>")[0]


def test_pages_carry_a_breadcrumb_from_home_through_their_section(client, owner, tiny_version):
    client.force_login(owner)
    version_page = client.get(reverse("datasets:version", args=[tiny_version.pk])).content.decode()
    trail = crumbs(version_page)
    assert (
        trail.index(">Home<") < trail.index(">Datasets<") < trail.index(tiny_version.dataset.name)
    )
    assert f'<span aria-current="page">v{tiny_version.number}</span>' in trail
    # The nav marks the section the page belongs to.
    assert f'href="{reverse("datasets:list")}" aria-current="page"' in version_page
    # A list page's trail is Home › its section; the home page has none.
    assert ">Evaluations<" in crumbs(client.get(reverse("runs:evaluations")).content.decode())
    assert ">Training<" in crumbs(client.get(reverse("runs:training_runs")).content.decode())
    assert ">Jobs<" in crumbs(client.get(reverse("core:jobs")).content.decode())
    assert 'class="crumbs"' not in client.get(reverse("core:home")).content.decode()


def test_the_old_in_page_crumbs_are_gone_so_no_page_shows_two(client, owner, tiny_version):
    client.force_login(owner)
    for url in (
        reverse("datasets:version", args=[tiny_version.pk]),
        reverse("datasets:detail", args=[tiny_version.dataset.pk]),
        reverse("datasets:upload"),
        reverse("indexes:new"),
        reverse("runs:training_new"),
    ):
        html = client.get(url).content.decode()
        assert html.count('class="crumbs"') == 1, url


def test_when_shows_relative_time_with_the_absolute_one_on_hover():
    moment = timezone.now() - dt.timedelta(minutes=3)
    html = Template("{{ m|when }}").render(Context({"m": moment}))
    local = timezone.localtime(moment)
    assert html.startswith(f'<time datetime="{local.isoformat(timespec="seconds")}"')
    assert f'title="{local:%Y-%m-%d %H:%M:%S}' in html and "3\xa0minutes ago" in html
    assert Template("{{ m|when }}").render(Context({"m": None})) == ""


def test_a_refusal_is_a_styled_page_with_the_reason_and_the_navigation(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("runs:training_new"))
    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="forbidden"' in html and "This needs the member role in" in html
    assert 'class="topbar"' in html  # the site's header, not a bare text answer


@pytest.mark.parametrize("kind", ["evaluation", "index", "training", "curation", "ingest", "jobs"])
def test_a_job_page_opened_by_an_htmx_link_is_the_whole_page(client, owner, kind, request):
    """Links across the site load pages with htmx (hx-select="main"): a page answers with its
    polling fragment only to its own poll, never to such a link or to htmx's history restore,
    else the link would swap in an empty <main>."""
    if kind == "jobs":
        url, target = reverse("core:jobs"), "jobs"
    else:
        job, view, _, _ = request.getfixturevalue("jobs")[kind]
        url, target = reverse(view, args=[job.pk]), TARGETS[view]
    client.force_login(owner)
    link = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="main")
    assert '<main id="main">' in link.content.decode()
    restore = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert '<main id="main">' in restore.content.decode()
    poll = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=target).content.decode()
    assert "<main" not in poll and f'id="{target}"' in poll
    assert "HX-Target" in link["Vary"]


def test_model_pages_name_a_folder_by_its_last_part_never_the_server_path(
    client, member, tiny_registered_model
):
    client.force_login(member)
    path = tiny_registered_model.source_ref
    assert "/" in path
    for url in ("/models/", f"/models/{tiny_registered_model.pk}/", "/models/?q=tmp"):
        assert path not in client.get(url).content.decode(), url
    # Searching the list does not probe the folder either.
    assert "No model matches" in client.get("/models/", {"q": "pytest"}).content.decode()
