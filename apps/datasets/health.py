"""The data health report, computed once when a version is written and kept on it (with the
counts a page or a form needs later, so no request reads every row again)."""

from __future__ import annotations

from django.db import connection
from django.db.models import Count, Func, IntegerField, Max

from apps.datasets.models import DatasetVersion, Document

EXAMPLES = 5


def _duplicate_documents(version: DatasetVersion) -> dict:
    if connection.vendor == "postgresql":
        return _duplicate_documents_postgresql(version)
    return _duplicate_documents_orm(version)


def _duplicate_documents_orm(version: DatasetVersion) -> dict:
    groups = (
        version.documents.values("title", "text")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .order_by("-n")
    )
    extra = sum(g["n"] - 1 for g in groups)
    examples = []
    for group in groups[:EXAMPLES]:
        ids = version.documents.filter(title=group["title"], text=group["text"]).order_by("pk")
        examples.append(sorted(ids.values_list("doc_id", flat=True)[:5]))  # the first 5 in file
    return {"count": extra, "examples": examples}


# An 8-byte hash of (title, text): grouping by it needs no sort of the whole texts. Equal
# documents have equal hashes, so only rows whose hash repeats can be duplicates; those few are
# then grouped exactly by their texts.
_CONTENT_HASH = "(hashtextextended(title, 0) # hashtextextended(text, 1))"


def _duplicate_documents_postgresql(version: DatasetVersion) -> dict:
    table = Document._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_CONTENT_HASH} AS h FROM {table} WHERE version_id = %s"
            " GROUP BY h HAVING count(*) > 1",
            [version.pk],
        )
        suspects = [h for (h,) in cursor.fetchall()]
        if not suspects:
            return {"count": 0, "examples": []}
        cursor.execute(
            f"""
            SELECT n, ids, sum(n - 1) OVER ()
            FROM (
                SELECT count(*) AS n, min(id) AS first,
                    (array_agg(doc_id ORDER BY id))[1:5] AS ids
                FROM {table}
                WHERE version_id = %s AND {_CONTENT_HASH} = ANY(%s::bigint[])
                GROUP BY title, text
                HAVING count(*) > 1
            ) groups
            ORDER BY n DESC, first
            LIMIT {EXAMPLES}
            """,
            [version.pk, suspects],
        )
        rows = cursor.fetchall()
    if not rows:
        return {"count": 0, "examples": []}
    return {"count": int(rows[0][2]), "examples": [sorted(ids) for _, ids, _ in rows]}


def _queries_without_relevant(version: DatasetVersion) -> dict:
    out = {}
    for split in version.splits:
        best = (
            version.qrels.filter(split=split)
            .values("query__query_id")
            .annotate(best=Max("score"))
            .filter(best__lte=0)
        )
        out[split] = {
            "count": best.count(),
            "examples": [b["query__query_id"] for b in best[:EXAMPLES]],
        }
    return out


def _split_leakage(version: DatasetVersion) -> dict:
    """The same query text judged in a training split and another split. Two evaluation
    splits sharing queries (Cranfield's test and test_graded: the same queries, graded
    differently) are variants, not leakage."""
    texts: dict[str, set[str]] = {}
    for split in version.splits:
        judged = version.qrels.filter(split=split).values_list("query__text", flat=True)
        texts[split] = {t.strip().lower() for t in judged.distinct()}
    out = {}
    splits = sorted(texts)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            if "train" not in a and "train" not in b:
                continue
            shared = texts[a] & texts[b]
            if shared:
                out[f"{a}/{b}"] = {"count": len(shared), "examples": sorted(shared)[:EXAMPLES]}
    return out


def _training(version: DatasetVersion) -> dict:
    rows = version.training_rows
    pairs = rows.values("anchor", "positive").annotate(n=Count("id")).filter(n__gt=1)
    same = sum(
        1 for a, p in rows.values_list("anchor", "positive").iterator() if a.strip() == p.strip()
    )
    report = {
        "duplicate_pairs": {"count": sum(p["n"] - 1 for p in pairs)},
        "anchor_is_positive": {"count": same},
    }
    parent = version.parent
    if (
        parent is not None
        and parent.kind == DatasetVersion.Kind.RETRIEVAL
        and "test" in parent.splits
    ):
        # A test-judged document used as a training positive for the same query text.
        test = {
            (q.strip().lower(), (t + " " + x).strip())
            for q, t, x in parent.qrels.filter(split="test", score__gt=0).values_list(
                "query__text", "document__title", "document__text"
            )
        }
        leaked = [
            a
            for a, p in rows.values_list("anchor", "positive").iterator()
            if (a.strip().lower(), p.strip()) in test
        ]
        report["test_leakage"] = {"count": len(leaked), "examples": leaked[:EXAMPLES]}
    return report


def version_health(version: DatasetVersion, *, documents_may_repeat: bool = True) -> dict:
    """``documents_may_repeat=False``: the caller knows no two documents have the same title
    and text (the import hashed them as they streamed by), so the search is skipped."""
    if version.kind == DatasetVersion.Kind.TRAINING:
        return _training(version)
    no_duplicates = {"count": 0, "examples": []}
    return {
        "duplicate_documents": (
            _duplicate_documents(version) if documents_may_repeat else no_duplicates
        ),
        "queries_without_relevant": _queries_without_relevant(version),
        "split_leakage": _split_leakage(version),
        # Judgements naming a document absent from the corpus are rejected at validation.
        "judged_documents_missing": {"count": 0},
    }


class _JSONArrayLength(Func):
    function = "JSON_ARRAY_LENGTH"  # SQLite
    output_field = IntegerField()

    def as_postgresql(self, compiler, conn, **extra):
        return super().as_sql(compiler, conn, function="JSONB_ARRAY_LENGTH", **extra)


def negatives_per_row(version: DatasetVersion, *, limit: int | None = None) -> dict[str, int]:
    """{hard negatives in a row: rows with that many} over a training version (its first
    ``limit`` rows), counted by the database: the negatives' texts never leave it."""
    rows = version.training_rows.order_by("pk")
    if limit is not None:
        rows = version.training_rows.filter(pk__in=rows.values("pk")[:limit])
    counted = (
        rows.annotate(k=_JSONArrayLength("negatives"))
        .order_by()
        .values("k")
        .annotate(n=Count("id"))
        .values_list("k", "n")
    )
    return {str(k or 0): n for k, n in counted}
