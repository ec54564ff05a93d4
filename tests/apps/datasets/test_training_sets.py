from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.datasets.beir import BeirError, scan_beir_folder
from apps.datasets.models import DatasetVersion, IngestJob, TrainingRow
from apps.datasets.services import dataset_import_training, dataset_version_pairs_from_qrels
from apps.datasets.training import detect_roles, scan_training_file
from workers.tasks.ingest import ingest


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    return path


def test_roles_by_name_never_by_position():
    roles = detect_roles(
        ["score", "negative_2", "positive", "id", "negative_1", "anchor"], file="f"
    )
    assert (roles.anchor, roles.positive, roles.score) == ("anchor", "positive", "score")
    assert roles.negatives == ["negative_1", "negative_2"] and roles.ignored == ["id"]
    synonyms = detect_roles(["question", "passage", "neg"], file="f")
    assert (synonyms.anchor, synonyms.positive, synonyms.negatives) == (
        "question",
        "passage",
        ["neg"],
    )
    with pytest.raises(BeirError, match="no column for positive"):
        detect_roles(["anchor", "text"], file="f")


def test_scan_reports_file_line_reason(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"anchor": "a", "positive": "p"},
            {"anchor": "", "positive": "p"},
            {"anchor": "a", "positive": "p", "score": "high"},
        ],
    )
    with open(path, "a") as fh:
        fh.write("{broken\n")
    with pytest.raises(BeirError) as info:
        scan_training_file(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:2: missing or empty 'anchor'",
        f"{path}:3: 'score' is not a number",
        f"{path}:4: malformed JSON (Expecting property name enclosed in double quotes)",
    ]
    bad_csv = tmp_path / "t.csv"
    bad_csv.write_text("anchor,positive\nq,d\nq,d,extra\n")
    with pytest.raises(BeirError, match=r"t.csv:3: expected 2 columns, found 3"):
        scan_training_file(bad_csv)


def test_csv_with_triplets_scores_and_warnings(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        ["id", "anchor", "positive", "negative_1", "negative_2", "score"],
        [
            ["1", "what is tea", "Tea is a drink", "Coffee", "", "0.9"],
            ["2", "what is tea", "Tea is a drink", "Mars", "Moon", ""],
            ["3", "same", "same", "", "", ""],
        ],
    )
    scan = scan_training_file(path)
    assert scan.row_count == 3 and scan.format == "csv"
    assert scan.warnings == [
        "Columns not used: id.",
        "1 duplicate (anchor, positive) pair(s).",
        "1 row(s) whose anchor is also its positive.",
    ]


@pytest.mark.django_db
def test_import_training_set_rows_and_reuse(team, tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"anchor": "q1", "positive": "p1", "negative": "n1"},
            {"anchor": "q2", "positive": "p2", "score": 0.5},
        ],
    )
    first = dataset_import_training(team=team, name="pairs", path=path)
    v = first.version
    assert first.created and v.kind == "training" and v.training_count == 2
    assert list(v.training_rows.order_by("row").values_list("anchor", "negatives", "score")) == [
        ("q1", ["n1"], None),
        ("q2", [], 0.5),
    ]
    again = dataset_import_training(team=team, name="pairs", path=path)
    assert not again.created and again.version.pk == v.pk


@pytest.mark.django_db
def test_pairs_from_judgements_make_a_derived_version(team, tiny_version):
    result = dataset_version_pairs_from_qrels(version=tiny_version, split="test")
    v = result.version
    assert v.parent_id == tiny_version.pk and v.number == 2 and v.kind == "training"
    assert v.params == {
        "operation": "pairs_from_qrels",
        "source_version": tiny_version.pk,
        "split": "test",
        "min_score": 1,
    }
    assert v.training_count == 4
    anchors = set(v.training_rows.values_list("anchor", "positive"))
    assert (
        "programming language for reliable software",
        "Rust Rust is a language empowering everyone to build reliable software.",
    ) in anchors
    assert dataset_version_pairs_from_qrels(version=tiny_version, split="test").version.pk == v.pk
    with pytest.raises(ValueError, match="no judgements for split 'dev'"):
        dataset_version_pairs_from_qrels(version=tiny_version, split="dev")


@pytest.mark.django_db
def test_training_upload_shows_roles_then_imports_on_confirm(
    client, member, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))
    client.force_login(member)
    data = "question,passage,negative_1\nwhat is tea,Tea is a drink,Coffee is not\n"
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("datasets:upload"),
            {"name": "pairs", "files": [SimpleUploadedFile("pairs.csv", data.encode())]},
        )
    job = IngestJob.objects.get()
    assert job.kind == "training" and job.awaiting_confirmation and job.status == "pending"
    page = client.get(reverse("datasets:ingest", args=[job.pk])).content.decode()
    assert "<code>question</code>" in page and "<code>passage</code>" in page
    assert "Import with these roles" in page and not TrainingRow.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("datasets:ingest_start", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "succeeded" and job.version.training_count == 1
    assert TrainingRow.objects.get().negatives == ["Coffee is not"]


@pytest.mark.django_db
def test_exports_round_trip(client, owner, outsider, tiny_version, tmp_path):
    client.force_login(owner)
    response = client.get(reverse("datasets:version_export", args=[tiny_version.pk]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    archive.extractall(tmp_path / "out")
    exported = scan_beir_folder(tmp_path / "out" / "tiny-v1")
    assert exported.content_hash  # it reads back as a valid BEIR folder
    assert (exported.document_count, exported.qrels_counts) == (8, {"test": 4, "train": 1})

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    response = client.get(reverse("datasets:version_export", args=[pairs.pk]))
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 4 and set(json.loads(lines[0])) == {"anchor", "positive", "score"}

    client.force_login(outsider)
    for pk in (tiny_version.pk, pairs.pk):
        assert client.get(reverse("datasets:version_export", args=[pk])).status_code == 404
    assert DatasetVersion.objects.count() == 2
