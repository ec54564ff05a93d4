"""Random and corrupted files fed to each parser: never a server error, never partial rows.

The BEIR reader either accepts a folder (and then streams exactly the rows it counted) or raises
BeirError whose every problem names a file of the folder, a line that exists and a reason; the
import writes all rows or none; an upload from the page ends as a succeeded job or a failed one
with its problems listed; a broken archive is an ArchiveError that leaves nothing behind.

Each property also runs pinned ``@example`` inputs (``*_REGRESSIONS``, ``ZIP_*``) that broke it
once, so a regression fails on every run and not only when the random search meets it again.
"""

from __future__ import annotations

import gzip
import io
import json
import string
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.db.models import Count
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apps.datasets.archives import ArchiveError, extract_archive
from apps.datasets.beir import (
    BeirError,
    BeirScan,
    iter_documents,
    iter_qrels,
    iter_queries,
    scan_beir_folder,
)
from apps.datasets.ingest import IngestError
from apps.datasets.models import Dataset, DatasetVersion, Document, IngestJob, Qrel, Query
from apps.datasets.precheck import upload_problems
from apps.datasets.services import dataset_import_beir
from apps.datasets.training import is_training_file, scan_training_file
from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES, write_beir
from workers.tasks.ingest import arrange_upload

FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv")
BYTE_OPS = ("truncate", "flip", "insert_bytes", "replace_file")
LINE_OPS = ("delete_line", "duplicate_line", "swap_columns", "set_field", "insert_line")

