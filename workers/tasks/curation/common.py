"""What the curation kinds share on the worker: reading a version's rows, loading and running
the encoder (normalised vectors, progress under a stage), the document vectors through the
embedding cache that evaluations and index builds share (``workers.tasks.encoding``), trimmed
texts and histograms for the result pages.

Imports no ML library at module level; each function imports what it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.datasets.models import CurationJob, DatasetVersion
from apps.registry.models import EmbeddingModel
from workers.tasks.encoding import embedding_cache, embedding_keys, precision_for
from workers.tasks.runtime import ProgressReporter

TEXT_CHARS = 400  # a text shown on a result page is cut to this


def documents(version: DatasetVersion) -> list[tuple[int, str, str, str]]:
    """(pk, doc_id, title, text) of every document, in a stable order."""
    return list(version.documents.order_by("pk").values_list("pk", "doc_id", "title", "text"))


def job_precision(job: CurationJob, config: Any) -> str:
    """The precision (fp32 or bf16) this job's encodes run in on this worker."""
    return precision_for(model=job.model, requested=getattr(config, "precision", "fp32"))


def encoder_for(model: EmbeddingModel, device: str | None = None) -> Any:
    """The model's encoder; curation always compares normalised vectors (cosine)."""
    from workers.ml.evaluate import EncoderSpec

    return EncoderSpec(**model.encoder_settings(normalize=True), device=device).load()


def encode(
    encoder: Any,
    texts: list[str],
    *,
    model: EmbeddingModel,
    stage: str,
    report: ProgressReporter,
    precision: str,
    prefix: str = "",
) -> Any:
    """Normalised vectors of ``prefix + text`` in ``precision`` (a resolved one), progress
    reported under ``stage``; a large set is encoded in shards by every worker on the encode
    queue (``workers.tasks.sharding``), as an evaluation's corpus is."""
    from workers.ml.evaluate import EncoderSpec
    from workers.tasks.sharding import document_encoder

    spec = EncoderSpec(**model.encoder_settings(normalize=True), precision=precision)
    return document_encoder(spec=spec, check=report.check)(
        encoder, [prefix + t for t in texts], 32, lambda done, total: report(stage, done, total)
    )


def free_encoder(device: str) -> None:
    from workers.ml.encode import free_memory

    free_memory(device)


def _document_cache_key(job: CurationJob, precision: str) -> str:
    """The evaluations' embedding-cache key for the source's documents, when this job encodes
    them exactly as an evaluation does (same model, max length, prefix, precision, normalised
    vectors), so neither re-encodes a corpus the other already did. Empty when they would
    differ."""
    model, source = job.model, job.source
    if model is None or not model.normalize or source.kind != DatasetVersion.Kind.RETRIEVAL:
        return ""
    key, _ = embedding_keys(
        model=model,
        version=source,
        split="",
        max_seq_length=model.max_seq_length,
        query_prefix=model.query_prefix,
        document_prefix=model.document_prefix,
        precision=precision,
    )
    return key


def document_vectors(
    job: CurationJob, *, ids: list[str], precision: str, encode: Callable[[], Any]
) -> Any:
    """The source's document vectors in ``precision`` from the embedding cache, else
    ``encode()`` them and cache them for the evaluations and index builds that follow."""
    import numpy as np

    key = _document_cache_key(job, precision)
    hit = embedding_cache().get(key) if key else None
    if hit is not None and hit[1] == ids:
        return np.asarray(hit[0])
    vectors = encode()
    if key:
        embedding_cache().put(key, vectors, ids, {"kind": "documents"})
    return vectors


def trim(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def histogram(
    values: Any, *, bins: int = 30, lo: float | None = None, hi: float | None = None
) -> dict[str, list]:
    """Bin edges and counts, as the result pages chart them."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"edges": [], "counts": []}
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-6
    values = np.clip(values, lo, hi)  # float noise (a cosine of 1.0000001) stays in the chart
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}
