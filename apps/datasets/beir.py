"""Reading BEIR folders strictly and in constant memory: every problem is ``FILE:LINE: reason``.

Plain Python (and numpy) with no Django, so the same reader serves the command line, the page
and the ingest worker (Django's settings, when there are any, only set ``read_limits``). Files
may be gzip-compressed (``corpus.jsonl.gz``), held to the archives' expansion limits; a UTF-8
byte order mark at the start of a file is dropped; a line is never read whole past
``DATASET_MAX_LINE_BYTES``.

Two passes. The first (``scan_beir_folder``) validates everything and hashes the content; it
keeps ids only as 8-byte hashes (``IdHashes``), sorted once at the end to find repeats and
binary-searched for the judgements' lookups, so memory does not grow with Python strings. A
repeated hash (a duplicate id, or very rarely two ids with one hash) re-reads that one file
with exact ids for just the suspects, so every message stays exact. The load pass
(``iter_documents`` …) then streams the rows again without re-validating them: it re-hashes
the bytes as it reads and fails cleanly (``BeirError``) if a file is not what the scan saw.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apps.datasets.archives import expansion_problem

MAX_ERRORS = 50
REJECTED_LINES = 10_000  # rejected ids whose line a knock-on message can name
LONG_TEXT_WORDS = 2000
MAX_ID_LENGTH = 200
MAX_SPLIT_LENGTH = 50  # Qrel.split
SCORE_RANGE = range(-(2**31), 2**31)  # Qrel.score, a PostgreSQL integer
QRELS_HEADER = ("query-id", "query_id", "qid")
READ_BLOCK = 1 << 18  # both passes read (and hash) the files in blocks this size
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, dropped at the start of a file
_hash = hash  # of ids and id pairs; a name of its own so tests can make it collide


@dataclass
class BeirProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


class BeirError(ValueError):
    def __init__(self, problems: list[BeirProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Problems:
    """Collects problems up to a limit, then only counts them."""

    def __init__(self, limit: int = MAX_ERRORS) -> None:
        self.items: list[BeirProblem] = []
        self.limit = limit
        self.extra = 0

    def add(self, file: str | Path, line: int, reason: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(BeirProblem(str(file), line, reason))
        else:
            self.extra += 1

    def mark(self) -> tuple[int, int]:
        return len(self.items), self.extra

    def rewind(self, mark: tuple[int, int]) -> None:
        """Forget what was added since ``mark`` (a file is about to be read again)."""
        del self.items[mark[0] :]
        self.extra = mark[1]

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, where: str | Path) -> None:
        if self.items:
            tail = [BeirProblem(str(where), 0, f"… and {self.extra} more")] if self.extra else []
            raise BeirError(self.items + tail)


class IdHashes:
    """Ids (or id pairs) as 64-bit hashes, 8 bytes each instead of a string in a set.

    ``add`` appends in file order (an id, once its own checks passed) and ``reject`` notes an
    added id whose row then failed; ``freeze`` sorts once; then ``repeated`` gives the hashes
    added more than once and ``in`` (added, not rejected) is a binary search. Python's ``hash``
    is keyed per process (SipHash), so ids cannot be crafted to collide. An absent id matching
    a present one's hash (odds about n / 2**64) is caught by the load, which counts the rows
    the database matched; a present id matching a rejected one's (only when the file has
    problems already, so nothing is imported anyway) could be reported unknown.
    """

    __slots__ = ("_added", "_rejected", "_sorted", "_sorted_rejected", "rejected_lines",
                 "unreadable")  # fmt: skip

    def __init__(self) -> None:
        self._added, self._rejected = array("q"), array("q")
        self._sorted = self._sorted_rejected = np.empty(0, dtype=np.int64)
        # Where a rejected id's row was (the first REJECTED_LINES of them), and how many rows
        # had no readable id at all: a judgement naming such an id is a knock-on error.
        self.rejected_lines: dict[int, int] = {}
        self.unreadable = 0

    def known(self, key) -> bool:
        return False  # repeats are found after the pass, by ``repeated``

    def add(self, key) -> None:
        self._added.append(_hash(key))

    def reject(self, key, line: int = 0) -> None:
        h = _hash(key)
        self._rejected.append(h)
        if line and len(self.rejected_lines) < REJECTED_LINES:
            self.rejected_lines.setdefault(h, line)

    def rejected_at(self, key) -> int | None:
        """The line of ``key``'s rejected row (a judgement naming it is a knock-on)."""
        return self.rejected_lines.get(_hash(key))

    def freeze(self) -> IdHashes:
        for raw, name in ((self._added, "_sorted"), (self._rejected, "_sorted_rejected")):
            if raw:
                setattr(self, name, np.sort(np.frombuffer(raw, dtype=np.int64)))
        self._added, self._rejected = array("q"), array("q")
        return self

    def repeated(self) -> set[int]:
        s = self._sorted
        return set(s[1:][s[1:] == s[:-1]].tolist())

    @staticmethod
    def _holds(s: np.ndarray, h: int) -> bool:
        i = int(s.searchsorted(h))
        return i < len(s) and int(s[i]) == h

    def __contains__(self, key) -> bool:
        h = _hash(key)
        return self._holds(self._sorted, h) and not (
            len(self._sorted_rejected) and self._holds(self._sorted_rejected, h)
        )