# Byte sequences that are never valid UTF-8: stray continuation, overlong, truncated, surrogate.
INVALID_UTF8 = [
    b"\xff",
    b"\x80",
    b"\xc3",
    b"\xc0\xaf",
    b"\xe9",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
]
# Lines that are valid enough to reach deep into the reader (or the database) but are nasty.
# Named so that a failing example prints short; ``insert_line`` takes a name or raw bytes.
NASTY_JSONL = {
    "nul_text": b'{"_id": "dz", "text": "nul \\u0000 inside"}',
    "surrogate_text": b'{"_id": "dz", "text": "lone \\ud800 surrogate"}',
    "nul_metadata": b'{"_id": "dz", "text": "x", "metadata": {"k": "\\u0000"}}',
    "nul_id": b'{"_id": "d\\u0000z", "text": "x"}',
    "huge_int_id": b'{"_id": ' + b"9" * 5000 + b', "text": "x"}',
    "deep_nesting": b"[" * 100_000,
    "nan_text": b'{"_id": "dz", "text": NaN}',
    "bom": b'\xef\xbb\xbf{"_id": "dz", "text": "bom"}',
    "carriage_return": b'{"_id": "dz", "text": "x"}\r',
    "repeated_key": b'{"_id": "dz", "_id": "dz2", "text": "x"}',
    "int_id": b'{"_id": 7, "text": "an integer id"}',
    "bool_id": b'{"_id": true, "text": "a boolean id"}',
}
NASTY_TSV = {
    "carriage_return": b"q1\rd1\t1",
    "score_over_int32": b"q1\td1\t99999999999",
    "score_5000_digits": b"q1\td1\t" + b"9" * 5000,
    "open_quote": b'"q1\td1\t1',
    "arabic_digit_score": b"q1\td1\t\xd9\xa3",  # int() reads it as 3
    "underscore_score": b"q1\td1\t1_0",
    "four_columns": b"q1\t\td1\t1",
    "nul_in_id": b"q1\x00\td1\t1",
    "second_header": b"query-id\tcorpus-id\tscore",
}
SCORES = ["high", "1.5", "", " ", "NaN", "-1", "1e3", "\u0663", "1_0", "99999999999", "9" * 20]
JSON_KEYS = ["_id", "text", "title", "metadata", "other"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["d1", "q1", "", "  ", "\u0000", "\ud800", "x" * 201]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@dataclass(frozen=True)
class Corruption:
    """One change to one file. ``at`` picks a line or byte (modulo the size); ``stream`` says
    a byte-level change hits the gzip stream rather than the text inside it."""

    file: str
    op: str
    at: int = 0
    arg: object = None
    stream: bool = False


@dataclass(frozen=True)
class Plan:
    corruptions: tuple[Corruption, ...] = ()
    gzipped: frozenset[str] = frozenset()


@st.composite
def corruptions(draw) -> Corruption:
    file = draw(st.sampled_from(FILES))
    tsv = file.endswith(".tsv")
    op = draw(st.sampled_from(BYTE_OPS + LINE_OPS))
    arg = None
    if op == "flip":
        arg = draw(st.integers(1, 255))
    elif op == "insert_bytes":
        arg = draw(st.sampled_from(INVALID_UTF8) | st.binary(min_size=1, max_size=8))
    elif op == "replace_file":
        arg = draw(st.binary(max_size=200))
    elif op == "swap_columns":
        arg = (draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    elif op == "set_field" and tsv:  # unknown ids (columns 0, 1) or odd scores (column 2)
        arg = (draw(st.integers(0, 2)), draw(st.sampled_from(SCORES) | st.text(max_size=12)))
    elif op == "set_field":
        arg = (draw(st.sampled_from(JSON_KEYS)), draw(JSON_VALUES))
    elif op == "insert_line":
        nasty = st.sampled_from(sorted(NASTY_TSV if tsv else NASTY_JSONL))
        arg = draw(nasty | st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
    return Corruption(file, op, draw(st.integers(0, 10_000)), arg, draw(st.booleans()))


plans = st.builds(
    Plan,
    corruptions=st.lists(corruptions(), max_size=4).map(tuple),
    gzipped=st.frozensets(st.sampled_from(FILES)),
)


def _split_lines(data: bytes) -> tuple[list[bytes], bool]:
    trailing = data.endswith(b"\n")
    body = data[:-1] if trailing else data
    return (body.split(b"\n") if body else []), trailing


def _corrupt_line(line: bytes, c: Corruption, tsv: bool) -> bytes:
    if tsv:
        cells = line.split(b"\t")
        if c.op == "swap_columns":
            i, j = c.arg[0] % len(cells), c.arg[1] % len(cells)
            cells[i], cells[j] = cells[j], cells[i]
        else:
            column, value = c.arg
            cells += [b""] * (column + 1 - len(cells))
            cells[column] = value.encode("utf-8", "surrogatepass")
        return b"\t".join(cells)
    try:
        obj = json.loads(line)
    except ValueError:
        return line
    if not isinstance(obj, dict) or not obj:
        return line
    if c.op == "swap_columns":
        keys = sorted(obj)
        a, b = keys[c.arg[0] % len(keys)], keys[c.arg[1] % len(keys)]
        obj[a], obj[b] = obj[b], obj[a]
    else:
        obj[c.arg[0]] = c.arg[1]
    return json.dumps(obj).encode()


def corrupt(data: bytes, c: Corruption, *, tsv: bool) -> bytes:
    if c.op == "truncate":
        return data[: c.at % (len(data) + 1)]
    if c.op == "flip":
        if not data:
            return data
        at = c.at % len(data)
        return data[:at] + bytes([data[at] ^ c.arg]) + data[at + 1 :]
    if c.op == "insert_bytes":
        at = c.at % (len(data) + 1)
        return data[:at] + c.arg + data[at:]
    if c.op == "replace_file":
        return c.arg
    lines, trailing = _split_lines(data)
    if c.op == "insert_line":
        line = (
            (NASTY_TSV if tsv else NASTY_JSONL).get(c.arg, b"") if isinstance(c.arg, str) else c.arg
        )
        lines.insert(c.at % (len(lines) + 1), line)
    elif lines:
        at = c.at % len(lines)
        if c.op == "delete_line":
            del lines[at]
        elif c.op == "duplicate_line":
            lines.insert(at, lines[at])
        else:
            lines[at] = _corrupt_line(lines[at], c, tsv)
    return b"\n".join(lines) + (b"\n" if trailing and lines else b"")


def build_folder(root: Path, plan: Plan) -> Path:
    """The tiny BEIR folder with the plan's corruptions; gzipped files get a ``.gz`` name."""
    folder = write_beir(root / "beir")
    for name in FILES:
        path, tsv = folder / name, name.endswith(".tsv")
        mine = [c for c in plan.corruptions if c.file == name]
        packed = name in plan.gzipped
        data = path.read_bytes()
        for c in mine:
            if not (packed and c.stream and c.op in BYTE_OPS):
                data = corrupt(data, c, tsv=tsv)
        if packed:
            data = gzip.compress(data, mtime=0)
            for c in mine:
                if c.stream and c.op in BYTE_OPS:
                    data = corrupt(data, c, tsv=tsv)
            path.unlink()
            path = path.with_name(path.name + ".gz")
        path.write_bytes(data)
    return folder


def _lenient_gunzip(data: bytes) -> tuple[bytes, bool]:
    """As much text as a broken gzip stream yields, and whether the stream was whole.

    Fed a byte at a time so that the text before an error (a bad CRC comes only at the very
    end) is kept: at least as many lines as the reader can have seen.
    """
    out, inflate = bytearray(), zlib.decompressobj(wbits=31)
    try:
        for i in range(len(data)):
            out += inflate.decompress(data[i : i + 1])
    except zlib.error:
        return bytes(out), False
    return bytes(out), inflate.eof and not inflate.unused_data


def line_count(path: Path) -> tuple[int, bool]:
    """Lines in ``path`` as the reader numbers them (split on b"\\n"), and whether exact."""
    data, exact = path.read_bytes(), True
    if path.name.endswith(".gz"):
        data, exact = _lenient_gunzip(data)
    return data.count(b"\n") + (bool(data) and not data.endswith(b"\n")), exact


def assert_problems_are_well_formed(error: BeirError, folder: Path) -> None:
    assert error.problems, "a BeirError with no problems"
    for problem in error.problems:
        path = Path(problem.file)
        assert path == folder or folder in path.parents, problem
        assert problem.reason.strip(), problem
        assert isinstance(problem.line, int) and problem.line >= 0, problem
        if problem.line:
            assert path.is_file(), problem
            lines, exact = line_count(path)
            # A broken gzip stream may be reported on the line after the last readable one.
            assert problem.line <= lines + (not exact), (problem, lines)


def assert_streams_match_scan(scan: BeirScan) -> None:
    documents = [row[0] for row in iter_documents(scan)]
    assert len(documents) == len(set(documents)) == scan.document_count
    queries = [row[0] for row in iter_queries(scan)]
    assert len(queries) == len(set(queries)) == scan.query_count
    assert dict(Counter(split for split, *_ in iter_qrels(scan))) == scan.qrels_counts


def one(file: str, op: str, at: int = 0, arg: object = None, stream: bool = False) -> Plan:
    return Plan(corruptions=(Corruption(file, op, at, arg, stream),))


# Pinned inputs, each known to reach an exception other than BeirError when this file was
# written; the random search looks for more.
GZ_CORPUS = frozenset({"corpus.jsonl"})
SCAN_REGRESSIONS = [
    Plan((Corruption("corpus.jsonl", "flip", 20, 0xFF, stream=True),), GZ_CORPUS),
    Plan((Corruption("corpus.jsonl", "truncate", 60, stream=True),), GZ_CORPUS),
    Plan((Corruption("corpus.jsonl", "replace_file", 0, b"hello", stream=True),), GZ_CORPUS),
    one("qrels/test.tsv", "insert_line", 1, "carriage_return"),
    one("corpus.jsonl", "insert_line", 1, "huge_int_id"),
    one("corpus.jsonl", "insert_line", 1, "deep_nesting"),
]


def _with_examples(values: list, name: str = "plan"):
    def decorate(fn):
        for value in reversed(values):
            fn = example(**{name: value})(fn)
        return fn

    return decorate


# --- 1. the reader -------------------------------------------------------------------------


@settings(max_examples=250, deadline=None, database=None)
@_with_examples([Plan(), *SCAN_REGRESSIONS])
@given(plan=plans)
def test_scan_accepts_or_lists_problems_never_crashes(plan):
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp), plan)
        try:
            scan = scan_beir_folder(folder)
        except BeirError as error:
            assert_problems_are_well_formed(error, folder)
        else:
            assert_streams_match_scan(scan)


# --- 2. the import: all rows or none -------------------------------------------------------

# Valid for the reader but not storable by PostgreSQL: a NUL character, a lone surrogate, a
# relevance beyond a 32-bit integer.
IMPORT_REGRESSIONS = [
    one("corpus.jsonl", "insert_line", 1, "nul_text"),
    one("queries.jsonl", "insert_line", 1, "surrogate_text"),
    one("corpus.jsonl", "insert_line", 1, "nul_metadata"),
    one("qrels/train.tsv", "insert_line", 1, "score_over_int32"),
]


def _row_counts() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (Dataset, DatasetVersion, Document, Query, Qrel))


