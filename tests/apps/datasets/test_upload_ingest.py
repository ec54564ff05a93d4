from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.datasets.archives import ArchiveError, extract_archive
from apps.datasets.models import DatasetVersion, Document, IngestJob
from tests.conftest import write_beir
from workers.tasks.ingest import ingest

pytestmark = pytest.mark.django_db


def zip_folder(folder, prefix="scifact-mini/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + str(path.relative_to(folder)))
    return buf.getvalue()


def upload(client, name, files, *, htmx=False):
    extra = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.post(reverse("datasets:upload"), {"name": name, "files": files}, **extra)


def run_queued(callbacks):
    for callback in callbacks:
        callback()  # sends the task; run it in-process like the worker would


def test_upload_a_zip_from_the_page_and_watch_it_ingest(
    client, member, beir_folder, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))
    client.force_login(member)
    archive = SimpleUploadedFile("tiny.zip", zip_folder(beir_folder))
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, "tiny", [archive], htmx=True)
    job = IngestJob.objects.get()
    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("datasets:ingest", args=[job.pk])
    assert job.status == "succeeded" and not job.reused
    assert (job.version.document_count, job.version.qrels_counts) == (8, {"test": 4, "train": 1})
    fragment = client.get(reverse("datasets:ingest", args=[job.pk]), HTTP_HX_REQUEST="true",
                          HTTP_HX_TARGET="ingest-status")  # fmt: skip
    body = fragment.content.decode()
    assert 'id="ingest-result"' in body and "hx-trigger" not in body  # polling has stopped


def test_loose_files_and_identical_content_reuse_the_version(
    client, member, beir_folder, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))
    client.force_login(member)

    def files():
        return [
            SimpleUploadedFile("corpus.jsonl", (beir_folder / "corpus.jsonl").read_bytes()),
            SimpleUploadedFile("queries.jsonl", (beir_folder / "queries.jsonl").read_bytes()),
            SimpleUploadedFile("test.tsv", (beir_folder / "qrels" / "test.tsv").read_bytes()),
            SimpleUploadedFile("train.tsv", (beir_folder / "qrels" / "train.tsv").read_bytes()),
        ]

    with django_capture_on_commit_callbacks(execute=True):
        upload(client, "tiny", files())
    with django_capture_on_commit_callbacks(execute=True):
        upload(client, "tiny", [SimpleUploadedFile("tiny.zip", zip_folder(beir_folder))])
    first, second = IngestJob.objects.order_by("pk")
    assert first.status == second.status == "succeeded"
    assert second.reused and second.version_id == first.version_id
    assert DatasetVersion.objects.count() == 1


def test_bad_upload_lists_file_line_reason_and_writes_nothing(
    client, member, tmp_path, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))
    folder = write_beir(tmp_path / "bad", qrels={"test": [("q1", "nope", 1), ("q1", "d1", "x")]})
    client.force_login(member)
    with django_capture_on_commit_callbacks(execute=True):
        upload(client, "bad", [SimpleUploadedFile("bad.zip", zip_folder(folder, prefix=""))])
    job = IngestJob.objects.get()
    assert job.status == "failed"
    assert job.problems == [
        "qrels/test.tsv:2: unknown document id 'nope'",
        "qrels/test.tsv:3: relevance 'x' is not an integer",
    ]
    assert job.human_error.startswith("2 problems, the first: qrels/test.tsv:2")
    page = client.get(reverse("datasets:ingest", args=[job.pk])).content.decode()
    assert "qrels/test.tsv:3: relevance" in page and "Nothing was imported" in page
    # Each problem is printed once: the status line counts them, the list names them.
    assert page.count("qrels/test.tsv:2: unknown document id") == 1
    assert "Refused: 2 problems, listed below." in page
    assert not DatasetVersion.objects.exists() and not Document.objects.exists()


def test_unknown_loose_file_is_refused(client, member):
    client.force_login(member)
    response = upload(client, "x", [SimpleUploadedFile("notes.docx", b"hello")])
    assert response.status_code == 400  # at once, by the pre-check: no job to wait for
    assert "notes.docx: not a BEIR file" in response.content.decode()
    assert not IngestJob.objects.exists()


