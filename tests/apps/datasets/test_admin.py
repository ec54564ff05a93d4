"""The Django admin lists datasets, versions, documents, queries and training rows with search;
immutable rows are read-only there."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_lists_and_searches_read_only(admin_client, tiny_version):
    for name in ("dataset", "datasetversion", "document", "query", "trainingrow", "curationjob"):
        assert admin_client.get(reverse(f"admin:datasets_{name}_changelist")).status_code == 200
    found = admin_client.get(reverse("admin:datasets_document_changelist"), {"q": "Mars"})
    assert "d8" in found.content.decode() and "d1<" not in found.content.decode()
    doc = tiny_version.documents.get(doc_id="d8")
    page = admin_client.get(reverse("admin:datasets_document_change", args=[doc.pk]))
    assert page.status_code == 200 and 'name="text"' not in page.content.decode()
    posted = admin_client.post(
        reverse("admin:datasets_document_change", args=[doc.pk]), {"text": "changed"}
    )
    assert posted.status_code == 403
    doc.refresh_from_db()
    assert doc.text.startswith("Mars")
    assert admin_client.get(reverse("admin:datasets_document_add")).status_code == 403