@pytest.mark.django_db
@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@_with_examples([Plan(), Plan(gzipped=frozenset(FILES)), *IMPORT_REGRESSIONS])
@given(plan=plans)
def test_import_writes_every_row_or_none(team, plan):
    with tempfile.TemporaryDirectory() as tmp, transaction.atomic():
        folder = build_folder(Path(tmp), plan)
        assert _row_counts() == (0, 0, 0, 0, 0)
        try:
            scan = scan_beir_folder(folder)
        except BeirError:
            scan = None
        try:
            result = dataset_import_beir(team=team, name="prop", path=folder)
        except BeirError:
            assert scan is None, "the import refused a folder the scan accepted"
            assert _row_counts() == (0, 0, 0, 0, 0)
        except Exception:
            assert _row_counts() == (0, 0, 0, 0, 0), "partial rows after a failed import"
            raise
        else:
            assert scan is not None and result.created
            version = result.version
            assert Document.objects.filter(version=version).count() == scan.document_count
            assert Query.objects.filter(version=version).count() == scan.query_count
            per_split = dict(
                Qrel.objects.filter(version=version)
                .values_list("split")
                .annotate(n=Count("pk"))
                .values_list("split", "n")
            )
            assert per_split == scan.qrels_counts
        transaction.set_rollback(True)  # the next example starts from an empty database