def test_upload_size_limit(client, member, settings):
    settings.DATASET_UPLOAD_MAX_BYTES = 10
    client.force_login(member)
    response = upload(client, "x", [SimpleUploadedFile("corpus.jsonl", b"x" * 11)])
    assert "over the limit of 10" in response.content.decode()
    assert not IngestJob.objects.exists()


def test_viewers_and_outsiders_cannot_upload_or_see_ingests(
    client, viewer, outsider, member, beir_folder
):
    client.force_login(viewer)
    assert upload(client, "x", [SimpleUploadedFile("a.zip", b"")]).status_code == 403
    client.force_login(member)
    upload(client, "tiny", [SimpleUploadedFile("tiny.zip", zip_folder(beir_folder))])
    job = IngestJob.objects.get()
    client.force_login(outsider)
    assert client.get(reverse("datasets:ingest", args=[job.pk])).status_code == 404


# --- archive safety ------------------------------------------------------------------------


def make_zip(tmp_path, members: dict[str, bytes], name="a.zip"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def test_zip_path_escape_is_refused(tmp_path):
    for evil in ("../escape.txt", "/etc/passwd", "a/../../x"):
        archive = make_zip(tmp_path, {evil: b"x"})
        with pytest.raises(ArchiveError, match="points outside the archive"):
            extract_archive(archive, tmp_path / "out", max_bytes=10**6, max_ratio=100)
        assert not (tmp_path / "escape.txt").exists()


def test_zip_bomb_is_refused_by_ratio_and_by_total(tmp_path):
    archive = make_zip(tmp_path, {"corpus.jsonl": b"\0" * (50 * 1024 * 1024)})
    with pytest.raises(ArchiveError, match="expands over 100"):
        extract_archive(archive, tmp_path / "out", max_bytes=10**9, max_ratio=100)
    assert not (tmp_path / "out").exists()  # nothing half-extracted is left
    with pytest.raises(ArchiveError, match="expands to more than 1,000 bytes"):
        extract_archive(
            make_zip(tmp_path, {"a": b"y" * 2000}, "b.zip"),
            tmp_path / "o2",
            max_bytes=1000,
            max_ratio=10**6,
        )


def test_links_in_tar_and_zip_are_refused(tmp_path):
    path = tmp_path / "links.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("corpus.jsonl")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ArchiveError, match="is a link"):
        extract_archive(path, tmp_path / "out", max_bytes=10**6, max_ratio=100)

    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        info = zipfile.ZipInfo("corpus.jsonl")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="is a link"):
        extract_archive(zpath, tmp_path / "out2", max_bytes=10**6, max_ratio=100)


def test_tar_gz_of_a_beir_folder_extracts(tmp_path, beir_folder):
    from apps.datasets.archives import find_beir_root

    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(beir_folder, arcname="mydata")
    out = extract_archive(path, tmp_path / "out", max_bytes=10**7, max_ratio=1000)
    assert find_beir_root(out) == out / "mydata"


def test_garbage_is_not_an_archive(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="not a readable archive"):
        extract_archive(path, tmp_path / "out", max_bytes=10**6, max_ratio=100)


@pytest.mark.timeout(120, method="thread")
@pytest.mark.django_db(transaction=True)
def test_ingest_job_with_more_rows_than_a_copy_batch_finishes(
    client, member, beir_folder, monkeypatch, tmp_path
):
    """On PostgreSQL a progress write from inside COPY waited on itself forever (≥ BATCH rows)."""
    from apps.datasets import loader
    from apps.datasets.ingest import ingest_create

    monkeypatch.setattr(loader, "BATCH", 2)
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: None)
    files = [SimpleUploadedFile("tiny.zip", zip_folder(beir_folder))]
    job = ingest_create(team=member.memberships.get().team, user=member, name="tiny", files=files)
    ingest(job.pk)  # the real task: claim, real ProgressReporter and heartbeat, COPY in batches
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.version.documents.count() == 8 and job.version.training_count == 0