class _ExactIds(IdHashes):
    """The re-read after a repeated hash: exact ids, kept only for the suspect hashes."""

    __slots__ = ("suspects", "seen")

    def __init__(self, suspects: set[int]) -> None:
        super().__init__()
        self.suspects = suspects
        self.seen: set = set()

    def known(self, key) -> bool:
        return key in self.seen

    def add(self, key) -> None:
        super().add(key)
        if _hash(key) in self.suspects:
            self.seen.add(key)


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


@dataclass(frozen=True)
class ReadLimits:
    """What the reader refuses: a line longer than ``max_line`` bytes (it is never held whole),
    and a gzip file that expands past ``gzip_max_bytes`` or ``gzip_max_ratio`` times its size
    (the limits an archive gets, for each loose ``.gz`` file or one inside an archive)."""

    max_line: int = 16 * 1024**2
    gzip_max_bytes: int = 20 * 1024**3
    gzip_max_ratio: float = 200.0


def read_limits() -> ReadLimits:
    """Django's ``DATASET_MAX_LINE_BYTES``, ``DATASET_ARCHIVE_MAX_BYTES`` and
    ``DATASET_ARCHIVE_MAX_RATIO`` when settings are configured, else the defaults."""
    default = ReadLimits()
    try:
        from django.conf import settings

        if not settings.configured:
            return default
    except ImportError:  # pragma: no cover - the reader used without Django
        return default
    return ReadLimits(
        max_line=getattr(settings, "DATASET_MAX_LINE_BYTES", default.max_line),
        gzip_max_bytes=getattr(settings, "DATASET_ARCHIVE_MAX_BYTES", default.gzip_max_bytes),
        gzip_max_ratio=getattr(settings, "DATASET_ARCHIVE_MAX_RATIO", default.gzip_max_ratio),
    )


def read_lines(
    fh,
    file: str | Path,
    problems: Problems,
    digest=None,
    *,
    compressed: int | None = None,
    limits: ReadLimits | None = None,
) -> Iterator[tuple[int, str]]:
    """Non-blank lines of the binary stream ``fh`` as (line number, text); problems name ``file``.

    Read a block at a time, so a line is never held past ``limits.max_line`` bytes (it becomes
    a problem and is skipped). A UTF-8 byte order mark at the start is dropped (Windows tools
    write one); ``digest`` gets every other byte. ``compressed``: the size of the gzip file
    ``fh`` decompresses, held to the limits on expansion (reading stops at the first excess).
    """
    limits = limits or read_limits()
    cap = limits.max_line
    number = total = 0
    empty, first, skipping = True, True, False
    tail = b""
    try:
        while block := fh.read(READ_BLOCK):
            total += len(block)
            if compressed is not None and (
                reason := expansion_problem(
                    total, compressed, limits.gzip_max_bytes, limits.gzip_max_ratio
                )
            ):
                problems.add(file, 0, reason)
                return
            if first:
                first = False
                if block.startswith(BOM):
                    block = block[len(BOM) :]
            if digest is not None:
                digest.update(block)
            if skipping:  # the rest of a line that was too long
                cut = block.find(b"\n")
                if cut < 0:
                    continue
                block, skipping = block[cut + 1 :], False
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                number += 1
                if len(raw) > cap:
                    empty = False
                    problems.add(file, number, f"line longer than {cap:,} bytes")
                    continue
                if not raw.strip():
                    continue
                empty = False
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    problems.add(file, number, f"not valid UTF-8 (byte {exc.start})")
            if len(tail) > cap:
                number += 1
                empty = False
                problems.add(file, number, f"line longer than {cap:,} bytes")
                tail, skipping = b"", True
    except (OSError, EOFError, zlib.error) as exc:
        problems.add(file, number, f"unreadable compressed data ({exc})")
        return
    if tail.strip():
        number += 1
        empty = False
        try:
            yield number, tail.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            problems.add(file, number, f"not valid UTF-8 (byte {exc.start})")
    if empty:
        problems.add(file, 0, "the file is empty")


