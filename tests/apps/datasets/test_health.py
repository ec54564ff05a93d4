import pytest
from django.urls import reverse

from apps.datasets.services import dataset_import_beir, dataset_version_pairs_from_qrels
from tests.conftest import TINY_CORPUS, TINY_QUERIES, write_beir

pytestmark = pytest.mark.django_db


def test_health_report_finds_duplicates_unjudged_queries_and_leakage(team, tmp_path, client, owner):
    corpus = [
        *TINY_CORPUS,
        {"_id": "d9", "title": "Cats", "text": "Cats are small domesticated carnivorous mammals."},
    ]
    queries = [*TINY_QUERIES, {"_id": "q6", "text": "Red planet"}]  # q4's text, other case
    qrels = {
        "test": [("q1", "d2", 1), ("q2", "d4", 0), ("q3", "d6", 1)],
        "train": [("q6", "d8", 1), ("q3", "d6", 1)],
    }
    folder = write_beir(tmp_path / "h", corpus=corpus, queries=queries, qrels=qrels)
    version = dataset_import_beir(team=team, name="h", path=folder).version
    health = version.health
    assert health["duplicate_documents"] == {"count": 1, "examples": [["d1", "d9"]]}
    assert health["queries_without_relevant"]["test"] == {"count": 1, "examples": ["q2"]}
    assert health["queries_without_relevant"]["train"]["count"] == 0
    assert health["split_leakage"]["test/train"]["count"] == 1  # q3 is judged in both

    pairs = dataset_version_pairs_from_qrels(version=version, split="train").version
    assert pairs.health["test_leakage"]["count"] == 1  # (q3, d6) is also a test judgement
    assert pairs.health["duplicate_pairs"]["count"] == 0

    client.force_login(owner)
    page = client.get(reverse("datasets:version", args=[version.pk])).content.decode()
    assert 'id="health"' in page and "<code>d1 = d9</code>" in page
