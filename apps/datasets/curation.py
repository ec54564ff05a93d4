"""Curation jobs over a dataset version, the web's side: semantic dedup, hard-negative mining,
DSIR selection, token lengths. A request is checked against its kind's typed config
(``workers.common.configs.curation``) and against the source version and the team, recorded as
a CurationJob row and queued; the worker's task (``workers.tasks.curation``) does the work. A
dedup's review (accept: write the new version; or discard) happens here, on the user's click.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import Count
from pydantic import BaseModel, ValidationError

from apps.accounts.models import Team
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets.models import CurationJob, DatasetVersion, Document, Qrel, Query, TrainingRow
from apps.datasets.services import (
    _new_version,
    _record_health,
    curation_artifact_dir,
    curation_content_hash,
)
from apps.registry.models import EmbeddingModel
from workers.common.configs.curation import (
    CONFIGS,
    CurationConfig,
    DsirConfig,
    MiningConfig,
    SemDedupConfig,
    TokensConfig,
)

Kind = CurationJob.Kind


class CurationError(ValueError):
    pass


# --- creating jobs ------------------------------------------------------------------------


def unknown_parameters_error(*, kind: str, unknown: list[str]) -> CurationError:
    """Names what is not a parameter of ``kind`` (a path, a typo), never the value given."""
    allowed = ", ".join(CONFIGS[kind].settable()) or "none"
    return CurationError(
        f"{', '.join(unknown)}: unknown parameter{'s' if len(unknown) > 1 else ''} "
        f"for {kind} (allowed: {allowed})."
    )


def validation_problem(exc: ValidationError) -> str:
    """A config's first problem as one line that names its field."""
    item = exc.errors()[0]
    message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
    field = ".".join(str(part) for part in item.get("loc", ()))
    return f"{field}: {message}" if field else message


def nullable(annotation: Any) -> bool:
    """Whether a config field's type allows none (``float | None``)."""
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


def curation_config(*, kind: str, values: Mapping[str, Any]) -> CurationConfig:
    """``kind``'s typed config from loose values, as a form post or ``--param KEY=VALUE`` give
    them: numbers may be strings; an empty value means none where the field allows none (no
    margin, no max score) and its default otherwise. CurationError names a bad field."""
    config_class = CONFIGS.get(kind)
    if config_class is None:
        raise CurationError(f"Unknown curation kind {kind!r}.")
    settable = config_class.settable()
    unknown = sorted(str(key) for key in values if key not in settable)
    if unknown:
        raise unknown_parameters_error(kind=kind, unknown=unknown)
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = value.strip()
            if not value:
                if nullable(config_class.model_fields[key].annotation):
                    cleaned[key] = None
                continue
        cleaned[key] = value
    try:
        return config_class.model_validate(cleaned)
    except ValidationError as exc:
        raise CurationError(validation_problem(exc)) from None


