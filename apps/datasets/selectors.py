from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.shortcuts import get_object_or_404

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.listing import Sort
from apps.datasets.models import Dataset, DatasetVersion, Query


def dataset_list(*, team: Team) -> QuerySet[Dataset]:
    return Dataset.objects.filter(team=team).prefetch_related("versions").order_by("name")


# The datasets list's sort keys (``apps.core.listing``): by name by default.
DATASET_SORTS = {
    "name": Sort("name", ("name", "pk"), "▲"),
    "new": Sort("newest first", ("-created_at", "-pk"), "▼"),
    "old": Sort("oldest first", ("created_at", "pk"), "▲"),
}


def dataset_with_kind(rows: QuerySet[Dataset], kind: str) -> QuerySet[Dataset]:
    """The datasets among ``rows`` with at least one version of ``kind`` (a retrieval
    collection, a training set)."""
    return rows.filter(Exists(DatasetVersion.objects.filter(dataset=OuterRef("pk"), kind=kind)))


def dataset_get(*, user, pk, role: str = "viewer") -> Dataset:
    return team_scoped_get(queryset=Dataset.objects.all(), user=user, pk=pk, role=role)


def dataset_version_get(*, user, pk, role: str = "viewer") -> DatasetVersion:
    dataset_pk = DatasetVersion.objects.filter(pk=pk).values_list("dataset_id", flat=True).first()
    dataset = dataset_get(user=user, pk=dataset_pk, role=role)
    return dataset.versions.get(pk=pk)


def evaluation_inputs(
    *, version: DatasetVersion, split: str
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]], dict[str, dict[str, int]]]:
    """Corpus, the split's judged queries and its qrels, as plain tuples for workers/ml."""
    corpus = list(version.documents.order_by("pk").values_list("doc_id", "title", "text"))
    qrels: dict[str, dict[str, int]] = {}
    rows = version.qrels.filter(split=split).values_list(
        "query__query_id", "document__doc_id", "score"
    )
    for qid, did, score in rows.iterator():
        qrels.setdefault(qid, {})[did] = score
    queries = list(
        version.queries.filter(query_id__in=list(qrels))
        .order_by("pk")
        .values_list("query_id", "text")
    )
    return corpus, queries, qrels


def document_search(*, version: DatasetVersion, q: str, limit: int = 20) -> list:
    """Documents by exact id first, then by text.

    PostgreSQL full text (websearch syntax, ranked); simple word matching on SQLite.
    """
    from django.db import connection

    q = q.strip()
    if not q:
        return []
    exact = list(version.documents.filter(doc_id=q)[:1])
    docs = version.documents.exclude(doc_id=q)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

        query = SearchQuery(q, search_type="websearch", config="english")
        vector = SearchVector("title", "text", config="english")
        found = (
            docs.annotate(rank=SearchRank(vector, query)).filter(rank__gt=0).order_by("-rank", "pk")
        )
    else:
        found = docs
        for word in q.split():
            found = found.filter(Q(title__icontains=word) | Q(text__icontains=word))
        found = found.order_by("pk")
    return exact + list(found[: limit - len(exact)])


def query_get(*, version: DatasetVersion, pk) -> Query:
    return get_object_or_404(version.queries, pk=pk)


def dataset_version_tree(*, dataset) -> list[tuple[DatasetVersion, int]]:
    """The dataset's versions as a tree, depth first: each collection (a version without a
    parent) with what was derived from it (mined, deduplicated, selected) under it, as
    (version, depth) pairs. Newest collection first; derived ones in the order they were made.
    """
    versions = list(dataset.versions.select_related("parent").order_by("number"))
    children: dict[int | None, list[DatasetVersion]] = {}
    ids = {v.pk for v in versions}
    for v in versions:
        # A parent deleted (SET_NULL) or in another dataset makes the version a root here.
        children.setdefault(v.parent_id if v.parent_id in ids else None, []).append(v)
    out: list[tuple[DatasetVersion, int]] = []

    def walk(version: DatasetVersion, depth: int) -> None:
        out.append((version, depth))
        for child in children.get(version.pk, []):
            walk(child, depth + 1)

    for root in reversed(children.get(None, [])):
        walk(root, 0)
    return out
