from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Team
from apps.datasets import loader
from apps.datasets.beir import iter_documents, iter_qrels, iter_queries, scan_beir_folder
from apps.datasets.models import CurationJob, Dataset, DatasetVersion
from apps.datasets.training import iter_training_rows, scan_training_file

Progress = Callable[[str, int, int], None]


@dataclass
class ImportResult:
    version: DatasetVersion
    created: bool


def dataset_import_beir(
    *,
    team: Team,
    name: str,
    path: str | Path,
    report: Progress | None = None,
    source: str | None = None,
) -> ImportResult:
    """Import a BEIR folder as a new immutable version of the team's dataset ``name``.

    A first streaming pass validates everything before anything is written (BeirError lists
    FILE:LINE: reason); the rows then stream into the database in one transaction (COPY on
    PostgreSQL), so a failure leaves no trace and memory stays flat. The second pass does not
    validate again: it re-hashes the files and fails (BeirError, nothing written) if they
    changed in between; it also counts the words per document and hashes the documents for the
    health report. Identical content reuses the existing version; changed content makes
    version n+1 with the previous one as parent. ``source``: what the version was imported
    from, as its page shows it (the path when left out; an upload gives its file names).
    """
    from apps.datasets.beir import BeirError, BeirProblem, LoadStats
    from apps.datasets.health import version_health

    if report:
        report("validating", 0, 0)
    scan = scan_beir_folder(path)
    if report:
        report(f"loading {scan.document_count:,} documents", 0, 0)
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(team=team, name=name)
        version, created = _new_version(
            dataset=dataset,
            content_hash=scan.content_hash,
            source=(source or str(path))[:500],
            document_count=scan.document_count,
            query_count=scan.query_count,
            qrels_counts=scan.qrels_counts,
            warnings=scan.warnings,
        )
        if not created:
            return ImportResult(version=version, created=False)
        # No progress writes in here: the job row must not be written (and locked) by this
        # long transaction, and on PostgreSQL a write from inside COPY would wait on itself.
        stats = LoadStats()
        loader.load_documents(version, iter_documents(scan, stats))
        loader.load_queries(version, iter_queries(scan))
        judgements = loader.load_qrels(version, iter_qrels(scan))
        if judgements != sum(scan.qrels_counts.values()):
            # The scan looks ids up by 64-bit hash; an unknown id with a known one's hash (odds
            # about 1 in 10^10 for a million documents) would be dropped here: refuse instead.
            missing = sum(scan.qrels_counts.values()) - judgements
            raise BeirError(
                [
                    BeirProblem(
                        str(Path(path) / "qrels"),
                        0,
                        f"{missing} judgement(s) name a query or document id that is not there",
                    )
                ]
            )
        version.stats = {
            "document_words": {str(k): v for k, v in sorted(stats.word_histogram.items())}
        }
        # Hashes of (title, text) taken as the rows streamed by: none repeated means no
        # duplicate document, and the report skips that search of the whole table.
        version.health = version_health(version, documents_may_repeat=stats.documents_may_repeat())
        version.save(update_fields=["stats", "health"])
    return ImportResult(version=version, created=True)


def _new_version(*, dataset: Dataset, content_hash: str, **fields) -> tuple[DatasetVersion, bool]:
    existing = dataset.versions.filter(content_hash=content_hash).first()
    if existing is not None:
        return existing, False
    parent = fields.pop("parent", None) or dataset.latest_version
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=(dataset.latest_version.number + 1) if dataset.latest_version else 1,
        content_hash=content_hash,
        parent=parent,
        **fields,
    )
    return version, True


def dataset_import_training(
    *,
    team: Team,
    name: str,
    path: str | Path,
    report: Progress | None = None,
    source: str | None = None,
) -> ImportResult:
    """Import a pairs/triplets file (JSONL or CSV, roles by column name) as a training version."""
    if report:
        report("validating", 0, 0)
    scan = scan_training_file(path)
    if report:
        report(f"loading {scan.row_count:,} training rows", 0, 0)
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(team=team, name=name)
        version, created = _new_version(
            dataset=dataset,
            content_hash=scan.content_hash,
            kind=DatasetVersion.Kind.TRAINING,
            source=(source or str(path))[:500],
            training_count=scan.row_count,
            training_roles=scan.roles.as_dict(),
            warnings=scan.warnings,
        )
        if created:
            loader.load_training_rows(version, iter_training_rows(scan))
            _record_health(version)
    return ImportResult(version=version, created=created)


def dataset_version_pairs_from_qrels(
    *, version: DatasetVersion, split: str, min_score: int = 1
) -> ImportResult:
    """A training set from a split's judgements: anchor = query, positive = relevant document.

    A new version of the same dataset, with the source version as parent and the parameters
    recorded; asking twice with the same parameters gives the same version.
    """
    if version.kind != DatasetVersion.Kind.RETRIEVAL or split not in version.qrels_counts:
        raise ValueError(f"{version} has no judgements for split {split!r}.")
    params = {
        "operation": "pairs_from_qrels",
        "source_version": version.pk,
        "split": split,
        "min_score": min_score,
    }
    content_hash = hashlib.sha256(
        (version.content_hash + json.dumps(params, sort_keys=True)).encode()
    ).hexdigest()
    qrels = (
        version.qrels.filter(split=split, score__gte=min_score)
        .order_by("query__pk", "-score", "document__pk")
        .values_list("query__text", "document__title", "document__text", "score")
    )
    with transaction.atomic():
        new, created = _new_version(
            dataset=version.dataset,
            content_hash=content_hash,
            kind=DatasetVersion.Kind.TRAINING,
            parent=version,
            params=params,
            source=f"{version} qrels/{split}",
            training_count=qrels.count(),
            training_roles={"anchor": "query", "positive": "document (title + text)"},
        )
        if created:
            # A list, not .iterator(): a server-side cursor open on the connection that is
            # also running COPY blocks on PostgreSQL. Judgements are few next to documents.
            rows = [
                (i, query, (title + " " + text).strip(), [], float(score))
                for i, (query, title, text, score) in enumerate(qrels, start=1)
            ]
            loader.load_training_rows(new, rows)
            _record_health(new)
    return ImportResult(version=new, created=created)


