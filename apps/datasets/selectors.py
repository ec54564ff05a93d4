from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.datasets.models import Dataset, DatasetVersion


def dataset_list(*, team: Team) -> QuerySet[Dataset]:
    return Dataset.objects.filter(team=team).prefetch_related("versions").order_by("name")


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
