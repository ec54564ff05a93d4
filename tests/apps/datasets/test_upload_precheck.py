"""Uploads refused at once: what shows without reading the whole corpus answers 400 from the
page and the API with ``FILE:LINE: reason`` problems, and creates nothing (no dataset, version,
job row or stored file). Also: a UTF-8 byte order mark is dropped, a loose .gz file gets the
archive's expansion limits, a very long line is refused without being read whole, and no
problem names a server path."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from apps.accounts.services import api_token_create
from apps.datasets.beir import BeirError, scan_beir_folder
from apps.datasets.models import Dataset, DatasetVersion, Document, IngestJob
from apps.datasets.services import dataset_import_beir
from apps.datasets.training import scan_training_file
from tests.apps.datasets.test_upload_ingest import upload
from tests.conftest import TINY_CORPUS, write_beir
from workers.tasks.ingest import ingest

pytestmark = pytest.mark.django_db

UPLOADS = "/api/v1/datasets/uploads"
BOM = b"\xef\xbb\xbf"
MISSING = (
    "missing (a BEIR upload is corpus.jsonl, queries.jsonl and one <split>.tsv per split, "
    "or one .zip / .tar.gz holding them)"
)


@pytest.fixture(autouse=True)
def _ingest_in_process(monkeypatch):
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))


@pytest.fixture
def api(team, member):
    _, raw = api_token_create(team=team, user=member, name="ci")
    client = Client(enforce_csrf_checks=True)

    def post(files, name="tiny"):
        return client.post(
            UPLOADS, {"name": name, "files": files}, HTTP_AUTHORIZATION=f"Bearer {raw}"
        )

    return post


def members(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {
        prefix + str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def zip_of(files: dict[str, bytes], name: str = "tiny.zip") -> SimpleUploadedFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return SimpleUploadedFile(name, buf.getvalue())


def loose(folder: Path, **replace: bytes) -> list[SimpleUploadedFile]:
    """The folder's files as separate uploads (qrels by their base name); ``replace`` swaps a
    file's bytes (``corpus_jsonl=…``), or drops it when given b"" ."""
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        data = replace.get(path.name.replace(".", "_"), path.read_bytes())
        if data:
            files.append(SimpleUploadedFile(path.name, data))
    return files


def tar_with_link(folder: Path) -> SimpleUploadedFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname="data")
        info = tarfile.TarInfo("data/qrels/dev.tsv")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    return SimpleUploadedFile("tiny.tar.gz", buf.getvalue())


# (files from the tiny BEIR folder, the problems answered at once)
REFUSED = {
    "not a zip": (
        lambda f: [SimpleUploadedFile("tiny.zip", b"PK not really a zip")],
        ["tiny.zip: not a readable archive (File is not a zip file)"],
    ),
    "member outside the archive": (
        lambda f: [zip_of({**members(f), "../../etc/cron.d/x": b"boom"})],
        ["tiny.zip: member '../../etc/cron.d/x' points outside the archive"],
    ),
    "link in a tar.gz": (
        tar_with_link,
        ["tiny.tar.gz: member 'data/qrels/dev.tsv' is a link"],
    ),
    "no corpus in the archive": (
        lambda f: [zip_of({k: v for k, v in members(f, "mini/").items() if "corpus" not in k})],
        ["tiny.zip: no corpus.jsonl inside the archive"],
    ),
    "no corpus among loose files": (
        lambda f: loose(f, corpus_jsonl=b""),
        [f"corpus.jsonl: {MISSING}"],
    ),
    "two corpora in loose files": (
        lambda f: [
            *loose(f),
            SimpleUploadedFile("corpus.jsonl.gz", gzip.compress((f / "corpus.jsonl").read_bytes())),
        ],
        ["corpus.jsonl.gz: two corpora (corpus.jsonl and corpus.jsonl.gz); keep one"],
    ),
    "two corpora in an archive": (
        lambda f: [
            zip_of(
                {
                    **members(f, "mini/"),
                    "mini/corpus.jsonl.gz": gzip.compress((f / "corpus.jsonl").read_bytes()),
                }
            )
        ],
        ["mini/corpus.jsonl.gz: two corpora (corpus.jsonl and corpus.jsonl.gz); keep one"],
    ),
    "two dataset folders in one archive": (
        lambda f: [zip_of({**members(f, "first/"), **members(f, "second/")})],
        ["tiny.zip: two datasets in one archive (first/, second/); upload one at a time"],
    ),
    "two files for one split": (
        lambda f: [
            *loose(f),
            SimpleUploadedFile("test.tsv.gz", gzip.compress((f / "qrels/test.tsv").read_bytes())),
        ],
        ["test.tsv.gz: a second file for split 'test' (with test.tsv)"],
    ),
    "a text file": (
        lambda f: [SimpleUploadedFile("notes.txt", b"my dataset\n")],
        [
            "notes.txt: not a BEIR file (expected corpus.jsonl, queries.jsonl and <split>.tsv, "
            "or one .zip / .tar.gz holding them; a training set is one .jsonl or .csv file on "
            "its own)"
        ],
    ),
    "no queries among loose files": (
        lambda f: loose(f, queries_jsonl=b""),
        [f"queries.jsonl: {MISSING}"],
    ),
    "no queries in the archive": (
        lambda f: [zip_of({k: v for k, v in members(f, "mini/").items() if "queries" not in k})],
        ["mini/queries.jsonl: file not found"],
    ),
    "a corpus that is not JSONL": (
        lambda f: loose(f, corpus_jsonl=b"_id,title,text\nd1,Tea,A drink\n"),
        ["corpus.jsonl:1: malformed JSON (Expecting value)"],
    ),
    "a corpus member that is not JSONL": (
        lambda f: [zip_of({**members(f, "mini/"), "mini/corpus.jsonl": b"\x89PNG\x00\x01"})],
        ["mini/corpus.jsonl:1: not valid UTF-8 (byte 0)"],
    ),
    "a training file without the roles": (
        lambda f: [SimpleUploadedFile("pairs.csv", b"question,answer_text\nwhat,that\n")],
        [
            "pairs.csv:1: no column for positive (columns: question, answer_text; expected "
            "anchor, positive, optional negative / negative_1..n, score)"
        ],
    ),
}


