"""Loading encoders and encoding text in chunks, so long encodes report progress and can stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_encoder(
    *,
    path: str,
    layout: str,
    pooling: str,
    normalize: bool,
    max_seq_length: int,
    device: str | None = None,
) -> SentenceTransformer:
    """A SentenceTransformer for a local folder, never touching a hub."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    device = pick_device(device)
    if layout == "sentence-transformers":
        encoder = SentenceTransformer(path, device=device, local_files_only=True)
    else:
        transformer = models.Transformer(
            path,
            max_seq_length=max_seq_length,
            model_args={"local_files_only": True},
            tokenizer_args={"local_files_only": True},
        )
        modules = [
            transformer,
            models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling),
        ]
        if normalize:
            modules.append(models.Normalize())
        encoder = SentenceTransformer(modules=modules, device=device)
    encoder.max_seq_length = max_seq_length
    return encoder


def document_text(title: str, text: str) -> str:
    """BEIR's convention (and the reference figures'): title, a space, then the text."""
    return (title + " " + text).strip()


def encode_texts(
    *,
    encoder: SentenceTransformer,
    texts: list[str],
    normalize: bool,
    batch_size: int = 32,
    chunk_size: int = 128,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Encode ``texts`` in order, reporting ``on_progress(done, total)`` after each chunk.

    Texts are sorted by length once, globally, so every chunk holds texts of similar length and
    padding stays what one big ``encode`` call would give; the callback may raise to cancel.
    """
    total = len(texts)
    dim = encoder.get_embedding_dimension()
    out = np.empty((total, dim), dtype=np.float32)
    if total == 0:
        return out
    order = np.argsort([-len(t) for t in texts], kind="stable")
    done = 0
    if on_progress:
        on_progress(0, total)
    for start in range(0, total, chunk_size):
        idx = order[start : start + chunk_size]
        vectors = encoder.encode(
            [texts[i] for i in idx],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=normalize,
            show_progress_bar=False,
        )
        out[idx] = vectors.astype(np.float32, copy=False)
        done += len(idx)
        if on_progress:
            on_progress(done, total)
    return out


def free_memory(device: str) -> None:
    """Give GPU memory back at once rather than at the next GC; the caller drops its model first."""
    import gc

    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