# --- 3. the upload page --------------------------------------------------------------------

NAME_ALPHABET = string.ascii_letters + string.digits + "._-"
EXTENSIONS = [
    "",
    ".jsonl",
    ".jsonl.gz",
    ".tsv",
    ".tsv.gz",
    ".csv",
    ".zip",
    ".tar.gz",
    ".tgz",
    ".tar",
]
KNOWN_NAMES = ["corpus.jsonl", "queries.jsonl", "test.tsv", "corpus.jsonl.gz", "a.zip", "a.tar.gz"]
file_names = st.sampled_from(KNOWN_NAMES) | st.builds(
    str.__add__, st.text(NAME_ALPHABET, min_size=1, max_size=60), st.sampled_from(EXTENSIONS)
)


@dataclass(frozen=True)
class Upload:
    kind: str  # "files" (as given: random bytes), "loose" (BEIR files), "zip", "tar.gz"
    files: tuple[tuple[str, bytes], ...] = ()
    plan: Plan = Plan()
    archive_damage: tuple[Corruption, ...] = ()


# In a zip of the tiny folder, byte 42 opens the first member's deflate stream (after a 30-byte
# header and the name "corpus.jsonl"); flipping bit 1 makes its block type the invalid 0b11.
ZIP_BAD_BLOCK = Corruption("archive", "flip", 42, 0x02)
archive_damage = st.builds(
    Corruption,
    file=st.just("archive"),
    op=st.sampled_from(["truncate", "flip", "insert_bytes"]),
    at=st.integers(0, 10_000),
    arg=st.integers(1, 255),
).map(lambda c: c if c.op != "insert_bytes" else Corruption(c.file, c.op, c.at, b"\xff\x00"))

uploads = st.one_of(
    st.builds(
        Upload,
        kind=st.just("files"),
        files=st.lists(st.tuples(file_names, st.binary(max_size=300)), min_size=1, max_size=3).map(
            tuple
        ),
    ),
    st.builds(
        Upload,
        kind=st.sampled_from(["loose", "zip", "tar.gz"]),
        plan=plans,
        archive_damage=st.lists(archive_damage, max_size=2).map(tuple),
    ),
)


