"""The data health report, computed once when a version is written and kept on it."""

from __future__ import annotations

from django.db.models import Count, Max

from apps.datasets.models import DatasetVersion

EXAMPLES = 5


def _duplicate_documents(version: DatasetVersion) -> dict:
    groups = (
        version.documents.values("title", "text")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .order_by("-n")
    )
    extra = sum(g["n"] - 1 for g in groups)
    examples = []
    for group in groups[:EXAMPLES]:
        ids = version.documents.filter(title=group["title"], text=group["text"])
        examples.append(sorted(ids.values_list("doc_id", flat=True)[:5]))
    return {"count": extra, "examples": examples}


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
    """The same query text judged in two splits."""
    texts: dict[str, set[str]] = {}
    for split in version.splits:
        judged = version.qrels.filter(split=split).values_list("query__text", flat=True)
        texts[split] = {t.strip().lower() for t in judged.distinct()}
    out = {}
    splits = sorted(texts)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
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


def version_health(version: DatasetVersion) -> dict:
    if version.kind == DatasetVersion.Kind.TRAINING:
        return _training(version)
    return {
        "duplicate_documents": _duplicate_documents(version),
        "queries_without_relevant": _queries_without_relevant(version),
        "split_leakage": _split_leakage(version),
        # Judgements naming a document absent from the corpus are rejected at validation.
        "judged_documents_missing": {"count": 0},
    }
