from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from apps.accounts.models import Team
from apps.datasets import loader
from apps.datasets.beir import iter_documents, iter_qrels, iter_queries, scan_beir_folder
from apps.datasets.models import Dataset, DatasetVersion

Progress = Callable[[str, int, int], None]


@dataclass
class ImportResult:
    version: DatasetVersion
    created: bool


def dataset_import_beir(
    *, team: Team, name: str, path: str | Path, report: Progress | None = None
) -> ImportResult:
    """Import a BEIR folder as a new immutable version of the team's dataset ``name``.

    A first streaming pass validates everything before anything is written (BeirError lists
    FILE:LINE: reason); the rows then stream into the database in one transaction (COPY on
    PostgreSQL), so a failure leaves no trace and memory stays flat. Identical content reuses the
    existing version; changed content makes version n+1 with the previous one as parent.
    """
    if report:
        report("validating", 0, 0)
    scan = scan_beir_folder(path)
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(team=team, name=name)
        existing = dataset.versions.filter(content_hash=scan.content_hash).first()
        if existing is not None:
            return ImportResult(version=existing, created=False)
        parent = dataset.latest_version
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=(parent.number + 1) if parent else 1,
            content_hash=scan.content_hash,
            parent=parent,
            source=str(path)[:500],
            document_count=scan.document_count,
            query_count=scan.query_count,
            qrels_counts=scan.qrels_counts,
            warnings=scan.warnings,
            stats={"document_words": {str(k): v for k, v in sorted(scan.word_histogram.items())}},
        )
        loader.load_documents(
            version, iter_documents(scan), total=scan.document_count, report=report
        )
        if report:
            report("loading queries and judgements", 0, 0)
        loader.load_queries(version, iter_queries(scan))
        loader.load_qrels(version, iter_qrels(scan))
    return ImportResult(version=version, created=True)
