from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from apps.accounts.models import Team
from apps.datasets.beir import read_beir_folder
from apps.datasets.models import Dataset, DatasetVersion, Document, Qrel, Query

BATCH = 2000


@dataclass
class ImportResult:
    version: DatasetVersion
    created: bool


def dataset_import_beir(*, team: Team, name: str, path: str | Path) -> ImportResult:
    """Import a BEIR folder as a new immutable version of the team's dataset ``name``.

    Validation happens before anything is written (BeirError lists FILE:LINE: reason), and the
    write is one transaction, so a failure leaves no trace. Identical content reuses the
    existing version; changed content makes version n+1 with the previous one as parent.
    """
    data = read_beir_folder(path)
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(team=team, name=name)
        existing = dataset.versions.filter(content_hash=data.content_hash).first()
        if existing is not None:
            return ImportResult(version=existing, created=False)
        parent = dataset.latest_version
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=(parent.number + 1) if parent else 1,
            content_hash=data.content_hash,
            parent=parent,
            source=str(path)[:500],
            document_count=len(data.documents),
            query_count=len(data.queries),
            qrels_counts={split: len(rows) for split, rows in data.qrels.items()},
            warnings=data.warnings,
        )
        Document.objects.bulk_create(
            (
                Document(version=version, doc_id=d, title=t, text=x, metadata=m)
                for d, t, x, m in data.documents
            ),
            batch_size=BATCH,
        )
        Query.objects.bulk_create(
            (Query(version=version, query_id=q, text=t, metadata=m) for q, t, m in data.queries),
            batch_size=BATCH,
        )
        doc_pk = dict(version.documents.values_list("doc_id", "pk"))
        query_pk = dict(version.queries.values_list("query_id", "pk"))
        Qrel.objects.bulk_create(
            (
                Qrel(
                    version=version,
                    split=split,
                    query_id=query_pk[qid],
                    document_id=doc_pk[did],
                    score=score,
                )
                for split, rows in data.qrels.items()
                for qid, did, score in rows
            ),
            batch_size=BATCH,
        )
    return ImportResult(version=version, created=True)
