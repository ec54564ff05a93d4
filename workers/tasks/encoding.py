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
) -> tuple[str, str]:
    """Cache keys of a version's documents and of a split's queries under one encoding setup.

    Everything that changes a vector is in the key, so a hit is always the right vectors; the
    same keys serve evaluations, index builds and curation.
    """
    from workers.ml.cache import embedding_key, model_fingerprint

    common = {
        "model": model_fingerprint(model.path),
        "layout": model.layout,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_length": max_seq_length,
        "data": version.content_hash,
    }
    return (
        embedding_key(kind="documents", prefix=document_prefix, **common),
        embedding_key(kind="queries", split=split, prefix=query_prefix, **common),
    )


def encoding_for(*, job, split: str | None = None) -> tuple[EncoderSpec, str, str]:
    """(EncoderSpec, document cache key, query cache key) of a job that encodes a version with
    a model as it records them (an Evaluation or an IndexBuild: model, dataset_version, split,
    max_seq_length and both prefixes): one encoding setup, one pair of cache entries."""
    from workers.ml.evaluate import EncoderSpec

    model = job.model
    document_key, query_key = embedding_keys(
        model=model,
        version=job.dataset_version,
        split=job.split if split is None else split,
        max_seq_length=job.max_seq_length,
        query_prefix=job.query_prefix,
        document_prefix=job.document_prefix,
    )
    spec = EncoderSpec(
        **model.encoder_settings(
            max_seq_length=job.max_seq_length,
            query_prefix=job.query_prefix,
            document_prefix=job.document_prefix,
        )
    )
    return spec, document_key, query_key