def iter_lines(path: Path, problems: Problems, digest=None) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a file (gzip when named ``.gz``) as (line number, text); feeds the
    bytes to ``digest``. See ``read_lines``."""
    path = Path(path)
    try:
        compressed = path.stat().st_size if path.name.endswith(".gz") else None
        fh = open_binary(path)
    except OSError as exc:
        problems.add(path, 0, f"unreadable ({exc.strerror or exc})")
        return
    with fh:
        yield from read_lines(fh, path, problems, digest, compressed=compressed)


def _unstorable(value) -> str | None:
    """Why PostgreSQL could not store ``value`` (a NUL, an unpaired surrogate), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "an unpaired surrogate"
    elif isinstance(value, dict):
        return next(filter(None, map(_unstorable, [*value, *value.values()])), None)
    elif isinstance(value, list):
        return next(filter(None, map(_unstorable, value)), None)
    return None


def iter_json_objects(
    path, problems: Problems, digest=None, *, lines=None
) -> Iterator[tuple[int, dict]]:
    """JSONL lines as (line number, object); every bad line becomes a problem, never a crash.
    ``lines``: (number, text) pairs read already (the upload's pre-check), instead of ``path``."""
    for number, line in iter_lines(path, problems, digest) if lines is None else lines:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:  # too deep, or an integer too long
            problems.add(path, number, f"malformed JSON ({getattr(exc, 'msg', exc)})")
            continue
        if "\\u" in line and (why := _unstorable(obj)):
            problems.add(path, number, f"contains {why}, which cannot be stored")
            continue
        if not isinstance(obj, dict):
            problems.add(path, number, "expected a JSON object")
            continue
        yield number, obj


_scan_json = json.JSONDecoder().scan_once  # the C scanner under json.loads


def _loads(line: str):
    """``json.loads(line)``, minus its Python layers for the usual ``{...}`` line; anything
    else (whitespace around, an error) goes through json.loads for its exact result."""
    if line[:1] == "{" and line[-1:] == "}":
        try:
            obj, end = _scan_json(line, 0)
        except (ValueError, StopIteration, RecursionError):
            pass
        else:
            if end == len(line):
                return obj
    return json.loads(line)


