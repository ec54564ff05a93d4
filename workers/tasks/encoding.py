"""The encoding glue every kind that embeds a dataset version shares (evaluations, index builds,
curation): the embedding cache, its keys, and the encoder spec a job row records.

One setup gives one pair of cache entries, so an index build or a dedup reads the vectors an
evaluation already made, and the other way round. Imports no ML library at module level (the
web imports task modules to enqueue): each function imports what it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from apps.datasets.models import DatasetVersion
    from apps.registry.models import EmbeddingModel
    from workers.ml.cache import EmbeddingCache
    from workers.ml.evaluate import EncoderSpec


def embedding_cache() -> EmbeddingCache:
    from workers.ml.cache import EmbeddingCache

    return EmbeddingCache(Path(settings.ARTIFACTS_ROOT) / "embeddings")


def embedding_keys(
    *,
    model: EmbeddingModel,
    version: DatasetVersion,
    split: str,
    max_seq_length: int,
    query_prefix: str,
    document_prefix: str,
    precision: str = "fp32",
) -> tuple[str, str]:
    """Cache keys of a version's documents and of a split's queries under one encoding setup.

    Everything that changes a vector is in the key, so a hit is always the right vectors; the
    same keys serve evaluations, index builds and curation. ``precision`` is the resolved one;
    fp32 adds nothing to the key, so the entries written before precision was a setting stay
    valid.
    """
    from workers.common.store import artifact_ensure
    from workers.ml.cache import embedding_key, model_fingerprint

    artifact_ensure(model.path)  # with a bucket: fetched, so it is hashed (and loaded) here
    common = {
        "model": model_fingerprint(model.path),
        "layout": model.layout,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_length": max_seq_length,
        "data": version.content_hash,
    }
    if precision != "fp32":
        common["precision"] = precision
    if model.layout == "onnx":  # the fingerprint differs already; the key says why
        common["backend"] = model.optimization.get("backend", "onnx")
        common["quantization"] = model.optimization.get("quantization", "none")
    return (
        embedding_key(kind="documents", prefix=document_prefix, **common),
        embedding_key(kind="queries", split=split, prefix=query_prefix, **common),
    )


def precision_for(*, model: EmbeddingModel, requested: str, device: str | None = None) -> str:
    """The precision (fp32 or bf16) a job that asked for ``requested`` encodes in on this
    worker: ``auto`` is bf16 only where the device runs it natively and the model's bf16
    vectors have been shown to rank as well (``apps.runs.selectors.model_bf16_proven``)."""
    from apps.runs.selectors import model_bf16_proven
    from workers.ml.encode import pick_device
    from workers.ml.precision import resolve_precision

    if model.layout == "onnx":
        # ONNX Runtime runs the graph as exported (fp32 or int8); autocast does not reach it.
        return "fp32"
    proven = requested == "auto" and model_bf16_proven(model=model)
    return resolve_precision(requested, device=pick_device(device), quality_proven=proven)


def encoding_for(*, job, split: str | None = None) -> tuple[EncoderSpec, str, str]:
    """(EncoderSpec, document cache key, query cache key) of a job that encodes a version with
    a model as it records them (an Evaluation or an IndexBuild: model, dataset_version, split,
    max_seq_length, both prefixes and the precision asked for): one encoding setup, one pair
    of cache entries. The spec's precision is the resolved one, which the job records."""
    from workers.ml.evaluate import EncoderSpec

    model = job.model
    precision = precision_for(model=model, requested=job.precision)
    document_key, query_key = embedding_keys(
        model=model,
        version=job.dataset_version,
        split=job.split if split is None else split,
        max_seq_length=job.max_seq_length,
        query_prefix=job.query_prefix,
        document_prefix=job.document_prefix,
        precision=precision,
    )
    spec = EncoderSpec(
        **model.encoder_settings(
            max_seq_length=job.max_seq_length,
            query_prefix=job.query_prefix,
            document_prefix=job.document_prefix,
        ),
        precision=precision,
    )
    return spec, document_key, query_key