def assert_nothing_created(settings) -> None:
    assert not IngestJob.objects.exists()
    assert not Dataset.objects.exists() and not DatasetVersion.objects.exists()
    uploads = Path(settings.ARTIFACTS_ROOT) / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "a refused upload left files"


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_the_page_refuses_at_once_and_creates_nothing(client, member, beir_folder, settings, case):
    files, expected = REFUSED[case]
    client.force_login(member)
    response = upload(client, "tiny", files(beir_folder))
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="upload-errors"' in body and 'id="upload-form"' in body  # the form, again
    for problem in expected:
        assert escape(problem) in body
    assert_nothing_created(settings)


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_the_api_refuses_at_once_and_creates_nothing(api, beir_folder, settings, case):
    files, expected = REFUSED[case]
    response = api(files(beir_folder))
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["problems"] == expected
    assert body["error"] == expected[0]
    assert_nothing_created(settings)


def test_the_htmx_page_gets_the_refusal_too(client, member, beir_folder, settings):
    client.force_login(member)
    response = upload(client, "x", [SimpleUploadedFile("notes.txt", b"x")], htmx=True)
    assert response.status_code == 400 and "notes.txt: not a BEIR file" in response.content.decode()
    # htmx swaps no 4xx by itself: the page says to swap this one in
    page = client.get(reverse("datasets:upload")).content.decode()
    assert "htmx:beforeSwap" in page and "status === 400" in page
    assert_nothing_created(settings)


def test_a_good_upload_still_passes_the_precheck(
    api, beir_folder, django_capture_on_commit_callbacks
):
    for files in (
        [zip_of(members(beir_folder, "mini/"))],
        loose(beir_folder),
        [SimpleUploadedFile("tiny.tar.gz", _tar_gz(beir_folder))],
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = api(files)
        assert response.status_code == 202, response.content
    assert set(IngestJob.objects.values_list("status", flat=True)) == {"succeeded"}


def _tar_gz(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname="mini")
    return buf.getvalue()


def test_a_second_dataset_folder_is_refused_by_the_ingest_too(tmp_path, beir_folder):
    """The job applies the pre-check's rules (an upload stored before them, or by hand)."""
    from apps.datasets.ingest import IngestError
    from workers.tasks.ingest import arrange_upload

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "tiny.zip").write_bytes(
        zip_of({**members(beir_folder, "first/"), **members(beir_folder, "second/")}).read()
    )
    with pytest.raises(IngestError) as info:
        arrange_upload(incoming, tmp_path / "data")
    assert info.value.problems == [
        "tiny.zip: two datasets in one archive (first/, second/); upload one at a time"
    ]
    write_beir(tmp_path / "two")
    (tmp_path / "two" / "corpus.jsonl.gz").write_bytes(gzip.compress(b"{}"))
    with pytest.raises(BeirError, match="two corpora"):
        scan_beir_folder(tmp_path / "two")


