"""Writing a validated dataset's rows: COPY on PostgreSQL, batched inserts on SQLite.

Called inside the transaction that creates the version, so a failure anywhere leaves nothing.
There is deliberately no progress callback: on PostgreSQL a database write from inside COPY
waits on its own connection forever, and the job row must not be written by this transaction.
Memory stays flat: rows stream from the files to the database; judgements are resolved to row
ids by the database itself (a join), never through an in-memory map of the whole corpus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice

from django.db import connection

from apps.datasets.models import DatasetVersion, Document, Qrel, Query, TrainingRow

BATCH = 5000


def _batches(rows: Iterable, size: int = BATCH) -> Iterator[list]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _json(value: dict) -> str:
    return json.dumps(value) if value else "{}"  # most rows have no metadata


def _copy(table: str, columns: list[str], rows: Iterable[tuple]) -> int:
    n = 0
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # the psycopg 3 cursor under Django's wrapper
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
    return n


def load_documents(version: DatasetVersion, rows) -> int:
    if connection.vendor == "postgresql":
        n = _copy(
            Document._meta.db_table,
            ["version_id", "doc_id", "title", "text", "metadata"],
            ((version.pk, d, t, x, _json(m)) for d, t, x, m in rows),
        )
    else:
        n = 0
        for batch in _batches(rows):
            Document.objects.bulk_create(
                Document(version=version, doc_id=d, title=t, text=x, metadata=m)
                for d, t, x, m in batch
            )
            n += len(batch)
    return n


def load_queries(version: DatasetVersion, rows) -> int:
    if connection.vendor == "postgresql":
        return _copy(
            Query._meta.db_table,
            ["version_id", "query_id", "text", "metadata"],
            ((version.pk, q, t, _json(m)) for q, t, m in rows),
        )
    n = 0
    for batch in _batches(rows):
        Query.objects.bulk_create(
            Query(version=version, query_id=q, text=t, metadata=m) for q, t, m in batch
        )
        n += len(batch)
    return n


def load_qrels(version: DatasetVersion, rows) -> int:
    """rows: (split, query id, document id, score) with ids as in the files. Returns how many
    were written: judgements naming an id absent from the version are left out."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE embedhub_qrel_load (split text, query_id text, doc_id text,"
                " score integer) ON COMMIT DROP"
            )
        _copy("embedhub_qrel_load", ["split", "query_id", "doc_id", "score"], rows)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {Qrel._meta.db_table} (version_id, split, query_id, document_id, score)
                SELECT %s, l.split, q.id, d.id, l.score
                FROM embedhub_qrel_load l
                JOIN {Query._meta.db_table} q ON q.version_id = %s AND q.query_id = l.query_id
                JOIN {Document._meta.db_table} d ON d.version_id = %s AND d.doc_id = l.doc_id
                """,
                [version.pk, version.pk, version.pk],
            )
            n = cursor.rowcount
            cursor.execute("DROP TABLE embedhub_qrel_load")
        return n
    n = 0
    for batch in _batches(rows):
        qpk = dict(
            Query.objects.filter(version=version, query_id__in={r[1] for r in batch}).values_list(
                "query_id", "pk"
            )
        )
        dpk = dict(
            Document.objects.filter(version=version, doc_id__in={r[2] for r in batch}).values_list(
                "doc_id", "pk"
            )
        )
        # Like the join above, a judgement whose ids are not both there is left out: the
        # caller compares the count with the scan's.
        found = [
            Qrel(version=version, split=s, query_id=qpk[q], document_id=dpk[d], score=score)
            for s, q, d, score in batch
            if q in qpk and d in dpk
        ]
        Qrel.objects.bulk_create(found)
        n += len(found)
    return n


def load_training_rows(version: DatasetVersion, rows) -> int:
    """rows: (row, anchor, positive, negatives, score)."""

    if connection.vendor == "postgresql":
        n = _copy(
            TrainingRow._meta.db_table,
            ["version_id", "row", "anchor", "positive", "negatives", "score"],
            ((version.pk, r, a, p, json.dumps(ns), s) for r, a, p, ns, s in rows),
        )
    else:
        n = 0
        for batch in _batches(rows):
            TrainingRow.objects.bulk_create(
                TrainingRow(version=version, row=r, anchor=a, positive=p, negatives=ns, score=s)
                for r, a, p, ns, s in batch
            )
            n += len(batch)
    return n
