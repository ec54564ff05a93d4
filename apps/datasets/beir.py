"""Reading BEIR folders strictly and in constant memory: every problem is ``FILE:LINE: reason``.

Plain Python with no Django, so the same reader serves the command line, the page and the ingest
worker. Files may be gzip-compressed (``corpus.jsonl.gz``). A first pass (``scan_beir_folder``)
validates everything and hashes the content while holding only the sets of ids; the load then
streams the rows a second time (``iter_documents`` …), so memory stays flat whatever the size.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_ERRORS = 50
LONG_TEXT_WORDS = 2000
MAX_ID_LENGTH = 200
MAX_SPLIT_LENGTH = 50  # Qrel.split
SCORE_RANGE = range(-(2**31), 2**31)  # Qrel.score, a PostgreSQL integer


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

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, where: str | Path) -> None:
        if self.items:
            tail = [BeirProblem(str(where), 0, f"… and {self.extra} more")] if self.extra else []
            raise BeirError(self.items + tail)


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def iter_lines(path: Path, problems: Problems, digest=None) -> Iterator[tuple[int, str]]:
    """Non-blank lines as (line number, text); feeds the exact bytes to ``digest``."""
    empty = True
    number = 0
    try:
        with open_binary(path) as fh:
            for number, raw in enumerate(fh, start=1):
                if digest is not None:
                    digest.update(raw)
                if not raw.strip():
                    continue
                empty = False
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    problems.add(path, number, f"not valid UTF-8 (byte {exc.start})")
    except (OSError, EOFError, zlib.error) as exc:
        problems.add(path, number, f"unreadable compressed data ({exc})")
        return
    if empty:
        problems.add(path, 0, "the file is empty")


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


def iter_json_objects(path, problems: Problems, digest=None) -> Iterator[tuple[int, dict]]:
    """JSONL lines as (line number, object); every bad line becomes a problem, never a crash."""
    for number, line in iter_lines(path, problems, digest):
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


def _records(path, problems, *, kind: str, digest=None) -> Iterator[tuple[int, str, dict]]:
    seen: set[str] = set()
    for number, obj in iter_json_objects(path, problems, digest):
        raw_id = obj.get("_id")
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            raw_id = str(raw_id)
        if not isinstance(raw_id, str) or not raw_id.strip():
            problems.add(path, number, "missing or empty '_id'")
            continue
        if raw_id in seen:
            problems.add(path, number, f"duplicate {kind} id {raw_id!r}")
            continue
        if len(raw_id) > MAX_ID_LENGTH:
            problems.add(path, number, f"{kind} id longer than {MAX_ID_LENGTH} characters")
            continue
        seen.add(raw_id)
        meta = obj.get("metadata", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            problems.add(path, number, "'metadata' must be a JSON object")
            continue
        text = obj.get("text")
        if not isinstance(text, str):
            problems.add(path, number, "missing 'text' (a string)")
            continue
        # Real collections hold a few empty documents (Cranfield 471 and 995) that judgements
        # name; they are kept with a warning. A query with no text is of no use: an error.
        if kind == "query" and not text.strip():
            problems.add(path, number, "empty 'text'")
            continue
        yield number, raw_id, obj


def _documents(path, problems, digest=None) -> Iterator[tuple[str, str, str, dict]]:
    for number, doc_id, obj in _records(path, problems, kind="document", digest=digest):
        title = obj.get("title") or ""
        if not isinstance(title, str):
            problems.add(path, number, "'title' must be a string")
            continue
        yield doc_id, title, obj["text"], obj.get("metadata") or {}


def _queries(path, problems, digest=None) -> Iterator[tuple[str, str, dict]]:
    for _, query_id, obj in _records(path, problems, kind="query", digest=digest):
        yield query_id, obj["text"], obj.get("metadata") or {}


def _qrels(path, problems, query_ids, doc_ids, digest=None) -> Iterator[tuple[str, str, int]]:
    seen: set[tuple[str, str]] = set()
    lines = iter_lines(path, problems, digest)
    for number, line in lines:
        try:
            cells = next(csv.reader([line], delimiter="\t"), [])
        except csv.Error as exc:
            problems.add(path, number, f"unreadable TSV line ({exc})")
            continue
        if number == 1 and cells and cells[0].strip().lower() in ("query-id", "query_id", "qid"):
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
            problems.add(path, number, f"unknown query id {qid!r}")
            continue
        if did not in doc_ids:
            problems.add(path, number, f"unknown document id {did!r}")
            continue
        if (qid, did) in seen:
            problems.add(path, number, f"duplicate judgement ({qid}, {did})")
            continue
        seen.add((qid, did))
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
    # words per document → how many documents: bounded by distinct lengths, not by corpus size
    word_histogram: Counter = field(default_factory=Counter, repr=False)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def locate_beir_files(folder: str | Path) -> BeirScan:
    folder = Path(folder)
    if not folder.is_dir():
        raise BeirError([BeirProblem(str(folder), 0, "not a folder")])
    corpus, queries = _find(folder, "corpus.jsonl"), _find(folder, "queries.jsonl")
    qrels_dir = folder / "qrels"
    qrels = {
        p.name.split(".")[0]: p
        for p in (sorted(qrels_dir.iterdir()) if qrels_dir.is_dir() else [])
        if p.name.endswith((".tsv", ".tsv.gz")) and p.is_file()
    }
    problems = Problems()
    if corpus is None:
        problems.add(folder / "corpus.jsonl", 0, "file not found")
    if queries is None:
        problems.add(folder / "queries.jsonl", 0, "file not found")
    if not qrels:
        problems.add(qrels_dir, 0, "no qrels/<split>.tsv file found")
    for split, path in qrels.items():
        if len(split) > MAX_SPLIT_LENGTH:
            problems.add(path, 0, f"split name longer than {MAX_SPLIT_LENGTH} characters")
    problems.raise_if_any(folder)
    return BeirScan(folder=folder, corpus_path=corpus, queries_path=queries, qrels_paths=qrels)


def scan_beir_folder(folder: str | Path) -> BeirScan:
    """Validate a BEIR folder in one streaming pass; raise BeirError listing every problem."""
    scan = locate_beir_files(folder)
    problems = Problems()
    digest = hashlib.sha256()
    doc_ids: set[str] = set()
    empty_titles = long_texts = empty_texts = 0
    digest.update(b"corpus\0")
    for doc_id, title, text, _ in _documents(scan.corpus_path, problems, digest):
        doc_ids.add(doc_id)
        empty_titles += not title.strip()
        empty_texts += not (title.strip() or text.strip())
        words = len(text.split()) + len(title.split())
        long_texts += words > LONG_TEXT_WORDS
        scan.word_histogram[words] += 1
    digest.update(b"queries\0")
    query_ids = {q for q, _, _ in _queries(scan.queries_path, problems, digest)}
    for split, path in scan.qrels_paths.items():
        digest.update(b"qrels\0" + split.encode() + b"\0")
        before = len(problems.items)
        count = sum(1 for _ in _qrels(path, problems, query_ids, doc_ids, digest))
        if count == 0 and len(problems.items) == before:
            problems.add(path, 0, "no judgements")
        scan.qrels_counts[split] = count
    problems.raise_if_any(scan.folder)
    scan.document_count, scan.query_count = len(doc_ids), len(query_ids)
    if empty_texts:
        scan.warnings.append(f"{empty_texts} document(s) have neither title nor text.")
    if empty_titles:
        scan.warnings.append(f"{empty_titles} document(s) have an empty title.")
    if long_texts:
        scan.warnings.append(f"{long_texts} document(s) are longer than {LONG_TEXT_WORDS} words.")
    scan.content_hash = digest.hexdigest()
    return scan


def _checked(rows: Iterator, problems: Problems, scan: BeirScan) -> Iterator:
    yield from rows
    # The files were validated by the scan; a problem now means they changed under us.
    problems.raise_if_any(scan.folder)


def iter_documents(scan: BeirScan) -> Iterator[tuple[str, str, str, dict]]:
    problems = Problems()
    return _checked(_documents(scan.corpus_path, problems), problems, scan)


def iter_queries(scan: BeirScan) -> Iterator[tuple[str, str, dict]]:
    problems = Problems()
    return _checked(_queries(scan.queries_path, problems), problems, scan)


def iter_qrels(scan: BeirScan) -> Iterator[tuple[str, str, str, int]]:
    """(split, query id, document id, score); membership was checked by the scan."""

    class Anything:
        def __contains__(self, item) -> bool:
            return True

    for split, path in scan.qrels_paths.items():
        problems = Problems()
        for qid, did, score in _checked(
            _qrels(path, problems, Anything(), Anything()), problems, scan
        ):
            yield split, qid, did, score