def _stored_params(
    *, config: CurationConfig, source: DatasetVersion, model: EmbeddingModel | None, team: Team
) -> dict:
    """Check the config against the source version and the team; what the row records."""
    retrieval = source.kind == DatasetVersion.Kind.RETRIEVAL
    needs_model = isinstance(config, SemDedupConfig | TokensConfig) or (
        isinstance(config, MiningConfig) and config.candidates != "bm25"
    )
    if needs_model and model is None:
        raise CurationError("Choose a model.")
    if isinstance(config, SemDedupConfig):
        if retrieval and source.document_count < 2 or not retrieval and source.training_count < 2:
            raise CurationError(f"{source} has too few rows to deduplicate.")
        return config.stored()
    if isinstance(config, MiningConfig):
        if not retrieval:
            if source.training_count == 0:
                raise CurationError(f"{source} has no training rows.")
            return config.model_copy(update={"split": None}).stored()
        split = config.split or ("train" if "train" in source.qrels_counts else "")
        if split not in source.qrels_counts:
            known = ", ".join(source.splits) or "none"
            raise CurationError(f"{source} has no split {split!r} (splits: {known}).")
        return config.model_copy(update={"split": split}).stored()
    if isinstance(config, DsirConfig):
        if source.kind != DatasetVersion.Kind.TRAINING:
            raise CurationError("DSIR selects rows of a training set; choose a training version.")
        if not DatasetVersion.objects.filter(pk=config.target, dataset__team=team).exists():
            raise CurationError("Choose a target version of this team.")
        k = config.k if config.k is not None else max(1, source.training_count // 2)
        if not 1 <= k <= source.training_count - 1:
            raise CurationError(f"k must be between 1 and {source.training_count - 1}.")
        return config.model_copy(update={"k": k}).stored()
    return config.stored()


def curation_create(
    *,
    team: Team,
    source: DatasetVersion,
    kind: str,
    params: Mapping[str, Any] | CurationConfig | None = None,
    model: EmbeddingModel | None = None,
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> CurationJob:
    """Validate the request and queue the job once the transaction commits.

    ``params``: the kind's config (the API's body, a form's ``config``), or loose values as
    :func:`curation_config` reads them.
    """
    from workers.tasks.curation import curate

    if source.dataset.team_id != team.pk or (model is not None and model.team_id != team.pk):
        raise CurationError("The version and the model must belong to your team.")
    if kind not in Kind.values:
        raise CurationError(f"Unknown curation kind {kind!r}.")
    if model is not None:
        from apps.registry.services import embedding_model_require_role

        embedding_model_require_role(
            model=model, role="embedding", field="model", error=CurationError
        )
    if isinstance(params, BaseModel):
        if params.kind != kind:
            raise CurationError(f"A {params.kind} config cannot start a {kind} job.")
        config = params
    else:
        config = curation_config(kind=kind, values=params or {})
    cleaned = _stored_params(config=config, source=source, model=model, team=team)
    if isinstance(config, MiningConfig) and config.candidates == "bm25":
        model = None  # BM25 alone scores by itself; a chosen model would be misleading

    def create() -> CurationJob:
        job = CurationJob.objects.create(
            team=team, kind=kind, source=source, model=model, params=cleaned, created_by=created_by
        )
        if enqueue:
            job_enqueue(job=job, task=curate)
        return job

    return job_create_once(
        model=CurationJob,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(
            kind=kind, source=source.pk, model=model.pk if model else None, params=cleaned
        ),
        create=create,
        idempotency_key=idempotency_key,
    )


# --- review of a semantic dedup ---------------------------------------------------------------


def _copy_retrieval(*, source: DatasetVersion, target: DatasetVersion, drop: list[int]) -> None:
    """Copy documents (minus ``drop``), queries and judgements in the database itself."""
    doc, query, qrel = Document._meta.db_table, Query._meta.db_table, Qrel._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {doc} (version_id, doc_id, title, text, metadata) "
            f"SELECT %s, doc_id, title, text, metadata FROM {doc} WHERE version_id = %s "
            "ORDER BY id",
            [target.pk, source.pk],
        )
        dropped_ids = list(Document.objects.filter(pk__in=drop).values_list("doc_id", flat=True))
        for start in range(0, len(dropped_ids), 500):
            Document.objects.filter(
                version=target, doc_id__in=dropped_ids[start : start + 500]
            ).delete()
        cursor.execute(
            f"INSERT INTO {query} (version_id, query_id, text, metadata) "
            f"SELECT %s, query_id, text, metadata FROM {query} WHERE version_id = %s ORDER BY id",
            [target.pk, source.pk],
        )
        # Judged documents are never dropped, so every judgement finds its document again.
        cursor.execute(
            f"INSERT INTO {qrel} (version_id, split, query_id, document_id, score) "
            f"SELECT %s, r.split, nq.id, nd.id, r.score FROM {qrel} r "
            f"JOIN {query} oq ON oq.id = r.query_id "
            f"JOIN {query} nq ON nq.version_id = %s AND nq.query_id = oq.query_id "
            f"JOIN {doc} od ON od.id = r.document_id "
            f"JOIN {doc} nd ON nd.version_id = %s AND nd.doc_id = od.doc_id "
            "WHERE r.version_id = %s ORDER BY r.id",
            [target.pk, target.pk, target.pk, source.pk],
        )


def _copy_training(*, source: DatasetVersion, target: DatasetVersion, drop: list[int]) -> None:
    table = TrainingRow._meta.db_table
    row = connection.ops.quote_name("row")  # a keyword in SQL
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (version_id, {row}, anchor, positive, negatives, score) "
            f"SELECT %s, {row}, anchor, positive, negatives, score FROM {table} "
            f"WHERE version_id = %s ORDER BY {row}",
            [target.pk, source.pk],
        )
    for start in range(0, len(drop), 500):
        TrainingRow.objects.filter(version=target, row__in=drop[start : start + 500]).delete()


def curation_accept(*, job: CurationJob) -> DatasetVersion:
    """pending review → accepted: the dedup's version is written (or an identical one reused)."""
    if job.kind != Kind.SEMDEDUP or job.review != CurationJob.Review.PENDING:
        raise CurationError("Only a dedup waiting for review can be accepted.")
    from workers.common.store import artifact_ensure

    removed = artifact_ensure(curation_artifact_dir(job=job) / "removed.json")
    artifact = json.loads(removed.read_text(encoding="utf-8"))
    drop = artifact["keys"]
    source = job.source
    retrieval = source.kind == DatasetVersion.Kind.RETRIEVAL
    with transaction.atomic():
        locked = CurationJob.objects.select_for_update().get(pk=job.pk)
        if locked.review != CurationJob.Review.PENDING:
            raise CurationError("This dedup was already reviewed.")
        fields = {
            "kind": source.kind,
            "parent": source,
            "params": {
                "operation": "semdedup",
                "source_version": source.pk,
                "model": job.model.name,
                "removed": len(drop),
                **job.params,
            },
            "source": f"{source} semantic dedup (job {job.pk})",
        }
        if retrieval:
            fields.update(
                document_count=source.document_count - len(drop),
                query_count=source.query_count,
                qrels_counts=source.qrels_counts,
                stats={"document_words": artifact.get("document_words") or {}},
            )
        else:
            fields.update(
                training_count=source.training_count - len(drop),
                training_roles=source.training_roles,
            )
        version, created = _new_version(
            dataset=source.dataset,
            content_hash=curation_content_hash(job=job, operation="semdedup"),
            **fields,
        )
        if created:
            if retrieval:
                _copy_retrieval(source=source, target=version, drop=drop)
                counts = dict(
                    version.qrels.values_list("split").annotate(n=Count("id")).order_by("split")
                )
                version.qrels_counts = counts
                version.save(update_fields=["qrels_counts"])
            else:
                _copy_training(source=source, target=version, drop=drop)
            _record_health(version)
        CurationJob.objects.filter(pk=job.pk).update(
            review=CurationJob.Review.ACCEPTED, version=version
        )
    job.refresh_from_db()
    return version


def curation_discard(*, job: CurationJob) -> CurationJob:
    updated = CurationJob.objects.filter(pk=job.pk, review=CurationJob.Review.PENDING).update(
        review=CurationJob.Review.DISCARDED
    )
    if not updated:
        raise CurationError("Only a dedup waiting for review can be discarded.")
    job.refresh_from_db()
    return job
