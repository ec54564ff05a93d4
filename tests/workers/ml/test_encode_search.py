"""The tiny model's tokenizer, encoder loading, chunked encoding and exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.tiny_model import DEFAULT_SENTENCES, build_tiny_model, raw_folder
from workers.ml.encode import document_text, encode_texts, load_encoder
from workers.ml.search import exact_search


def st_encoder(path: Path):
    return load_encoder(
        path=str(path),
        layout="sentence-transformers",
        pooling="mean",
        normalize=True,
        max_seq_length=64,
        device="cpu",
    )


def test_tiny_model_tokenizer_knows_its_words(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = build_tiny_model(tmp_path / "m")
    assert folder == tmp_path / "m"
    model = SentenceTransformer(str(folder), device="cpu")
    tokenizer = model.tokenizer
    for sentence in DEFAULT_SENTENCES[:5]:
        tokens = tokenizer.tokenize(sentence)
        assert tokens and tokenizer.unk_token not in tokens, (sentence, tokens)
    ids = tokenizer(DEFAULT_SENTENCES[0])["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert len(set(ids)) > 5  # real pieces, not one id repeated
    vectors = model.encode(DEFAULT_SENTENCES[:3])
    assert vectors.shape == (3, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)  # the Normalize module
    assert not np.allclose(vectors[0], vectors[1])


def test_document_text_is_beir_convention() -> None:
    assert document_text("Title", "Body text.") == "Title Body text."
    assert document_text("", "Body") == "Body"


def test_plain_transformers_layout_encodes_like_the_sentence_transformers_folder(
    tiny_model_path: Path,
) -> None:
    texts = ["cats and dogs", "coffee beans", "the red planet mars"]
    plain = load_encoder(
        path=str(raw_folder(tiny_model_path)),
        layout="transformers",
        pooling="mean",
        normalize=True,
        max_seq_length=32,
        device="cpu",
    )
    assert plain.max_seq_length == 32 and plain.get_embedding_dimension() == 64
    expected = st_encoder(tiny_model_path).encode(texts, normalize_embeddings=True)
    got = encode_texts(encoder=plain, texts=texts, normalize=True)
    assert np.allclose(got, expected, atol=1e-5)  # same weights, same pooling


def test_load_encoder_refuses_a_missing_folder_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_encoder(
            path=str(tmp_path / "nope"),
            layout="sentence-transformers",
            pooling="mean",
            normalize=True,
            max_seq_length=64,
        )
    with pytest.raises(ValueError, match="unknown model layout"):
        load_encoder(
            path=str(tmp_path), layout="openvino", pooling="mean", normalize=True,
            max_seq_length=64,
        )  # fmt: skip
    # An ONNX variant's folder is refused by name when it is not one.
    with pytest.raises(FileNotFoundError, match="modules.json"):
        load_encoder(
            path=str(tmp_path), layout="onnx", pooling="mean", normalize=True, max_seq_length=64
        )


def test_encode_keeps_order_reports_progress_and_can_be_cancelled(tiny_model_path: Path) -> None:
    encoder = st_encoder(tiny_model_path)
    assert encoder.max_seq_length == 64
    texts = [("cats and dogs " * (i % 7 + 1)).strip() + f" {i}" for i in range(50)]
    calls: list[tuple[int, int]] = []
    vectors = encode_texts(
        encoder=encoder,
        texts=texts,
        normalize=True,
        batch_size=8,
        chunk_size=16,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 50), (16, 50), (32, 50), (48, 50), (50, 50)]
    assert vectors.dtype == np.float32 and vectors.shape == (50, 64)
    direct = encoder.encode(texts, normalize_embeddings=True)
    assert np.allclose(vectors, direct, atol=1e-5)  # same vectors, same order

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done >= 16:
            raise Stop

    with pytest.raises(Stop):
        encode_texts(
            encoder=encoder,
            texts=texts,
            normalize=True,
            batch_size=8,
            chunk_size=16,
            on_progress=stop,
        )


def test_encode_chunks_hold_whole_batches_and_empty_input(tiny_model_path: Path) -> None:
    encoder = st_encoder(tiny_model_path)
    calls: list[tuple[int, int]] = []
    encode_texts(
        encoder=encoder,
        texts=["tea"] * 70,
        normalize=True,
        batch_size=32,
        chunk_size=40,  # rounded down to 32: no short batch in the middle of the encode
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 70), (32, 70), (64, 70), (70, 70)]
    empty = encode_texts(encoder=encoder, texts=[], normalize=True)
    assert empty.shape == (0, 64) and empty.dtype == np.float32


def test_exact_search_is_the_true_top_k() -> None:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 32)).astype(np.float32)
    queries = rng.normal(size=(7, 32)).astype(np.float32)
    scores, idx = exact_search(doc_embeddings=docs, query_embeddings=queries, k=10)
    dots = queries @ docs.T
    expected = np.argsort(-dots, axis=1)[:, :10]
    assert (idx == expected).all()
    assert np.allclose(scores, np.take_along_axis(dots, expected, 1), atol=1e-4)
    few_scores, few = exact_search(doc_embeddings=docs[:3], query_embeddings=queries, k=10)
    assert few.shape == few_scores.shape == (7, 3)  # k clipped to the corpus
    assert sorted(few[0]) == [0, 1, 2]
    none_scores, none = exact_search(doc_embeddings=docs[:0], query_embeddings=queries, k=10)
    assert none.shape == none_scores.shape == (7, 0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        exact_search(doc_embeddings=docs, query_embeddings=queries[:, :16], k=3)