def _records(
    path, problems, *, kind: str, ids, digest=None, lines=None
) -> Iterator[tuple[str, dict]]:
    """Valid documents or queries as (id, object); ``ids`` (``IdHashes`` or ``_ExactIds``)
    gets every id. One loop (``iter_json_objects`` inlined): the corpus runs through it.
    ``lines``: (number, text) pairs read already, instead of ``path``'s."""
    known, add, reject, loads = ids.known, ids.add, ids.reject, _loads
    documents = kind == "document"
    for number, line in iter_lines(path, problems, digest) if lines is None else lines:
        try:
            obj = loads(line)
        except (ValueError, RecursionError) as exc:  # too deep, or an integer too long
            problems.add(path, number, f"malformed JSON ({getattr(exc, 'msg', exc)})")
            ids.unreadable += 1
            continue
        if "\\u" in line and (why := _unstorable(obj)):
            problems.add(path, number, f"contains {why}, which cannot be stored")
            ids.unreadable += 1
            continue
        if not isinstance(obj, dict):
            problems.add(path, number, "expected a JSON object")
            ids.unreadable += 1
            continue
        raw_id = obj.get("_id")
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            raw_id = str(raw_id)
        if not isinstance(raw_id, str) or not raw_id.strip():
            problems.add(path, number, "missing or empty '_id'")
            ids.unreadable += 1
            continue
        if known(raw_id):
            problems.add(path, number, f"duplicate {kind} id {raw_id!r}")
            continue
        if len(raw_id) > MAX_ID_LENGTH:
            problems.add(path, number, f"{kind} id longer than {MAX_ID_LENGTH} characters")
            continue
        add(raw_id)
        meta = obj.get("metadata", {})
        if meta is None:
            meta = {}
        text = obj.get("text")
        if not isinstance(meta, dict):
            problem = "'metadata' must be a JSON object"
        elif not isinstance(text, str):
            problem = "missing 'text' (a string)"
        elif documents and not isinstance(obj.get("title") or "", str):
            problem = "'title' must be a string"
        elif documents:
            problem = None
        # Real collections hold a few empty documents (Cranfield 471 and 995) that judgements
        # name; they are kept with a warning. A query with no text is of no use: an error.
        else:
            problem = None if text.strip() else "empty 'text'"
        if problem:
            problems.add(path, number, problem)
            reject(raw_id, number)  # seen (a repeat is a duplicate), not there for judgements
            continue
        yield raw_id, obj


def _unknown(kind: str, key: str, ids: IdHashes) -> str:
    """Why a judgement's id is not there; a knock-on of an error above is marked as one, so the
    user fixes the first and does not hunt for the second."""
    source = "corpus" if kind == "document" else "queries file"
    if line := ids.rejected_at(key):
        return f"knock-on: {kind} id {key!r} is on {source} line {line}, rejected above"
    if ids.unreadable:
        return (
            f"unknown {kind} id {key!r} (perhaps a knock-on: {ids.unreadable:,} {source} "
            "line(s) above have no readable id)"
        )
    return f"unknown {kind} id {key!r}"


def _qrels(path, problems, query_ids, doc_ids, pairs, digest=None, lines=None) -> Iterator[tuple]:
    """Valid judgements as (query id, document id, score); ``pairs`` gets every (q, d).
    ``lines``: (number, text) pairs read already, instead of ``path``'s."""
    known, add = pairs.known, pairs.add
    for number, line in iter_lines(path, problems, digest) if lines is None else lines:
        try:
            cells = next(csv.reader([line], delimiter="\t"), [])
        except csv.Error as exc:
            problems.add(path, number, f"unreadable TSV line ({exc})")
            continue
        if number == 1 and cells and cells[0].strip().lower() in QRELS_HEADER:
            continue  # the header is optional
        if len(cells) != 3:
            problems.add(path, number, f"expected 3 tab-separated columns, found {len(cells)}")
            continue
        qid, did, score_text = (c.strip() for c in cells)
        try:
            score = int(score_text)
        except ValueError:
            problems.add(path, number, f"relevance {score_text[:20]!r} is not an integer")
            continue
        if score not in SCORE_RANGE:
            problems.add(path, number, f"relevance {score} is out of range")
            continue
        if qid not in query_ids:
            problems.add(path, number, _unknown("query", qid, query_ids))
            continue
        if did not in doc_ids:
            problems.add(path, number, _unknown("document", did, doc_ids))
            continue
        if known((qid, did)):
            problems.add(path, number, f"duplicate judgement ({qid}, {did})")
            continue
        add((qid, did))
        yield qid, did, score


@dataclass
class BeirScan:
    """What the validating first pass learnt; the load streams the files again from here."""

    folder: Path
    corpus_path: Path
    queries_path: Path
    qrels_paths: dict[str, Path]
    document_count: int = 0
    query_count: int = 0
    qrels_counts: dict[str, int] = field(default_factory=dict)
    content_hash: str = ""
    warnings: list[str] = field(default_factory=list)
    # per file: the content digest as that file starts, and its hex digest as it ends; the
    # load pass re-hashes each file from the first and must arrive at the second
    checkpoints: dict[Path, tuple] = field(default_factory=dict, repr=False)


