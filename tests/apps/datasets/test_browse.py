import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_search_documents_by_id_and_text(client, owner, tiny_version):
    client.force_login(owner)
    url = reverse("datasets:version", args=[tiny_version.pk])
    by_id = client.get(url, {"q": "d5"}).content.decode()
    assert "<code>d5</code>" in by_id
    by_text = client.get(url, {"q": "planet"}).content.decode()
    results = by_text.split('id="search-results"')[1].split("</ul>")[0]
    assert "<code>d8</code>" in results and "<code>d1</code>" not in results
    nothing = client.get(url, {"q": "zebra"}).content.decode()
    assert "No document matches." in nothing


def test_document_search_answers_with_the_results_alone_under_htmx(
    client, owner, outsider, tiny_version
):
    client.force_login(owner)
    url = reverse("datasets:version", args=[tiny_version.pk])
    headers = {"HX-Request": "true", "HX-Target": "search-results"}
    fragment = client.get(url, {"q": "planet"}, headers=headers)
    body = fragment.content.decode()
    assert body.lstrip().startswith('<ul class="docs" id="search-results"')
    assert "<code>d8</code>" in body and "<html" not in body and "Judged queries" not in body
    assert fragment["Vary"] and "HX-Request" in fragment["Vary"]
    # The page's form asks for exactly this fragment, and "/" finds its box.
    page = client.get(url).content.decode()
    assert 'hx-target="#search-results"' in page and "data-search" in page
    client.force_login(outsider)
    assert client.get(url, {"q": "planet"}, headers=headers).status_code == 404


def test_query_page_lists_judged_documents_with_grades(client, owner, outsider, tiny_version):
    query = tiny_version.queries.get(query_id="q2")
    client.force_login(owner)
    version_page = client.get(reverse("datasets:version", args=[tiny_version.pk])).content.decode()
    url = reverse("datasets:query", args=[tiny_version.pk, query.pk])
    assert f'href="{url}"' in version_page
    page = client.get(url).content.decode()
    assert "programming language for reliable software" in page
    rows = page.split("<tbody>")[1]
    assert rows.index("<code>d4</code>") < rows.index("<code>d3</code>")  # grade 2 before 1
    client.force_login(outsider)
    assert client.get(url).status_code == 404
