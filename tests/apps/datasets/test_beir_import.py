from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from apps.datasets.beir import BeirError, iter_documents, scan_beir_folder
from apps.datasets.models import Dataset, DatasetVersion, Document, Qrel, Query
from apps.datasets.services import dataset_import_beir
from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES, write_beir


def problems_of(folder) -> list[str]:
    with pytest.raises(BeirError) as info:
        scan_beir_folder(folder)
    return [str(p) for p in info.value.problems]


def test_reads_the_tiny_folder(beir_folder):
    data = scan_beir_folder(beir_folder)
    assert (data.document_count, data.query_count) == (8, 5)
    assert data.qrels_counts == {"test": 4, "train": 1}
    assert data.warnings == ["1 document(s) have an empty title."]
    assert len(data.content_hash) == 64


def test_gzip_files_are_read_and_hash_like_plain(tmp_path, beir_folder):
    plain = scan_beir_folder(beir_folder)
    plain_documents = list(iter_documents(plain))
    for name in ("corpus.jsonl", "queries.jsonl"):
        raw = (beir_folder / name).read_bytes()
        (beir_folder / name).unlink()
        (beir_folder / (name + ".gz")).write_bytes(gzip.compress(raw))
    packed = scan_beir_folder(beir_folder)
    assert packed.content_hash == plain.content_hash
    assert list(iter_documents(packed)) == plain_documents


