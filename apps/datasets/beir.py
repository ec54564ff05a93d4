"""Reading BEIR folders strictly: every problem is reported as ``FILE:LINE: reason``.

Plain Python with no Django, so the same parser serves the command line, the page and the
ingest worker. Files may be gzip-compressed (``corpus.jsonl.gz``).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_ERRORS = 50
LONG_TEXT_WORDS = 2000


@dataclass
class BeirProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.reason}"
            if self.line
            else f"{self.file}: {self.reason}"
        )


class BeirError(ValueError):
    def __init__(self, problems: list[BeirProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class BeirData:
    documents: list[tuple[str, str, str, dict]] = field(default_factory=list)
    queries: list[tuple[str, str, dict]] = field(default_factory=list)
    qrels: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    content_hash: str = ""
    warnings: list[str] = field(default_factory=list)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def _lines(label: str, raw: bytes, problems: list[BeirProblem]) -> Iterator[tuple[int, str]]:
    if not raw.strip():
        problems.append(BeirProblem(label, 0, "the file is empty"))
        return
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(BeirProblem(label, number, f"not valid UTF-8 (byte {exc.start})"))


def _json_records(label, raw, problems, *, kind: str) -> Iterator[tuple[int, str, dict]]:
    seen: set[str] = set()
    for number, line in _lines(label, raw, problems):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(BeirProblem(label, number, f"malformed JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            problems.append(BeirProblem(label, number, "expected a JSON object"))
            continue
        raw_id = obj.get("_id")
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            raw_id = str(raw_id)
        if not isinstance(raw_id, str) or not raw_id.strip():
            problems.append(BeirProblem(label, number, "missing or empty '_id'"))
            continue
        if raw_id in seen:
            problems.append(BeirProblem(label, number, f"duplicate {kind} id {raw_id!r}"))
            continue
        if len(raw_id) > 200:
            problems.append(BeirProblem(label, number, f"{kind} id longer than 200 characters"))
            continue
        seen.add(raw_id)
        yield number, raw_id, obj


def read_beir_folder(folder: str | Path) -> BeirData:
    """Parse and validate a BEIR folder; raise BeirError listing every problem found."""
    folder = Path(folder)
    problems: list[BeirProblem] = []
    data = BeirData()
    if not folder.is_dir():
        raise BeirError([BeirProblem(str(folder), 0, "not a folder")])
    corpus_path = _find(folder, "corpus.jsonl")
    queries_path = _find(folder, "queries.jsonl")
    qrels_dir = folder / "qrels"
    qrels_paths = (
        sorted(p for p in qrels_dir.glob("*") if p.name.endswith((".tsv", ".tsv.gz")))
        if qrels_dir.is_dir()
        else []
    )
    for path, what in ((corpus_path, "corpus.jsonl"), (queries_path, "queries.jsonl")):
        if path is None:
            problems.append(BeirProblem(str(folder / what), 0, "file not found"))
    if not qrels_paths:
        problems.append(BeirProblem(str(qrels_dir), 0, "no qrels/<split>.tsv file found"))
    if problems:
        raise BeirError(problems)

    digest = hashlib.sha256()
    empty_titles = long_texts = 0

    raw = _read_bytes(corpus_path)
    digest.update(b"corpus\0" + raw)
    label = str(corpus_path)
    for number, doc_id, obj in _json_records(label, raw, problems, kind="document"):
        title, text, meta = obj.get("title", ""), obj.get("text"), obj.get("metadata", {})
        if title is None:
            title = ""
        if not isinstance(title, str):
            problems.append(BeirProblem(label, number, "'title' must be a string"))
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append(BeirProblem(label, number, "missing or empty 'text'"))
            continue
        if not isinstance(meta, dict):
            problems.append(BeirProblem(label, number, "'metadata' must be a JSON object"))
            continue
        empty_titles += not title.strip()
        long_texts += len(text.split()) > LONG_TEXT_WORDS
        data.documents.append((doc_id, title, text, meta))

    raw = _read_bytes(queries_path)
    digest.update(b"queries\0" + raw)
    label = str(queries_path)
    for number, query_id, obj in _json_records(label, raw, problems, kind="query"):
        text, meta = obj.get("text"), obj.get("metadata", {})
        if not isinstance(text, str) or not text.strip():
            problems.append(BeirProblem(label, number, "missing or empty 'text'"))
            continue
        if not isinstance(meta, dict):
            problems.append(BeirProblem(label, number, "'metadata' must be a JSON object"))
            continue
        data.queries.append((query_id, text, meta))

    doc_ids = {d[0] for d in data.documents}
    query_ids = {q[0] for q in data.queries}
    for path in qrels_paths:
        split = path.name.split(".")[0]
        raw = _read_bytes(path)
        digest.update(b"qrels\0" + split.encode() + b"\0" + raw)
        label = str(path)
        rows: list[tuple[str, str, int]] = []
        seen_pairs: set[tuple[str, str]] = set()
        for number, line in _lines(label, raw, problems):
            cells = next(csv.reader(io.StringIO(line), delimiter="\t"))
            if (
                number == 1
                and cells
                and cells[0].strip().lower() in ("query-id", "query_id", "qid")
            ):
                continue  # header is optional
            if len(cells) != 3:
                problems.append(
                    BeirProblem(
                        label, number, f"expected 3 tab-separated columns, found {len(cells)}"
                    )
                )
                continue
            qid, did, score_text = (c.strip() for c in cells)
            try:
                score = int(score_text)
            except ValueError:
                problems.append(
                    BeirProblem(label, number, f"relevance {score_text!r} is not an integer")
                )
                continue
            if qid not in query_ids:
                problems.append(BeirProblem(label, number, f"unknown query id {qid!r}"))
                continue
            if did not in doc_ids:
                problems.append(BeirProblem(label, number, f"unknown document id {did!r}"))
                continue
            if (qid, did) in seen_pairs:
                problems.append(BeirProblem(label, number, f"duplicate judgement ({qid}, {did})"))
                continue
            seen_pairs.add((qid, did))
            rows.append((qid, did, score))
        if not rows and not any(p.file == label for p in problems):
            problems.append(BeirProblem(label, 0, "no judgements"))
        data.qrels[split] = rows
        if len(problems) >= MAX_ERRORS:
            break

    if problems:
        if len(problems) > MAX_ERRORS:
            extra = len(problems) - MAX_ERRORS
            problems = problems[:MAX_ERRORS] + [BeirProblem(str(folder), 0, f"… and {extra} more")]
        raise BeirError(problems)
    if empty_titles:
        data.warnings.append(f"{empty_titles} document(s) have an empty title.")
    if long_texts:
        data.warnings.append(f"{long_texts} document(s) are longer than {LONG_TEXT_WORDS} words.")
    data.content_hash = digest.hexdigest()
    return data