# --- a UTF-8 byte order mark ------------------------------------------------------------------


def test_a_byte_order_mark_is_dropped_by_the_reader(team, tmp_path):
    plain = write_beir(tmp_path / "plain")
    marked = write_beir(tmp_path / "marked")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
        (marked / name).write_bytes(BOM + (marked / name).read_bytes())
    scan = scan_beir_folder(marked)
    assert scan.qrels_counts == {"test": 4, "train": 1}
    assert scan.content_hash == scan_beir_folder(plain).content_hash  # the same content
    result = dataset_import_beir(team=team, name="bom", path=marked)  # the load pass reads it too
    assert result.created and Document.objects.filter(version=result.version).count() == 8
    assert dataset_import_beir(team=team, name="bom", path=plain).version == result.version

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_bytes(BOM + b"anchor,positive\r\nwhat is tea,Tea is a drink.\r\n")
    training = scan_training_file(csv_path)
    assert (training.roles.anchor, training.row_count) == ("anchor", 1)


def test_uploads_with_a_byte_order_mark_are_accepted(
    api, client, member, beir_folder, django_capture_on_commit_callbacks
):
    marked = loose(
        beir_folder,
        corpus_jsonl=BOM + (beir_folder / "corpus.jsonl").read_bytes(),
        test_tsv=BOM + (beir_folder / "qrels/test.tsv").read_bytes(),
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api(marked)
    assert response.status_code == 202, response.content
    job = IngestJob.objects.get()
    assert job.status == "succeeded", job.problems
    assert job.version.qrels_counts == {"test": 4, "train": 1}

    client.force_login(member)
    pairs = SimpleUploadedFile("pairs.csv", BOM + b"query,passage\nwhat is tea,Tea is a drink.\n")
    assert upload(client, "pairs", [pairs]).status_code == 302
    assert IngestJob.objects.get(dataset_name="pairs").kind == "training"


# --- a loose .gz file gets the archive's expansion limits -------------------------------------


def corpus_bytes(n: int) -> bytes:
    """A valid corpus of ``n`` repeated-looking documents: it compresses very well."""
    return "".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": "tea " * 20}) + "\n" for i in range(n)
    ).encode()


@pytest.mark.parametrize("via", ["page", "api"])
def test_a_loose_gz_bomb_is_refused_at_once(client, member, api, beir_folder, settings, via):
    settings.DATASET_ARCHIVE_MAX_RATIO = 10
    data = corpus_bytes(120_000)  # 12 MB → about 0.5 MB compressed
    packed = gzip.compress(data)
    assert len(data) > 10 * 1024**2 and len(data) > 10 * len(packed)
    files = [*loose(beir_folder, corpus_jsonl=b""), SimpleUploadedFile("corpus.jsonl.gz", packed)]
    expected = "corpus.jsonl.gz: expands over 10× (a decompression bomb?)"
    if via == "api":
        response = api(files)
        assert response.status_code == 400 and response.json()["problems"] == [expected]
    else:
        client.force_login(member)
        response = upload(client, "tiny", files)
        assert response.status_code == 400 and escape(expected) in response.content.decode()
    assert_nothing_created(settings)


def test_the_reader_holds_a_loose_gz_to_the_limits(tmp_path, settings):
    """What the job enforces while reading, whatever the gzip trailer claims."""
    settings.DATASET_ARCHIVE_MAX_BYTES = 1000
    folder = write_beir(tmp_path / "b")
    (folder / "corpus.jsonl").unlink()
    (folder / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus_bytes(50)))
    with pytest.raises(BeirError) as info:
        scan_beir_folder(folder)
    assert [str(p) for p in info.value.problems][0] == (
        f"{folder / 'corpus.jsonl.gz'}: expands to more than 1,000 bytes (a decompression bomb?)"
    )
    pairs = tmp_path / "pairs.jsonl.gz"
    pairs.write_bytes(gzip.compress(b'{"anchor": "a", "positive": "b"}\n' * 100))
    with pytest.raises(BeirError, match="expands to more than 1,000 bytes"):
        scan_training_file(pairs)


# --- a very long line -------------------------------------------------------------------------


