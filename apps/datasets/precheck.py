"""The upload's pre-check: what is wrong with an upload that shows without reading it all.

Run on the uploaded files before anything is stored, so the page and the API refuse at once
(400, ``FILE:LINE: reason``) and create nothing: no dataset, version, job row or file. It
reads archive listings (the zip's central directory; a tar's headers, up to
``TAR_LISTING_BYTES`` of it), gzip trailers and the first line of each data file, through the
ingest's own rules (``beir_layout``, ``beir_roots``, the reader's line checks). The ingest job
still reads everything. A problem is reported only where the ingest would refuse the upload
too, never by a stricter rule — except a zip whose directory itself declares a decompression
bomb. Names in problems are the user's: the uploaded file's name or the member's name inside
the archive, never a server path.
"""

from __future__ import annotations

import gzip
import stat
import struct
import tarfile
import zipfile
import zlib

from apps.datasets.archives import (
    beir_roots,
    expands_too_much,
    expansion_problem,
    is_archive,
    member_parts,
    member_problem,
    roots_problem,
    too_expanded,
    too_many_bytes,
)
from apps.datasets.beir import (
    CORPUS,
    QUERIES,
    READ_BLOCK,
    BeirProblem,
    IdHashes,
    Problems,
    _qrels,
    _records,
    beir_layout,
    read_limits,
    read_lines,
)
from apps.datasets.training import check_first_record

TAR_LISTING_BYTES = 512 * 1024**2  # of a tar's (uncompressed) stream read for its listing
NOT_BEIR = (
    "not a BEIR file (expected corpus.jsonl, queries.jsonl and <split>.tsv, or one .zip / "
    ".tar.gz holding them; a training set is one .jsonl or .csv file on its own)"
)
MISSING = (
    "missing (a BEIR upload is corpus.jsonl, queries.jsonl and one <split>.tsv per split, "
    "or one .zip / .tar.gz holding them)"
)
ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    ValueError,
)


class _PeekDone(Exception):
    """The peek's budget is spent before a verdict: nothing more is concluded."""


class _Stream:
    """An uploaded file as a plain stream with no name (so no library can show a server path),
    or a capped one: reading past ``limit`` bytes raises ``_PeekDone``."""

    def __init__(self, fh, limit: int | None = None) -> None:
        self.fh, self.left = fh, limit

    def read(self, n: int = -1) -> bytes:
        if self.left is None:
            return self.fh.read(n)
        if self.left <= 0:
            raise _PeekDone
        data = self.fh.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class _Anything:
    """Every id is known: the pre-check cannot look judgements' ids up."""

    def __contains__(self, key) -> bool:
        return True


def data_role(name: str) -> str | None:
    """What a file of a BEIR folder is, from its name relative to the folder."""
    if name in (CORPUS, CORPUS + ".gz"):
        return "corpus"
    if name in (QUERIES, QUERIES + ".gz"):
        return "queries"
    folder, _, base = name.rpartition("/")
    if folder == "qrels" and base.endswith((".tsv", ".tsv.gz")):
        return "qrels"
    return None


def _first_line_problems(fh, file: str, role: str, *, gz: bool, size: int) -> list[BeirProblem]:
    """The problems of the first non-blank line of ``fh`` (a data file of ``role``), read with
    the ingest's reader and checked by the ingest's line checks. ``size``: the stored size of
    a gzip file, held to the expansion limits as the reader holds it."""
    limits = read_limits()
    problems = Problems()
    if gz:
        fh = gzip.GzipFile(fileobj=_Stream(fh), mode="rb")
    # The first line may be up to the cap long; a little more tells it is too long.
    stream = _Stream(fh, limits.max_line + 2 * READ_BLOCK)
    lines = read_lines(stream, file, problems, compressed=size if gz else None, limits=limits)
    try:
        first = next(lines, None)
    except _PeekDone:
        first = None
    finally:
        lines.close()
    if first is None:
        return problems.items
    one = [first]
    if role in ("corpus", "queries"):
        kind = "document" if role == "corpus" else "query"
        for _ in _records(file, problems, kind=kind, ids=IdHashes(), lines=one):
            pass
    elif role == "qrels":
        for _ in _qrels(file, problems, _Anything(), _Anything(), IdHashes(), lines=one):
            pass
    else:
        csv_format = file.removesuffix(".gz").endswith(".csv")
        check_first_record(file, *first, problems, csv_format=csv_format)
    return problems.items