def _record_health(version: DatasetVersion) -> None:
    """The health report, and for a training set how many hard negatives its rows have (what
    a run's estimate needs, read from here instead of from every row at each start)."""
    from apps.datasets.health import negatives_per_row, version_health

    version.health = version_health(version)
    fields = ["health"]
    if version.kind == DatasetVersion.Kind.TRAINING:
        version.stats = {**version.stats, "negatives_per_row": negatives_per_row(version)}
        fields.append("stats")
    version.save(update_fields=fields)


# --- what curation jobs write (called by the worker's task, and by a dedup's review) ----------


def curation_artifact_dir(*, job: CurationJob) -> Path:
    """The job's own folder: a dedup keeps its removal list here until it is reviewed."""
    folder = Path(settings.ARTIFACTS_ROOT) / "curation" / str(job.pk)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def curation_content_hash(*, job: CurationJob, operation: str) -> str:
    """The content hash of what ``operation`` derives from the job's source: the same source,
    parameters and model give the same hash, so running it again reuses the version."""
    identity = {
        "operation": operation,
        "params": job.params,
        "model": job.model.path if job.model else None,
    }
    return hashlib.sha256(
        (job.source.content_hash + json.dumps(identity, sort_keys=True)).encode()
    ).hexdigest()


def dataset_version_derive(
    *,
    job: CurationJob,
    operation: str,
    params: dict[str, Any],
    label: str,
    rows: Sequence[tuple],
    training_roles: dict[str, str],
) -> tuple[DatasetVersion, bool]:
    """A training version that ``job`` derived from its source, with ``rows`` (row, anchor,
    positive, negatives, score): the source as parent, ``params`` recorded, its health report
    made. An identical derivation returns the version made before (``created`` False)."""
    with transaction.atomic():
        version, created = _new_version(
            dataset=job.source.dataset,
            content_hash=curation_content_hash(job=job, operation=operation),
            kind=DatasetVersion.Kind.TRAINING,
            parent=job.source,
            params=params,
            source=label,
            training_count=len(rows),
            training_roles=training_roles,
        )
        if created:
            loader.load_training_rows(version, rows)
            _record_health(version)
    return version, created


def dataset_version_tokens_record(
    *, version: DatasetVersion, model_pk: int, summary: dict[str, Any]
) -> None:
    """Record a model's token-length summary in the version's stats (rows stay immutable)."""
    with transaction.atomic():
        # Lock: two token jobs on one version must not lose each other's entry.
        locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        stats = dict(locked.stats)
        stats.setdefault("tokens", {})[str(model_pk)] = summary
        locked.stats = stats
        locked.save(update_fields=["stats"])


class DatasetInUse(ValueError):
    """A dataset whose versions something still refers to; the message says what."""


def _version_uses(versions) -> list[str]:
    """What names any of ``versions`` ("2 evaluations", …): what a delete must refuse for."""
    from apps.indexes.models import IndexBuild
    from apps.runs.models import Evaluation, TrainingRun

    uses = [
        (Evaluation.objects.filter(dataset_version__in=versions).count(), "evaluation"),
        (IndexBuild.objects.filter(dataset_version__in=versions).count(), "index"),
        (TrainingRun.objects.filter(train_version__in=versions).count()
         + TrainingRun.objects.filter(eval_version__in=versions).count(), "training run"),
        (CurationJob.objects.filter(source__in=versions).count(), "curation job"),
    ]  # fmt: skip
    return [f"{n} {what}{'' if n == 1 else 's'}" for n, what in uses if n]


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset with all its versions (documents, queries, judgements, training rows)
    when no evaluation, index, training run or curation job names one of them; otherwise say
    which do (their results would point at data that is gone)."""
    listed = _version_uses(dataset.versions.all())
    if listed:
        raise DatasetInUse(
            f"{dataset.name} is used by {', '.join(listed)}; delete those first (their "
            "results name its versions)."
        )
    _delete_or_refuse(dataset, name=dataset.name)


def dataset_version_delete(*, version: DatasetVersion) -> None:
    """Delete one version (its documents, queries, judgements or training rows) that nothing
    names; versions derived from it keep their rows and lose only the lineage link. The last
    version goes with its dataset (delete the dataset)."""
    listed = _version_uses(DatasetVersion.objects.filter(pk=version.pk))
    if listed:
        raise DatasetInUse(f"{version} is used by {', '.join(listed)}; delete those first.")
    if version.dataset.versions.count() == 1:
        raise DatasetInUse(f"{version} is the dataset's only version: delete the dataset.")
    _delete_or_refuse(version, name=str(version))


def _delete_or_refuse(obj, *, name: str) -> None:
    from django.db.models import ProtectedError

    with transaction.atomic():
        try:
            obj.delete()
        except ProtectedError as exc:  # a reference added since the counts above
            raise DatasetInUse(f"{name} is still in use ({exc.args[0]})") from None