def test_a_long_line_is_a_problem_and_the_lines_after_it_are_read(tmp_path, settings):
    settings.DATASET_MAX_LINE_BYTES = 200
    corpus = [*TINY_CORPUS[:2], {"_id": "long", "text": "x" * 500}, {"_id": "d1", "text": "dup"}]
    folder = write_beir(tmp_path / "b", corpus=corpus)
    with pytest.raises(BeirError) as info:
        scan_beir_folder(folder)
    problems = [str(p).removeprefix(f"{folder}/") for p in info.value.problems]
    assert problems[:2] == [
        "corpus.jsonl:3: line longer than 200 bytes",
        "corpus.jsonl:4: duplicate document id 'd1'",
    ]


def test_a_huge_line_is_never_held_whole(tmp_path, settings):
    settings.DATASET_MAX_LINE_BYTES = 64 * 1024
    folder = write_beir(tmp_path / "b")
    huge = b'{"_id": "big", "text": "' + b"x" * (8 * 1024**2)  # 8 MB, no newline
    (folder / "corpus.jsonl").write_bytes((folder / "corpus.jsonl").read_bytes() + huge)
    tracemalloc.start()
    try:
        with pytest.raises(BeirError) as info:
            scan_beir_folder(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024**2, f"{peak:,} bytes held for an 8 MB line"
    assert str(info.value.problems[0]).endswith("corpus.jsonl:9: line longer than 65,536 bytes")


@pytest.mark.parametrize("via", ["page", "api"])
def test_a_long_first_line_is_refused_at_once(client, member, api, beir_folder, settings, via):
    settings.DATASET_MAX_LINE_BYTES = 100
    line = json.dumps({"_id": "d1", "text": "tea " * 50}).encode() + b"\n"
    files = [zip_of({**members(beir_folder, "mini/"), "mini/corpus.jsonl": line})]
    expected = "mini/corpus.jsonl:1: line longer than 100 bytes"
    if via == "api":
        response = api(files)
        assert response.status_code == 400 and response.json()["problems"] == [expected]
    else:
        client.force_login(member)
        response = upload(client, "tiny", files)
        assert response.status_code == 400 and expected in response.content.decode()
    assert_nothing_created(settings)


# --- no server path in a problem --------------------------------------------------------------


def test_problems_of_a_temporary_upload_name_no_server_path(api, beir_folder, settings, tmp_path):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload is a temporary file on disk
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    for files in (
        [SimpleUploadedFile("tiny.zip", b"not a zip")],
        [SimpleUploadedFile("tiny.tar.gz", b"\x1f\x8b\x08\x00broken")],
        loose(beir_folder, corpus_jsonl=b"\xff\xfe not json\n"),
    ):
        response = api(files)
        assert response.status_code == 400
        text = json.dumps(response.json())
        assert str(tmp_path) not in text and "/tmp" not in text and ".upload" not in text
    assert_nothing_created(settings)


def test_job_problems_and_the_version_name_no_server_path(
    api, client, member, tmp_path, settings, django_capture_on_commit_callbacks
):
    root = str(settings.ARTIFACTS_ROOT)
    # 60 unknown judgements: more than the reader lists, so a "… and N more" line follows.
    qrels = {"test": [("q1", f"missing{i}", 1) for i in range(60)]}
    bad = write_beir(tmp_path / "bad", qrels=qrels)
    with django_capture_on_commit_callbacks(execute=True):
        response = api([zip_of(members(bad))], name="bad")
    assert response.status_code == 202
    job = IngestJob.objects.get()
    assert job.status == "failed" and len(job.problems) == 51
    assert job.problems[-1] == "tiny.zip: … and 10 more"
    assert not any(root in p for p in job.problems) and root not in job.human_error

    # A member that is both a file and a folder fails the extraction with an OSError.
    clash = {**members(write_beir(tmp_path / "ok")), "x": b"1", "x/y": b"2"}
    with django_capture_on_commit_callbacks(execute=True):
        api([zip_of(clash, "clash.zip")], name="clash")
    job = IngestJob.objects.get(dataset_name="clash")
    assert job.status == "failed" and job.problems[0].startswith("clash.zip: not a readable")
    assert not any(root in p for p in job.problems), job.problems

    with django_capture_on_commit_callbacks(execute=True):
        api([zip_of(members(write_beir(tmp_path / "good")), "good.zip")], name="good")
    version = IngestJob.objects.get(dataset_name="good").version
    assert version.source == "upload: good.zip"
    client.force_login(member)
    page = client.get(reverse("datasets:version", args=[version.pk])).content.decode()
    assert root not in page