def _archive_bytes(folder: Path, kind: str) -> bytes:
    """The folder as a zip or tar.gz, byte for byte the same on every run (no timestamps)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                info = zipfile.ZipInfo(
                    str(path.relative_to(folder)), date_time=(1980, 1, 1, 0, 0, 0)
                )
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        return buf.getvalue()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"data/{path.relative_to(folder)}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def upload_files(root: Path, upload: Upload) -> list[SimpleUploadedFile]:
    if upload.kind == "files":
        return [SimpleUploadedFile(name, data) for name, data in upload.files]
    folder = build_folder(root, upload.plan)
    if upload.kind == "loose":
        return [
            SimpleUploadedFile(path.name, path.read_bytes())
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        ]
    data = _archive_bytes(folder, upload.kind)
    for damage in upload.archive_damage:
        data = corrupt(data, damage, tsv=False)
    return [SimpleUploadedFile(f"upload.{upload.kind}", data)]


def _tiny_files() -> dict[str, bytes]:
    def jsonl(rows) -> bytes:
        return "".join(json.dumps(row) + "\n" for row in rows).encode()

    tsv = "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, d, s in TINY_QRELS["test"]
    )
    return {
        "corpus.jsonl": jsonl(TINY_CORPUS),
        "queries.jsonl": jsonl(TINY_QUERIES),
        "test.tsv": tsv.encode(),
    }


TINY = _tiny_files()
PAGE_SUCCESSES = [
    Upload("loose", plan=Plan()),
    Upload("zip", plan=Plan()),
    Upload("tar.gz", plan=Plan(gzipped=frozenset(FILES))),
]
# Each reached a job failed with no problems listed (an unexpected exception) when written.
PAGE_REGRESSIONS = [
    # qrels/<split>.tsv whose split name is longer than Qrel.split holds (50 characters)
    Upload("files", (*list(TINY.items())[:2], ("s" * 60 + ".tsv", TINY["test.tsv"]))),
    # a NUL character in a document's text: valid JSON, refused by PostgreSQL
    Upload(
        "files",
        (
            ("corpus.jsonl", TINY["corpus.jsonl"] + NASTY_JSONL["nul_text"] + b"\n"),
            *list(TINY.items())[1:],
        ),
    ),
    # a zip whose deflate stream is damaged (zlib.error inside extract_archive)
    Upload("zip", plan=Plan(), archive_damage=(ZIP_BAD_BLOCK,)),
]


@pytest.mark.django_db
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@_with_examples(PAGE_SUCCESSES + PAGE_REGRESSIONS, "upload")
@given(upload=uploads)
def test_upload_page_never_errors_and_ends_the_job(
    client, member, django_capture_on_commit_callbacks, monkeypatch, upload
):
    from workers.tasks.ingest import ingest

    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))
    client.force_login(member)
    with tempfile.TemporaryDirectory() as tmp, transaction.atomic():
        files = upload_files(Path(tmp), upload)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("datasets:upload"), {"name": "prop", "files": files})
        assert response.status_code in (400, 302), response.status_code
        job = IngestJob.objects.first()
        if job is None:  # refused at once: the form (an empty file…) or the pre-check
            assert response.status_code == 400
            assert not DatasetVersion.objects.exists() and not Dataset.objects.exists()
            uploads = Path(django_settings.ARTIFACTS_ROOT) / "uploads"
            assert not uploads.exists() or not any(uploads.iterdir())
        else:
            page = reverse("datasets:ingest", args=[job.pk])
            assert client.get(page).status_code == 200  # a preview of a training file parses it
            if getattr(job, "awaiting_confirmation", False):  # one training file: start it
                with django_capture_on_commit_callbacks(execute=True):
                    start = client.post(reverse("datasets:ingest_start", args=[job.pk]))
                assert start.status_code == 302, start.status_code
            job.refresh_from_db()
            assert_job_ended(job)
            assert client.get(page).status_code == 200
        transaction.set_rollback(True)


def assert_job_ended(job: IngestJob) -> None:
    if job.status == "failed":
        assert job.problems and all(isinstance(p, str) and p.strip() for p in job.problems), (
            job.human_error
        )
        assert not DatasetVersion.objects.exists() and not Document.objects.exists()
    else:
        assert job.status == "succeeded", job.status
        assert job.version is not None
        assert Document.objects.filter(version=job.version).count() == job.version.document_count


def _ingest_refuses(root: Path, files: list[tuple[str, bytes]]) -> bool:
    """Whether the ingest job's own reading (no pre-check) refuses these uploaded files."""
    incoming = root / "incoming"
    incoming.mkdir()
    for name, data in files:
        (incoming / name).write_bytes(data)
    try:
        if len(files) == 1 and is_training_file(files[0][0]):
            scan_training_file(incoming / files[0][0])
        else:
            scan_beir_folder(arrange_upload(incoming, root / "data"))
    except (BeirError, ArchiveError, IngestError):
        return True
    return False


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@_with_examples(PAGE_SUCCESSES + PAGE_REGRESSIONS, "upload")
@given(upload=uploads)
def test_the_precheck_refuses_only_what_the_ingest_refuses(upload):
    """Never stricter than the job: an upload refused at once would have failed anyway."""
    with tempfile.TemporaryDirectory() as tmp:
        given_files = upload_files(Path(tmp), upload)
        files = [(f.name, f.read()) for f in given_files]
        names = [name for name, _ in files]
        if (
            len(set(names)) != len(names)
            or not all(data for _, data in files)
            or {".", ".."} & set(names)
        ):
            return  # refused before the pre-check (by the form, or by ingest_create itself)
        training = len(names) == 1 and is_training_file(names[0])
        problems = upload_problems(
            [(name, SimpleUploadedFile(name, data)) for name, data in files], training=training
        )
        assert all(isinstance(p, str) and p.strip() and tmp not in p for p in problems)
        if problems:
            job_root = Path(tmp) / "job"
            job_root.mkdir()
            assert _ingest_refuses(job_root, files), problems


