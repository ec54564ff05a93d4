"""Static distillation of an embedding model with Model2Vec: every token of the model's
vocabulary (and optionally a domain's words) is embedded once by the model, the table reduced by
PCA and re-weighted (Zipf/SIF), and the result saved as a sentence-transformers folder holding
one ``StaticEmbedding`` module. Encoding is then a table lookup and a mean: orders of magnitude
faster than the transformer, at a loss of quality that must be measured, never assumed.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

WORD = re.compile(r"[a-z][a-z\-']{2,}")


def vocabulary_from_texts(texts: Iterable[str], *, size: int) -> list[str]:
    """The ``size`` most frequent lowercase words of ``texts`` (3+ letters), most frequent
    first: a domain's words for the distillation to embed whole."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(WORD.findall(text.lower()))
    return [word for word, _ in counts.most_common(size)]


def distill_static(
    *,
    source_path: str,
    out_dir: Path,
    pca_dims: int | None,
    vocabulary: list[str] | None = None,
    device: str | None = None,
) -> dict:
    """Distill the model folder ``source_path`` into ``out_dir`` (a sentence-transformers
    folder). Returns {dimension, vocabulary_size, seconds}."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    from workers.ml.encode import pick_device

    started = time.perf_counter()
    static = StaticEmbedding.from_distillation(
        source_path, vocabulary=vocabulary or None, device=pick_device(device), pca_dims=pca_dims
    )
    model = SentenceTransformer(modules=[static], device="cpu")
    model.save(str(out_dir))
    return {
        "dimension": int(model.get_embedding_dimension()),
        "vocabulary_size": int(static.embedding.weight.shape[0]),
        "seconds": round(time.perf_counter() - started, 3),
    }


def encode_speed(*, encoder, texts: list[str], batch_size: int = 32) -> float:
    """Documents per second of ``encoder`` over ``texts`` (after one warm-up batch)."""
    from workers.ml.encode import encode_texts

    encode_texts(encoder=encoder, texts=texts[:batch_size], normalize=True, batch_size=batch_size)
    started = time.perf_counter()
    encode_texts(encoder=encoder, texts=texts, normalize=True, batch_size=batch_size)
    return len(texts) / max(time.perf_counter() - started, 1e-9)