def test_every_problem_names_file_line_and_reason(tmp_path):
    corpus = [
        *TINY_CORPUS,
        {"_id": "d1", "text": "again"},
        {"_id": "", "text": "x"},
        {"_id": "d9", "title": "t"},
    ]
    folder = write_beir(tmp_path / "bad", corpus=corpus)
    with open(folder / "corpus.jsonl", "a") as fh:
        fh.write("{not json\n")
    with open(folder / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1\tnope\t1\nzz\td1\t1\nq1\td1\thigh\nq1\td1\n")
    found = problems_of(folder)
    c, t = str(folder / "corpus.jsonl"), str(folder / "qrels" / "test.tsv")
    assert f"{c}:9: duplicate document id 'd1'" in found
    assert f"{c}:10: missing or empty '_id'" in found
    assert f"{c}:11: missing 'text' (a string)" in found
    assert any(p.startswith(f"{c}:12: malformed JSON") for p in found)
    # Two corpus lines above have no readable id: the unknown id may be one of them.
    assert (
        f"{t}:6: unknown document id 'nope' (perhaps a knock-on: 2 corpus line(s) above have "
        "no readable id)"
    ) in found
    assert f"{t}:7: unknown query id 'zz'" in found
    assert f"{t}:8: relevance 'high' is not an integer" in found
    assert f"{t}:9: expected 3 tab-separated columns, found 2" in found


def test_a_judgement_of_a_rejected_row_is_marked_as_a_knock_on(tmp_path):
    corpus = [*TINY_CORPUS, {"_id": "d9", "title": "no text"}]
    folder = write_beir(tmp_path / "knock", corpus=corpus)
    with open(folder / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1\td9\t1\nq1\tnope\t1\n")
    c, t = str(folder / "corpus.jsonl"), str(folder / "qrels" / "test.tsv")
    assert problems_of(folder) == [
        f"{c}:9: missing 'text' (a string)",
        f"{t}:6: knock-on: document id 'd9' is on corpus line 9, rejected above",
        f"{t}:7: unknown document id 'nope'",  # no id-less line above: plainly unknown
    ]


def test_non_utf8_and_empty_and_missing_files(tmp_path):
    folder = write_beir(tmp_path / "enc")
    with open(folder / "queries.jsonl", "ab") as fh:
        fh.write(b'{"_id": "q9", "text": "caf\xe9"}\n')
    assert problems_of(folder) == [f"{folder / 'queries.jsonl'}:6: not valid UTF-8 (byte 26)"]

    empty = write_beir(tmp_path / "empty")
    (empty / "corpus.jsonl").write_text("")
    assert f"{empty / 'corpus.jsonl'}: the file is empty" in problems_of(empty)

    missing = write_beir(tmp_path / "missing")
    (missing / "queries.jsonl").unlink()
    assert problems_of(missing) == [f"{missing / 'queries.jsonl'}: file not found"]


def test_header_is_optional_and_grades_are_kept(tmp_path):
    folder = write_beir(tmp_path / "nohead")
    (folder / "qrels" / "test.tsv").write_text("q2\td4\t2\nq2\td3\t1\n")
    from apps.datasets.beir import iter_qrels

    data = scan_beir_folder(folder)
    assert data.qrels_counts["test"] == 2
    assert [r for r in iter_qrels(data) if r[0] == "test"] == [
        ("test", "q2", "d4", 2),
        ("test", "q2", "d3", 1),
    ]


@pytest.mark.django_db
def test_import_creates_rows_and_reuses_identical_content(team, beir_folder, tmp_path):
    first = dataset_import_beir(team=team, name="tiny", path=beir_folder)
    assert first.created and first.version.number == 1
    v = first.version
    assert (v.document_count, v.query_count, v.qrels_counts) == (8, 5, {"test": 4, "train": 1})
    assert Document.objects.filter(version=v).count() == 8
    assert (
        Qrel.objects.get(version=v, split="test", query__query_id="q2", document__doc_id="d4").score
        == 2
    )

    again = dataset_import_beir(team=team, name="tiny", path=beir_folder)
    assert not again.created and again.version.pk == v.pk
    assert DatasetVersion.objects.count() == 1

    changed = write_beir(tmp_path / "changed", corpus=[*TINY_CORPUS, {"_id": "d9", "text": "new"}])
    second = dataset_import_beir(team=team, name="tiny", path=changed)
    assert second.created and second.version.number == 2 and second.version.parent_id == v.pk


@pytest.mark.django_db
def test_failed_import_writes_nothing(team, tmp_path):
    folder = write_beir(tmp_path / "bad", qrels={"test": [("q1", "missing-doc", 1)]})
    with pytest.raises(BeirError):
        dataset_import_beir(team=team, name="bad", path=folder)
    assert not Dataset.objects.exists() and not Query.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_crash_mid_write_leaves_no_rows(team, beir_folder, monkeypatch):
    from apps.datasets import services

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services.loader, "load_qrels", explode)
    with pytest.raises(RuntimeError):
        dataset_import_beir(team=team, name="tiny", path=beir_folder)
    assert not DatasetVersion.objects.exists()
    assert not Document.objects.exists()


def test_shipped_demo_scifact_is_the_shared_one():
    """The gzipped copy in demo/ is byte-identical in content to ../shared/data/scifact."""
    from tests.conftest import REPO

    shipped = REPO / "demo" / "scifact"
    assert (shipped / "SOURCE.md").exists()
    shared = REPO.parent / "shared" / "data" / "scifact"
    data = scan_beir_folder(shipped)
    assert (data.document_count, data.query_count) == (5183, 1109)
    assert data.qrels_counts == {"test": 339, "train": 919}
    if shared.exists():
        assert scan_beir_folder(shared).content_hash == data.content_hash


def test_queries_fixture_is_consistent():
    ids = {q["_id"] for q in TINY_QUERIES}
    assert all(q in ids for rows in TINY_QRELS.values() for q, _, _ in rows)
    assert json.dumps(TINY_CORPUS)


SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.mark.django_db
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is beside the repo in CI")
def test_real_collections_ingest_with_exact_counts(team):
    scifact = dataset_import_beir(team=team, name="scifact", path=SHARED / "scifact").version
    assert (scifact.document_count, scifact.query_count) == (5183, 1109)
    assert scifact.qrels_counts == {"test": 339, "train": 919}
    assert scifact.documents.count() == 5183 and scifact.qrels.filter(split="train").count() == 919
    cranfield = dataset_import_beir(team=team, name="cranfield", path=SHARED / "cranfield").version
    assert (cranfield.document_count, cranfield.query_count) == (1400, 225)
    assert cranfield.qrels_counts == {"test": 1837, "test_graded": 1837}
    assert set(cranfield.qrels.filter(split="test_graded").values_list("score", flat=True)) > {1}


@pytest.mark.django_db
def test_import_command_takes_an_archive(team, beir_folder, tmp_path):
    import io
    import json
    import tarfile

    from django.core.management import call_command

    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(beir_folder, arcname="tiny")
    out = io.StringIO()
    call_command("import_dataset", str(archive), "--team", "acme", "--name", "t", stdout=out)
    assert json.loads(out.getvalue())["documents"] == 8


def test_empty_document_is_a_warning_and_empty_query_an_error(tmp_path):
    folder = write_beir(
        tmp_path / "e", corpus=[*TINY_CORPUS, {"_id": "d9", "title": "", "text": ""}]
    )
    scan = scan_beir_folder(folder)
    assert scan.document_count == 9
    assert "1 document(s) have neither title nor text." in scan.warnings
    bad = write_beir(tmp_path / "q", queries=[*TINY_QUERIES, {"_id": "q9", "text": "  "}])
    assert problems_of(bad) == [f"{bad / 'queries.jsonl'}:6: empty 'text'"]