def _gzip_trailer_problem(f, size: int) -> str | None:
    """A gzip file's trailer gives its (last member's) size modulo 2**32: the whole file
    expands at least that much, or its end is damaged (which the reader refuses)."""
    if size < 18:  # a gzip header and trailer: anything shorter the reader refuses itself
        return None
    limits = read_limits()
    f.seek(size - 4)
    (expanded,) = struct.unpack("<I", f.read(4))
    return expansion_problem(expanded, size, limits.gzip_max_bytes, limits.gzip_max_ratio)


def _check_data_file(name: str, f, role: str, problems: list[BeirProblem]) -> None:
    gz = name.endswith(".gz")
    size = f.size
    if gz and (reason := _gzip_trailer_problem(f, size)):
        problems.append(BeirProblem(name, 0, reason))
        return
    f.seek(0)
    problems.extend(_first_line_problems(f, name, role, gz=gz, size=size))


def _check_loose(files: list[tuple[str, object]], problems: list[BeirProblem]) -> None:
    placed: dict[str, tuple[str, object]] = {}  # name in the BEIR folder → (user's name, file)
    for name, f in files:
        stem = name.removesuffix(".gz")
        if is_archive(name):
            problems.append(BeirProblem(name, 0, "an archive is uploaded on its own"))
        elif stem in (CORPUS, QUERIES):
            placed[name] = (name, f)
        elif stem.endswith(".tsv"):
            placed[f"qrels/{name}"] = (name, f)
        else:
            problems.append(BeirProblem(name, 0, NOT_BEIR))
    if not placed:
        return  # nothing that looks like BEIR: "missing corpus…" would only be noise
    layout = beir_layout(placed)
    for rel, reason in layout.problems:
        if rel in placed:
            problems.append(BeirProblem(placed[rel][0], 0, reason))
        else:
            problems.append(BeirProblem("<split>.tsv" if rel == "qrels" else rel, 0, MISSING))
    for rel, (name, f) in placed.items():
        _check_data_file(name, f, data_role(rel), problems)


def _bomb(total: int, size: int, compressed: int, member: str) -> str | None:
    """What extraction would refuse: ``total`` bytes so far, a member expanding too much."""
    limits = read_limits()
    if total > limits.gzip_max_bytes:
        return too_many_bytes(limits.gzip_max_bytes)
    if expands_too_much(size, compressed, limits.gzip_max_ratio):
        return too_expanded(limits.gzip_max_ratio, member)
    return None


def _check_zip(archive: str, f, problems: list[BeirProblem]) -> None:
    with zipfile.ZipFile(_Stream(f)) as zf:
        files: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in zf.infolist():
            if stat.S_ISLNK(info.external_attr >> 16):
                problems.append(BeirProblem(archive, 0, f"member {info.filename!r} is a link"))
                continue
            if reason := member_problem(info.filename):
                problems.append(BeirProblem(archive, 0, reason))
                continue
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                reason = f"not a readable archive (member {info.filename!r} is encrypted)"
                problems.append(BeirProblem(archive, 0, reason))
                continue
            # The sizes the zip's directory declares; extraction writes no more than these.
            total += info.file_size
            if reason := _bomb(total, info.file_size, info.compress_size, info.filename):
                problems.append(BeirProblem(archive, 0, reason))
                return
            files["/".join(member_parts(info.filename))] = info
        chosen = _check_layout(archive, files, problems)
        for name, role in chosen:
            info = files[name]
            with zf.open(info) as member:
                problems.extend(
                    _first_line_problems(
                        member, name, role, gz=name.endswith(".gz"), size=info.file_size
                    )
                )


