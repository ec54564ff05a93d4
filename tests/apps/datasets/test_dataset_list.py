"""A training set mined or paired from a collection does not hide the collection: the lists
show the collection's counts first, and the newest version beside them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_collection_stays_first_after_a_derived_training_set(client, member, tiny_version):
    from apps.datasets.services import dataset_version_pairs_from_qrels

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    assert pairs.number > tiny_version.number and pairs.kind == "training"
    dataset = tiny_version.dataset
    assert dataset.collection_version == tiny_version and dataset.latest_version == pairs
    client.force_login(member)
    listing = client.get("/datasets/").content.decode()
    row = listing[listing.index(dataset.name) :]
    row = row[: row.index("</tr>")]
    assert f"/datasets/versions/{tiny_version.pk}/" in row and ">8<" in row  # 8 documents
    assert f"/datasets/versions/{pairs.pk}/" in row and "training set" in row
    home = client.get("/").content.decode()
    assert f"/datasets/versions/{tiny_version.pk}/" in home


def test_the_upload_page_says_what_it_takes(client, member):
    client.force_login(member)
    page = client.get("/datasets/upload/").content.decode()
    assert "one .tsv of judgements per split, named after it (test.tsv" in page
    assert "Or a training set" in page and "<split>" not in page
    assert 'id="upload-status"' in page


def test_a_version_lists_every_document_a_page_at_a_time(client, member, team, tmp_path):
    from apps.datasets.services import dataset_import_beir
    from tests.conftest import write_beir

    corpus = [{"_id": f"d{i:02d}", "title": f"T{i}", "text": f"text {i}"} for i in range(45)]
    queries = [{"_id": "q1", "text": "text"}]
    folder = write_beir(tmp_path / "b", corpus=corpus, queries=queries,
                        qrels={"test": [("q1", "d01", 1)]})  # fmt: skip
    version = dataset_import_beir(team=team, name="many", path=folder).version
    client.force_login(member)
    first = client.get(f"/datasets/versions/{version.pk}/").content.decode()
    assert "1–20 of 45" in first and "<code>d19</code>" in first and "<code>d20</code>" not in first
    assert "?dp=2#documents" in first
    last = client.get(f"/datasets/versions/{version.pk}/?dp=3").content.decode()
    assert "41–45 of 45" in last and "<code>d44</code>" in last and "?dp=2#documents" in last


def test_a_failed_upload_offers_to_upload_again_under_the_same_name(client, member, team):
    from apps.datasets.models import IngestJob

    job = IngestJob.objects.create(team=team, dataset_name="my set", status="failed",
                                   problems=["corpus.jsonl:3: not JSON"])  # fmt: skip
    client.force_login(member)
    page = client.get(f"/datasets/ingests/{job.pk}/").content.decode()
    assert 'id="try-again"' in page and "/datasets/upload/?name=my%20set" in page
    form = client.get("/datasets/upload/?name=my%20set").content.decode()
    assert 'value="my set"' in form


def test_a_dataset_in_use_says_by_what_and_a_free_one_goes(client, member, viewer, outsider,
                                                          evaluation, tiny_version):  # fmt: skip
    from apps.datasets.models import Dataset, Document
    from apps.runs.models import Evaluation

    dataset = tiny_version.dataset
    url = f"/datasets/{dataset.pk}/delete/"
    client.force_login(outsider)
    assert client.post(url).status_code == 404
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(member)
    assert 'id="delete-dataset"' in client.get(f"/datasets/{dataset.pk}/").content.decode()
    r = client.post(url, follow=True)
    assert "is used by 1 evaluation" in r.content.decode() and Dataset.objects.exists()
    Evaluation.objects.all().delete()
    r = client.post(url)
    assert r.status_code == 302 and not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not Document.objects.filter(version=tiny_version).exists()


def test_the_api_deletes_a_free_dataset(client, team, member, outsider, other_team,
                                        tiny_version):  # fmt: skip
    from apps.accounts.services import api_token_create

    def auth(user, t):
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=t, name='t')[1]}"}

    url = f"/api/v1/datasets/{tiny_version.dataset_id}"
    assert client.delete(url, **auth(outsider, other_team)).status_code == 404
    assert client.delete(url, **auth(member, team)).status_code == 204
    assert client.get(url, **auth(member, team)).status_code == 404


def test_a_version_nothing_uses_is_deleted_and_the_last_one_is_not(client, member,
                                                                   tiny_version):  # fmt: skip
    from apps.datasets.models import DatasetVersion, TrainingRow
    from apps.datasets.services import dataset_version_pairs_from_qrels

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    client.force_login(member)
    assert 'id="delete-version"' in client.get(f"/datasets/versions/{pairs.pk}/").content.decode()
    r = client.post(f"/datasets/versions/{pairs.pk}/delete/")
    assert r.status_code == 302 and r["Location"] == f"/datasets/{tiny_version.dataset_id}/"
    assert not DatasetVersion.objects.filter(pk=pairs.pk).exists()
    assert not TrainingRow.objects.filter(version_id=pairs.pk).exists()
    r = client.post(f"/datasets/versions/{tiny_version.pk}/delete/", follow=True)
    assert "only version: delete the dataset" in r.content.decode()
    assert DatasetVersion.objects.filter(pk=tiny_version.pk).exists()


def test_a_dataset_is_a_tree_of_its_collection_and_what_was_derived(
    client, member, tiny_version, django_assert_max_num_queries
):
    from apps.datasets.selectors import dataset_version_tree
    from apps.datasets.services import dataset_version_pairs_from_qrels

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    dataset = tiny_version.dataset
    assert dataset_version_tree(dataset=dataset) == [(tiny_version, 0), (pairs, 1)]
    assert tiny_version.how_made == "uploaded" and pairs.how_made == "pairs from judgements"
    client.force_login(member)
    page = client.get(f"/datasets/{dataset.pk}/").content.decode()
    tree = page[page.index('id="version-tree"') :]
    assert tree.index(f"v{tiny_version.number}<") < tree.index(f"v{pairs.number}<")
    assert 'class="depth-1"' in tree and "pairs from judgements" in tree
    # The list names the derived set under the collection, with its count, and reads the
    # versions once for the whole page rather than once per dataset.
    with django_assert_max_num_queries(12):
        listing = client.get("/datasets/").content.decode()
    derived = listing[listing.index('class="derived"') :].split("</td>")[0]
    assert f"v{pairs.number}</a>" in derived and "pairs from judgements" in derived