# --- 4. archives ---------------------------------------------------------------------------


def _stdlib_reads(path: Path) -> bool:
    """Whether the bytes happen to form a real archive (b"\\0" * 512 is an empty tar)."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return zf.testzip() is None
        with tarfile.open(path, "r:*") as tf:
            tf.getmembers()
        return True
    except Exception:
        return False


def _extract_or_refuse(path: Path, target: Path) -> None:
    try:
        out = extract_archive(path, target, max_bytes=10**6, max_ratio=100)
    except ArchiveError as error:
        assert str(error).strip()
        assert not target.exists(), "a refused archive left its target folder"
    else:
        assert out == target and target.is_dir()
        assert all(target in p.resolve().parents for p in target.rglob("*"))


ARCHIVE_SUFFIXES = [".zip", ".tar.gz", ".tgz", ".tar"]


def _pax_overflow_tar_gz() -> bytes:
    """A tar.gz whose PAX record claims a length of 10**20 bytes (OverflowError in tarfile)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("corpus.jsonl")
        info.pax_headers = {"comment": "x" * 30}
        tf.addfile(info, io.BytesIO(b""))
    record = b"42 comment=" + b"x" * 30 + b"\n"
    huge = b"9" * 20 + b" comment=" + b"x" * 12 + b"\n"  # the same length, a wild length field
    return gzip.compress(buf.getvalue().replace(record, huge), mtime=0)


# Zip bytes 789 and 791 are the flags and the compression method of the first member's entry in
# the central directory: "encrypted" (RuntimeError) and an unknown method (NotImplementedError).
ZIP_ENCRYPTED = Corruption("archive", "flip", 789, 0x01)
ZIP_UNKNOWN_METHOD = Corruption("archive", "flip", 791, 0x01)


@settings(max_examples=200, deadline=None, database=None)
@example(data=b"", suffix=".zip")
@example(data=b"", suffix=".tar.gz")
@example(data=b"\x1f\x8b\x08\x00" + b"\x00" * 20, suffix=".tar.gz")
@example(data=_pax_overflow_tar_gz(), suffix=".tar.gz")
@given(data=st.binary(max_size=2000), suffix=st.sampled_from(ARCHIVE_SUFFIXES))
def test_random_bytes_are_an_archive_error(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        target = Path(tmp) / "out"
        if _stdlib_reads(path):  # random bytes that form a valid (empty) archive: any outcome
            _extract_or_refuse(path, target)
            return
        with pytest.raises(ArchiveError):
            extract_archive(path, target, max_bytes=10**6, max_ratio=100)
        assert not target.exists(), "a refused archive left its target folder"


@settings(max_examples=150, deadline=None, database=None)
@example(kind="zip", damage=[ZIP_BAD_BLOCK])
@example(kind="zip", damage=[ZIP_ENCRYPTED])
@example(kind="zip", damage=[ZIP_UNKNOWN_METHOD])
@given(
    kind=st.sampled_from(["zip", "tar.gz"]),
    damage=st.lists(archive_damage, min_size=1, max_size=3),
)
def test_damaged_archives_extract_or_are_refused(kind, damage):
    with tempfile.TemporaryDirectory() as tmp:
        data = _archive_bytes(write_beir(Path(tmp) / "src"), kind)
        for d in damage:
            data = corrupt(data, d, tsv=False)
        path = Path(tmp) / f"upload.{kind}"
        path.write_bytes(data)
        _extract_or_refuse(path, Path(tmp) / "out")