def _check_layout(archive: str, files, problems: list[BeirProblem]) -> list[tuple[str, str]]:
    """Problems of the archive's BEIR layout; the (member name, role) of its data files."""
    roots = beir_roots(files)
    if reason := roots_problem(roots):
        problems.append(BeirProblem(archive, 0, reason))
        return []
    root = roots[0]
    layout = beir_layout(n[len(root) :] for n in files if n.startswith(root))
    for rel, reason in layout.problems:
        problems.append(BeirProblem(root + rel, 0, reason))
    chosen = [layout.corpus, layout.queries, *layout.qrels.values()]
    return [(root + rel, data_role(rel)) for rel in chosen if rel]


def _check_tar(archive: str, f, problems: list[BeirProblem]) -> None:
    compressed = f.size
    files: dict[str, None] = {}
    peeked: dict[str, list[BeirProblem]] = {}  # a data file's first-line problems, by name
    total = 0
    with tarfile.open(fileobj=_Stream(f), mode="r:*") as tf:
        for member in tf:
            if member.issym() or member.islnk():
                problems.append(BeirProblem(archive, 0, f"member {member.name!r} is a link"))
                continue
            if not (member.isfile() or member.isdir()):
                reason = f"member {member.name!r} is not a regular file"
                problems.append(BeirProblem(archive, 0, reason))
                continue
            if reason := member_problem(member.name):
                problems.append(BeirProblem(archive, 0, reason))
                continue
            if member.isdir():
                continue
            # tar headers hold the exact sizes; extraction holds each member to the whole
            # archive's compressed size.
            total += member.size
            if reason := _bomb(total, member.size, compressed, member.name):
                problems.append(BeirProblem(archive, 0, reason))
                return
            name = "/".join(member_parts(member.name))
            files[name] = None
            parts = name.split("/")
            role = data_role("/".join(parts[-2:])) or data_role(parts[-1])
            if role:  # a listing is read once, forwards: peek at every data file on the way
                peeked[name] = _first_line_problems(
                    tf.extractfile(member), name, role, gz=name.endswith(".gz"), size=member.size
                )
            if tf.offset > TAR_LISTING_BYTES:
                # Too long to list here: what is missing is left to the ingest.
                for items in peeked.values():
                    problems.extend(items)
                return
    for name, _ in _check_layout(archive, files, problems):
        problems.extend(peeked.get(name, []))


def upload_problems(files: list[tuple[str, object]], *, training: bool) -> list[str]:
    """``FILE:LINE: reason`` for what is wrong with an upload (empty: nothing seen at once).

    ``files``: (the user's base name, Django UploadedFile) pairs; ``training``: one training
    file. Every file is rewound afterwards, for storing.
    """
    problems: list[BeirProblem] = []
    try:
        if training:
            name, f = files[0]
            _check_data_file(name, f, "training", problems)
        elif len(files) == 1 and is_archive(files[0][0]):
            archive, f = files[0]
            try:
                if archive.endswith(".zip"):
                    _check_zip(archive, f, problems)
                else:
                    _check_tar(archive, f, problems)
            except _PeekDone:
                pass
            except ARCHIVE_ERRORS as exc:
                problems.append(BeirProblem(archive, 0, f"not a readable archive ({exc})"))
        else:
            _check_loose(files, problems)
    finally:
        for _, f in files:
            f.seek(0)
    return [_scrub(str(p), files) for p in problems]


def _scrub(text: str, files) -> str:
    """No server path: a temporary upload file's path becomes the user's file name."""
    for name, f in files:
        path = getattr(f, "temporary_file_path", None)
        if path is not None:
            text = text.replace(path(), name)
    return text