@dataclass
class LoadStats:
    """What the load pass counts as the documents stream by (so the scan need not)."""

    # words per document → how many documents: bounded by distinct lengths, not by corpus size
    word_histogram: Counter = field(default_factory=Counter)
    # hash of (title, text) per document: no repeat means no duplicate document for sure
    contents: IdHashes = field(default_factory=IdHashes)

    def documents_may_repeat(self) -> bool:
        return bool(self.contents.freeze().repeated())


CORPUS, QUERIES = "corpus.jsonl", "queries.jsonl"


@dataclass
class BeirLayout:
    """Which files of a BEIR folder are its corpus, queries and judgements (names relative to
    the folder), and what is wrong with the set: (relative name, reason) pairs."""

    corpus: str | None = None
    queries: str | None = None
    qrels: dict[str, str] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def beir_layout(names) -> BeirLayout:
    """The layout of a BEIR folder from the names of the files in it, relative to it
    (``corpus.jsonl``, ``qrels/test.tsv.gz``): the one set of rules for a folder on disk
    (``locate_beir_files``) and for an upload's file names or archive listing before it is
    stored. Each of corpus and queries is there once (plain or gzip, not both); each split once.
    """
    names = set(names)
    layout = BeirLayout()
    for stem, attr, what in ((CORPUS, "corpus", "corpora"), (QUERIES, "queries", "query files")):
        found = [n for n in (stem, stem + ".gz") if n in names]
        if not found:
            layout.problems.append((stem, "file not found"))
        elif len(found) > 1:
            layout.problems.append((found[1], f"two {what} ({found[0]} and {found[1]}); keep one"))
        setattr(layout, attr, found[0] if found else None)
    for name in sorted(names):
        folder, _, base = name.rpartition("/")
        if folder != "qrels" or not base.endswith((".tsv", ".tsv.gz")):
            continue
        split = base.split(".")[0]
        if split in layout.qrels:
            other = layout.qrels[split].rpartition("/")[2]
            layout.problems.append((name, f"a second file for split {split!r} (with {other})"))
        else:
            layout.qrels[split] = name
    if not layout.qrels:
        layout.problems.append(("qrels", "no qrels/<split>.tsv file found"))
    for split, name in layout.qrels.items():
        if len(split) > MAX_SPLIT_LENGTH:
            layout.problems.append((name, f"split name longer than {MAX_SPLIT_LENGTH} characters"))
    return layout


def locate_beir_files(folder: str | Path) -> BeirScan:
    folder = Path(folder)
    if not folder.is_dir():
        raise BeirError([BeirProblem(str(folder), 0, "not a folder")])
    names = [p.name for p in folder.iterdir() if p.is_file()]
    qrels_dir = folder / "qrels"
    if qrels_dir.is_dir():
        names += [f"qrels/{p.name}" for p in qrels_dir.iterdir() if p.is_file()]
    layout = beir_layout(names)
    problems = Problems()
    for name, reason in layout.problems:
        problems.add(folder / name, 0, reason)
    problems.raise_if_any(folder)
    return BeirScan(
        folder=folder,
        corpus_path=folder / layout.corpus,
        queries_path=folder / layout.queries,
        qrels_paths={split: folder / name for split, name in layout.qrels.items()},
    )


def _count(rows) -> int:
    return sum(1 for _ in rows)


def _read(problems: Problems, rows, digest=None) -> tuple[int, IdHashes]:
    """Run a file's pass: ``rows(ids, digest)`` reads it, gives ``ids`` the ids and returns
    how many rows were valid.

    A repeated hash afterwards is a duplicate id (or, very rarely, two ids with one hash): that
    file's problems are forgotten and it is read again, exact for the suspects only, so the
    messages and the ids are the ones exact sets give. Returns (valid rows, frozen ids).
    """
    mark = problems.mark()
    ids = IdHashes()
    count = rows(ids, digest)
    if suspects := ids.freeze().repeated():
        problems.rewind(mark)
        ids = _ExactIds(suspects)
        count = rows(ids, None)
        ids.freeze()
    return count, ids


