"""Loading encoders and encoding text in chunks, so long encodes report progress and can stop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.ml.precision import autocast

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def pick_device(device: str | None = None) -> str:
    """The caller's device, else the GPU when there is one."""
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
    """A SentenceTransformer for a local folder, never touching a hub.

    ``pooling`` and ``normalize`` only apply to the plain transformers layout: a
    sentence-transformers folder brings its own Pooling and Normalize modules, and so does an
    ``onnx`` variant folder (``workers.ml.optimize``), whose modules are its parent's.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    from workers.common.store import artifact_ensure

    artifact_ensure(path)  # with a bucket: fetched first, if not on this host
    if not Path(path).is_dir():
        # Otherwise sentence-transformers would take the path for a hub id and fail obscurely.
        raise FileNotFoundError(f"{path}: no such model folder")
    if layout == "onnx":
        # An optimized variant runs on ONNX Runtime's CPU provider whatever the worker has.
        from workers.ml.optimize import load_onnx_encoder

        encoder = load_onnx_encoder(path, max_seq_length=max_seq_length)
        encoder.default_prompt_name = None
        return encoder
    device = pick_device(device)
    if layout == "sentence-transformers":
        encoder = SentenceTransformer(path, device=device, local_files_only=True)
    elif layout == "transformers":
        offline = {"local_files_only": True}
        transformer = models.Transformer(
            path,
            max_seq_length=max_seq_length,
            model_kwargs=offline,
            processor_kwargs=dict(offline),
            config_kwargs=dict(offline),
        )
        modules = [
            transformer,
            models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling),
        ]
        if normalize:
            modules.append(models.Normalize())
        encoder = SentenceTransformer(modules=modules, device=device)
    else:
        raise ValueError(f"unknown model layout {layout!r}")
    try:
        encoder.max_seq_length = max_seq_length
    except AttributeError:
        pass  # a static (Model2Vec) model looks tokens up: it has no length to set
    # Prefixes are applied explicitly by the caller (recorded per evaluation); a folder's
    # default prompt would otherwise be prepended to documents and queries alike.
    encoder.default_prompt_name = None
    return encoder


def document_text(title: str, text: str) -> str:
    """BEIR's convention (and the reference figures'): title, a space, then the text."""
    return (title + " " + text).strip()


CHUNK_SIZE = 256


def chunk_length(batch_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Texts per ``encode`` call: whole batches (a chunk ending mid-batch would add a short
    batch per chunk)."""
    return max(batch_size, chunk_size // batch_size * batch_size)


def length_order(texts: list[str]) -> np.ndarray:
    """The order texts are encoded in: longest first (sentence-transformers' own key, character
    length), stable, so that texts already in this order keep it."""
    return np.argsort([-len(t) for t in texts], kind="stable")


def encode_batch(
    *, encoder: SentenceTransformer, texts: list[str], batch_size: int, normalize: bool,
    precision: str = "fp32",
) -> np.ndarray:  # fmt: skip
    """One ``encode`` call in ``precision`` (a resolved one), as float32 (n, dim): the step both
    the corpus encode and the search process's query encoder take."""
    with autocast(precision, str(encoder.device)):
        vectors = encoder.encode(
            texts,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=normalize,
            show_progress_bar=False,
        )
    # Tensors out, cast here: under autocast the pooled vectors may come out in bf16, which
    # numpy cannot hold.
    return vectors.float().cpu().numpy()


def encode_texts(
    *,
    encoder: SentenceTransformer,
    texts: list[str],
    normalize: bool,
    batch_size: int = 32,
    chunk_size: int = CHUNK_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Encode ``texts`` in order as float32 (n, dim), calling ``on_progress(done, total)``;
    ``precision`` (a resolved one, ``workers.ml.precision``) is what the forward passes run in.

    Texts are sorted by length once, globally, so every chunk holds texts of similar length and
    batches pad exactly as one big ``encode`` call would; an exception raised by the callback
    (a cancel) propagates and stops the encode between chunks.
    """
    total = len(texts)
    dim = encoder.get_embedding_dimension()
    if total == 0:
        return np.empty((0, dim or 0), dtype=np.float32)
    chunk = chunk_length(batch_size, chunk_size)
    order = length_order(texts)
    out: np.ndarray | None = None
    done = 0
    if on_progress:
        on_progress(0, total)
    for start in range(0, total, chunk):
        idx = order[start : start + chunk]
        vectors = encode_batch(encoder=encoder, texts=[texts[i] for i in idx],
                               batch_size=batch_size, normalize=normalize,
                               precision=precision)  # fmt: skip
        if out is None:
            # Sized from the first output: some models report no dimension up front.
            out = np.empty((total, vectors.shape[1]), dtype=np.float32)
        out[idx] = vectors
        done += len(idx)
        if on_progress:
            on_progress(done, total)
    assert out is not None
    return out


def free_memory(device: str) -> None:
    """Give GPU memory back at once rather than at the next GC; the caller drops its model first."""
    import gc

    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
