"""The model upgrade job: the corpus under the deployment's old model and under the new one
(read from the embedding cache, or encoded, with the sharded encode when the corpus is large),
the query adapter fitted on those paired vectors (``workers.ml.adapter``), and the
compatibility report on the upgrade's judged split.

Imports no ML library at module level: the web imports :func:`prepare_upgrade` to enqueue it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.indexes.models import ModelUpgrade
    from workers.tasks.runtime import ProgressReporter


@shared_task(
    name="workers.tasks.upgrade.prepare_upgrade",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def prepare_upgrade(upgrade_id: int) -> None:
    """Run one ModelUpgrade row (encode queue). Idempotent: a row that is not pending is left
    alone. Writes ARTIFACTS_ROOT/upgrades/<id>/adapter.npy and the row's report."""
    from apps.indexes.models import ModelUpgrade
    from workers.tasks.runtime import job_claim, job_run

    upgrade = job_claim(model=ModelUpgrade, pk=upgrade_id)
    if upgrade is None:
        return
    job_run(job=upgrade, work=lambda report: upgrade_execute(upgrade=upgrade, report=report))


def upgrade_folder(upgrade: ModelUpgrade) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "upgrades" / str(upgrade.pk)


def new_model_job(upgrade: ModelUpgrade) -> SimpleNamespace:
    """The encoding setup of the new model on the old index's data, as the re-embedding index
    build will record it: one setup, so the re-embedding reads these cached vectors."""
    model = upgrade.new_model
    return SimpleNamespace(
        model=model,
        dataset_version=upgrade.old_index.dataset_version,
        split=upgrade.split,
        max_seq_length=model.max_seq_length,
        query_prefix=model.query_prefix,
        document_prefix=model.document_prefix,
        precision=upgrade.precision,
    )


def upgrade_execute(*, upgrade: ModelUpgrade, report: ProgressReporter) -> dict[str, Any]:
    """Encode (or read) both sides, fit, measure. Returns the success transition's fields."""
    import numpy as np

    from apps.datasets.selectors import evaluation_inputs
    from workers.common.atomic import atomic_write
    from workers.common.store import artifact_ensure, artifact_publish
    from workers.ml.adapter import (
        adapter_bytes,
        adapter_digest,
        adapter_latency_us,
        compatibility_report,
        fit_adapter,
        fit_quality,
    )
    from workers.ml.evaluate import embed_corpus
    from workers.tasks.encoding import embedding_cache, encoding_for
    from workers.tasks.indexing import index_encoder
    from workers.tasks.sharding import document_encoder

    old_index = upgrade.old_index
    version = old_index.dataset_version
    for model in (old_index.model, upgrade.new_model):
        artifact_ensure(model.path)  # from the bucket, when artifacts live in one
    corpus, queries, qrels = evaluation_inputs(version=version, split=upgrade.split)
    if not queries:
        raise ValueError(f"split {upgrade.split!r} has no judged queries")
    sides = {}
    timings: dict[str, float] = {}
    # The old index's own encoding setup (its precision as it was built), then the new model's.
    for side, job, precision in (
        ("old", old_index, old_index.precision_used or old_index.precision),
        ("new", new_model_job(upgrade), upgrade.precision),
    ):
        job = SimpleNamespace(**{**vars_of(job), "precision": precision})
        spec, document_key, query_key = encoding_for(job=job, split=upgrade.split)
        docs, query_vectors, took, _ = embed_corpus(
            model=spec,
            corpus=corpus,
            queries=queries,
            on_progress=report,
            cache=embedding_cache(),
            document_key=document_key,
            query_key=query_key,
            encode_documents=document_encoder(spec=spec, check=report.check),
        )
        sides[side] = (np.asarray(docs, dtype=np.float32), np.asarray(query_vectors), spec)
        timings.update({f"{side}_{k}": v for k, v in took.items()})
        report.check()
    old_docs, old_queries, old_spec = sides["old"]
    new_docs, new_queries, new_spec = sides["new"]
    report("fitting adapter", 0, 0)
    started = time.perf_counter()
    matrix = fit_adapter(new_docs, old_docs, kind=upgrade.adapter_kind)
    timings["fit_s"] = time.perf_counter() - started
    report("measuring", 0, 0)
    doc_ids = [doc_id for doc_id, _, _ in corpus]
    query_ids = [query_id for query_id, _ in queries]
    result = compatibility_report(
        old_docs=old_docs,
        new_docs=new_docs,
        old_queries=old_queries,
        new_queries=new_queries,
        matrix=matrix,
        doc_ids=doc_ids,
        query_ids=query_ids,
        qrels=qrels,
        normalize=bool(old_index.model.normalize),
    )
    result["fit"] = fit_quality(new_docs, old_docs, matrix)
    result["adapter_us_per_query"] = adapter_latency_us(matrix, new_queries)
    result["adapter_shape"] = list(matrix.shape)
    result["timings"] = timings
    report.check()
    folder = upgrade_folder(upgrade)
    shutil.rmtree(folder, ignore_errors=True)  # a retried job starts clean
    folder.mkdir(parents=True, exist_ok=True)
    data = adapter_bytes(matrix)
    path = folder / "adapter.npy"
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    # With a bucket: whole there before the row names it (every search replica fetches it).
    report("uploading", 0, 0)
    artifact_publish(folder)
    # The new model's query encoder, as the search process loads one for an index; its
    # dimension is the new model's (the adapter maps it into the index's space).
    encoder = index_encoder(build=new_model_build(upgrade), precision=new_spec.precision)
    return {
        "report": result,
        "adapter_path": str(path),
        "adapter_sha256": adapter_digest(data),
        "adapter_encoder": encoder,
        "precision_used": new_spec.precision,
        "stage": "done",
    }


def vars_of(job) -> dict[str, Any]:
    """The fields ``encoding_for`` reads, from a job row or a namespace."""
    return {
        k: getattr(job, k)
        for k in (
            "model",
            "dataset_version",
            "split",
            "max_seq_length",
            "query_prefix",
            "document_prefix",
            "precision",
        )  # fmt: skip
    }


def new_model_build(upgrade: ModelUpgrade) -> SimpleNamespace:
    """What ``index_encoder`` reads of a build: the new model at full dimension (the index's
    truncation or PCA applies after the adapter, in the index's own space)."""
    model = upgrade.new_model
    return SimpleNamespace(
        model=model, spec={}, max_seq_length=model.max_seq_length, query_prefix=model.query_prefix
    )