def scan_beir_folder(folder: str | Path) -> BeirScan:
    """Validate a BEIR folder in one streaming pass; raise BeirError listing every problem."""
    scan = locate_beir_files(folder)
    problems = Problems()
    digest = hashlib.sha256()

    def read(path: Path, rows) -> tuple[int, IdHashes]:
        start = digest.copy()
        out = _read(problems, rows, digest)
        scan.checkpoints[path] = (start, digest.hexdigest())
        return out

    corpus, queries = scan.corpus_path, scan.queries_path
    empty_titles = long_texts = empty_texts = 0

    # n words take at least 2n - 1 characters: only texts this long can pass the limit
    long_chars = 2 * LONG_TEXT_WORDS - 2

    def documents(ids, dig) -> int:
        nonlocal empty_titles, long_texts, empty_texts
        rows = _records(corpus, problems, kind="document", ids=ids, digest=dig)
        if dig is None:  # the re-read: problems only
            return _count(rows)
        count = 0
        for _, obj in rows:
            count += 1
            title, text = obj.get("title") or "", obj["text"]
            if not title.strip():
                empty_titles += 1
                empty_texts += not text.strip()
            if len(title) + len(text) > long_chars:
                long_texts += len(title.split()) + len(text.split()) > LONG_TEXT_WORDS
        return count

    digest.update(b"corpus\0")
    scan.document_count, doc_ids = read(corpus, documents)
    digest.update(b"queries\0")
    scan.query_count, query_ids = read(
        queries,
        lambda ids, dig: _count(_records(queries, problems, kind="query", ids=ids, digest=dig)),
    )
    for split, path in scan.qrels_paths.items():
        digest.update(b"qrels\0" + split.encode() + b"\0")
        before = len(problems.items)
        count, _ = read(
            path,
            lambda pairs, dig, path=path: _count(
                _qrels(path, problems, query_ids, doc_ids, pairs, dig)
            ),
        )
        if count == 0 and len(problems.items) == before:
            problems.add(path, 0, "no judgements")
        scan.qrels_counts[split] = count
    problems.raise_if_any(scan.folder)
    if empty_texts:
        scan.warnings.append(f"{empty_texts} document(s) have neither title nor text.")
    if empty_titles:
        scan.warnings.append(f"{empty_titles} document(s) have an empty title.")
    if long_texts:
        scan.warnings.append(f"{long_texts} document(s) are longer than {LONG_TEXT_WORDS} words.")
    scan.content_hash = digest.hexdigest()
    return scan


# --- the load pass: rows of files the scan accepted, not validated again -------------------


def _changed(path: Path, line: int) -> BeirError:
    reason = "changed after it was validated; nothing was imported (upload it again)"
    return BeirError([BeirProblem(str(path), line, reason)])


