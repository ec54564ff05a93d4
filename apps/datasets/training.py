"""Training pairs and triplets from JSONL or CSV, by column name — never by position.

Roles: ``anchor`` and ``positive`` (required), ``negative`` or ``negative_1..n`` (optional),
``score`` (optional). A few common synonyms are accepted and the mapping is shown to the user
before anything is imported. Streaming, like the BEIR reader: a validating scan, then rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from apps.datasets.beir import (
    BeirError,
    BeirProblem,
    Problems,
    _unstorable,
    iter_json_objects,
    iter_lines,
)

TRAINING_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz")
ANCHOR = ("anchor", "query", "question", "sentence1")
POSITIVE = ("positive", "pos", "document", "passage", "sentence2")
SCORE = ("score", "label")
NEGATIVE = re.compile(r"^(negative|neg)(_?\d+)?$")


def is_training_file(name: str) -> bool:
    return name.endswith(TRAINING_SUFFIXES) and not name.startswith(("corpus.", "queries."))


@dataclass
class Roles:
    anchor: str
    positive: str
    negatives: list[str]
    score: str | None
    ignored: list[str]

    def as_dict(self) -> dict:
        return {
            "anchor": self.anchor,
            "positive": self.positive,
            "negatives": self.negatives,
            "score": self.score,
            "ignored": self.ignored,
        }


def detect_roles(columns: list[str], *, file: str) -> Roles:
    lowered = {c.strip().lower(): c for c in columns}

    def pick(names: tuple[str, ...]) -> str | None:
        return next((lowered[n] for n in names if n in lowered), None)

    anchor, positive, score = pick(ANCHOR), pick(POSITIVE), pick(SCORE)
    missing = [r for r, c in (("anchor", anchor), ("positive", positive)) if c is None]
    if missing:
        raise BeirError(
            [
                BeirProblem(
                    file,
                    1,
                    f"no column for {' and '.join(missing)} (columns: {', '.join(columns)}; "
                    f"expected anchor, positive, optional negative / negative_1..n, score)",
                )
            ]
        )

    def order(name: str) -> int:
        digits = re.sub(r"\D", "", name)
        return int(digits) if digits else 0

    negatives = sorted((c for c in columns if NEGATIVE.match(c.strip().lower())), key=order)
    used = {anchor, positive, score, *negatives}
    return Roles(anchor, positive, negatives, score, [c for c in columns if c not in used])


@dataclass
class TrainingScan:
    path: Path
    format: str  # "jsonl" | "csv"
    roles: Roles
    row_count: int = 0
    content_hash: str = ""
    warnings: list[str] = field(default_factory=list)


def _csv_records(path: Path, problems: Problems, digest=None) -> Iterator[tuple[int, dict]]:
    lines = iter_lines(path, problems, digest)
    numbers: list[int] = []

    def texts():
        for number, line in lines:
            numbers.append(number)
            yield line

    reader = csv.reader(texts())
    header: list[str] | None = None
    try:
        for cells in reader:
            line = numbers[-1] if numbers else 0
            if header is None:
                header = [c.strip() for c in cells]
                if len(set(header)) != len(header):
                    problems.add(path, line, "duplicate column names in the header")
                    return
                yield 0, {"__header__": header}
                continue
            if len(cells) != len(header):
                problems.add(path, line, f"expected {len(header)} columns, found {len(cells)}")
                continue
            if why := _unstorable(cells):
                problems.add(path, line, f"contains {why}, which cannot be stored")
                continue
            yield line, dict(zip(header, cells, strict=True))
    except csv.Error as exc:
        problems.add(path, numbers[-1] if numbers else 0, f"malformed CSV ({exc})")


def _jsonl_records(path: Path, problems: Problems, digest=None) -> Iterator[tuple[int, dict]]:
    return iter_json_objects(path, problems, digest)


def check_first_record(
    file: str, number: int, line: str, problems: Problems, *, csv_format: bool
) -> None:
    """What the scan would refuse in a training file's first record, seen on its first
    non-blank line alone (the upload's pre-check): its columns cannot give the roles.

    Only what dooms the whole file: a JSON object without anchor and positive columns fails
    on that row whatever the later rows hold; a CSV header whose line has no quote is that
    line (a quoted one may go on over more lines, so it is left to the scan).
    """
    if csv_format:
        if '"' in line:
            return
        try:
            cells = next(csv.reader([line]))
        except csv.Error as exc:
            problems.add(file, number, f"malformed CSV ({exc})")
            return
        columns = [c.strip() for c in cells]
        if len(set(columns)) != len(columns):
            problems.add(file, number, "duplicate column names in the header")
            return
    else:
        objects = list(iter_json_objects(file, problems, lines=[(number, line)]))
        if not objects:
            return
        columns = list(objects[0][1])
    try:
        detect_roles(columns, file=file)
    except BeirError as exc:
        for problem in exc.problems:
            problems.add(problem.file, problem.line, problem.reason)


def _format(path: Path) -> str:
    return "csv" if path.name.removesuffix(".gz").endswith(".csv") else "jsonl"


def _first_columns(path: Path, problems: Problems) -> list[str]:
    if _format(path) == "csv":
        for _, rec in _csv_records(path, problems):
            return rec["__header__"]
        return []
    # JSONL rows may omit optional keys: take every key seen in the first rows, in order.
    columns: dict[str, None] = {}
    for seen, (_, obj) in enumerate(_jsonl_records(path, problems)):
        columns.update(dict.fromkeys(obj))
        if seen >= 100:
            break
    return list(columns)


def _rows(path: Path, roles: Roles, problems: Problems, digest=None):
    records = (
        _csv_records(path, problems, digest)
        if _format(path) == "csv"
        else _jsonl_records(path, problems, digest)
    )
    for number, rec in records:
        if "__header__" in rec:
            continue
        anchor, positive = rec.get(roles.anchor), rec.get(roles.positive)
        bad = [
            role
            for role, value in (("anchor", anchor), ("positive", positive))
            if not isinstance(value, str) or not value.strip()
        ]
        if bad:
            problems.add(path, number, f"missing or empty {' and '.join(repr(b) for b in bad)}")
            continue
        negatives = []
        for column in roles.negatives:
            value = rec.get(column)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                problems.add(path, number, f"{column!r} must be text")
                break
            negatives.append(value)
        else:
            score = None
            if roles.score is not None and rec.get(roles.score) not in (None, ""):
                try:
                    score = float(rec[roles.score])
                except (TypeError, ValueError):
                    problems.add(path, number, f"{roles.score!r} is not a number")
                    continue
            yield number, anchor, positive, negatives, score


def scan_training_file(path: str | Path) -> TrainingScan:
    path = Path(path)
    header_problems = Problems()  # the full pass below reports every line's problems itself
    columns = _first_columns(path, header_problems)
    if not columns:
        header_problems.raise_if_any(path)
    roles = detect_roles(columns, file=str(path))
    problems = Problems()
    digest = hashlib.sha256(b"training\0" + json.dumps(roles.as_dict()).encode())
    scan = TrainingScan(path=path, format=_format(path), roles=roles)
    seen: set[bytes] = set()
    duplicates = same = 0
    for _, anchor, positive, _, _ in _rows(path, roles, problems, digest):
        scan.row_count += 1
        key = hashlib.blake2b(f"{anchor}\0{positive}".encode(), digest_size=12).digest()
        duplicates += key in seen
        seen.add(key)
        same += anchor.strip() == positive.strip()
    if scan.row_count == 0 and not problems:
        problems.add(path, 0, "no training rows")
    problems.raise_if_any(path)
    if roles.ignored:
        scan.warnings.append(f"Columns not used: {', '.join(roles.ignored)}.")
    if duplicates:
        scan.warnings.append(f"{duplicates} duplicate (anchor, positive) pair(s).")
    if same:
        scan.warnings.append(f"{same} row(s) whose anchor is also its positive.")
    scan.content_hash = digest.hexdigest()
    return scan


def iter_training_rows(
    scan: TrainingScan,
) -> Iterator[tuple[int, str, str, list[str], float | None]]:
    problems = Problems()
    yield from _rows(scan.path, scan.roles, problems)
    problems.raise_if_any(scan.path)


def preview_training_file(path: str | Path, *, rows: int = 5) -> tuple[Roles, list[tuple]]:
    """The role mapping and the first rows, cheaply, for the page before import."""
    path = Path(path)
    problems = Problems()
    roles = detect_roles(_first_columns(path, problems), file=str(path))
    sample = []
    for row in _rows(path, roles, problems):
        sample.append(row)
        if len(sample) >= rows:
            break
    return roles, sample