def _blocks_again(scan: BeirScan, path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """The raw lines (without the newline, blank ones too) of a file the scan accepted, a block
    at a time with the number of its first line. The bytes are re-hashed from the scan's
    checkpoint on the way: BeirError once they differ from what the scan saw."""
    start, expected = scan.checkpoints[path]
    digest = start.copy()
    update = digest.update
    number = 1
    tail = b""
    first = True
    try:
        with open_binary(path) as fh:
            while block := fh.read(READ_BLOCK):
                if first:  # the byte order mark the scan dropped (and did not hash)
                    first = False
                    if block.startswith(BOM):
                        block = block[len(BOM) :]
                update(block)
                lines = (tail + block).split(b"\n")
                tail = lines.pop()
                yield number, lines
                number += len(lines)
    except (OSError, EOFError, zlib.error) as exc:
        raise _changed(path, number) from exc
    if tail:
        yield number, [tail]
    if digest.hexdigest() != expected:
        raise _changed(path, 0)


def _lines_again(scan: BeirScan, path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank raw lines of a file the scan accepted, as (line number, bytes)."""
    for first, lines in _blocks_again(scan, path):
        for number, raw in enumerate(lines, first):
            if raw.strip():
                yield number, raw


def word_count(s: str) -> int:
    """``len(s.split())``, without building the list for ASCII text with single spaces."""
    if (
        s.isascii()
        and "  " not in s
        # the ASCII characters str.split() splits on besides the space
        and "\n" not in s
        and "\t" not in s
        and "\r" not in s
        and "\x0b" not in s
        and "\x0c" not in s
        and "\x1c" not in s
        and "\x1d" not in s
        and "\x1e" not in s
        and "\x1f" not in s
    ):
        return s.count(" ") + 1 - (s[0] == " ") - (s[-1] == " ") if s else 0
    return len(s.split())


def _count_words(pieces: list[str], histogram: Counter) -> None:
    """Add to ``histogram`` the words per document of ``pieces`` = [title, text, title, …],
    all ASCII with the space as their only whitespace, vectorised: a word starts where a
    character above the space follows a space (or the newline put between pieces)."""
    joined = np.frombuffer("\n".join(pieces).encode("ascii"), dtype=np.uint8)
    gap = joined <= 32
    starts = ~gap
    starts[1:] &= gap[:-1]
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    ends = np.cumsum(lengths + 1) - 1  # where each piece's separator is (or would be)
    per_piece = np.diff(np.searchsorted(np.flatnonzero(starts), ends), prepend=0)
    words, documents = np.unique(per_piece[0::2] + per_piece[1::2], return_counts=True)
    for n, count in zip(words.tolist(), documents.tolist(), strict=True):
        histogram[n] += count


def iter_documents(
    scan: BeirScan, stats: LoadStats | None = None
) -> Iterator[tuple[str, str, str, dict]]:
    """(id, title, text, metadata) of every document; fills ``stats`` on the way."""
    path = scan.corpus_path
    loads = _loads
    if stats is not None:
        histogram, add_content = stats.word_histogram, stats.contents.add
    pieces: list[str] = []  # titles and texts whose words are counted a block at a time
    for first, lines in _blocks_again(scan, path):
        for number, raw in enumerate(lines, first):
            if not raw.strip():
                continue
            try:
                obj = loads(raw.decode("utf-8"))
                doc_id = obj["_id"]
                if type(doc_id) is not str:
                    doc_id = str(doc_id)  # an integer id, as the scan allowed
                title = obj.get("title") or ""
                text = obj["text"]
                meta = obj.get("metadata") or {}
            except (ValueError, RecursionError, LookupError, TypeError, AttributeError) as exc:
                raise _changed(path, number) from exc
            if stats is not None:
                # ASCII and no backslash: no escape, so no whitespace but the space in any
                # string (JSON strings cannot hold a raw control character)
                if raw.isascii() and b"\\" not in raw:
                    pieces.append(title)
                    pieces.append(text)
                else:
                    histogram[word_count(title) + word_count(text)] += 1
                add_content((title, text))
            yield doc_id, title, text, meta
        if pieces:
            _count_words(pieces, histogram)
            pieces.clear()


def iter_queries(scan: BeirScan) -> Iterator[tuple[str, str, dict]]:
    path = scan.queries_path
    for number, raw in _lines_again(scan, path):
        try:
            obj = _loads(raw.decode("utf-8"))
            query_id = obj["_id"]
            if type(query_id) is not str:
                query_id = str(query_id)
            row = query_id, obj["text"], obj.get("metadata") or {}
        except (ValueError, RecursionError, LookupError, TypeError, AttributeError) as exc:
            raise _changed(path, number) from exc
        yield row


def iter_qrels(scan: BeirScan) -> Iterator[tuple[str, str, str, int]]:
    """(split, query id, document id, score); membership was checked by the scan."""
    for split, path in scan.qrels_paths.items():
        for number, raw in _lines_again(scan, path):
            try:
                cells = next(csv.reader([raw.decode("utf-8").rstrip("\r\n")], delimiter="\t"))
                if number == 1 and cells[0].strip().lower() in QRELS_HEADER:
                    continue
                qid, did, score_text = (c.strip() for c in cells)
                row = split, qid, did, int(score_text)
            except (ValueError, LookupError, StopIteration, csv.Error) as exc:
                raise _changed(path, number) from exc
            yield row
