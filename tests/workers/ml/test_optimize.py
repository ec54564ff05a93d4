"""Optimized (ONNX Runtime) variants: exported without optimum, loaded by every encode path as
any model folder is, pooling and normalisation the parent's, vectors within a set cosine of
the parent's, and a fingerprint of their own."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.support.tiny_model import DEFAULT_SENTENCES


@pytest.fixture(scope="module")
def variants(tiny_model_path, tmp_path_factory):
    from workers.ml.encode import load_encoder
    from workers.ml.optimize import optimize_model

    parent = load_encoder(path=str(tiny_model_path), layout="sentence-transformers",
                          pooling="mean", normalize=True, max_seq_length=64,
                          device="cpu")  # fmt: skip
    out = {}
    for quantize in ("none", "int8"):
        folder = tmp_path_factory.mktemp(f"variant-{quantize}") / "v"
        out[quantize] = (folder, optimize_model(encoder=parent, out_dir=folder,
                                                quantize=quantize, max_seq_length=64))  # fmt: skip
    return parent, out


def test_fp32_and_int8_variants_match_the_parent(variants):
    from workers.ml.encode import encode_texts, load_encoder

    parent, out = variants
    texts = DEFAULT_SENTENCES + ["  odd   spacing ", "x", "numbers 3.14 and 2,718"]
    reference = encode_texts(encoder=parent, texts=texts, normalize=True, batch_size=4)
    for quantize, floor in (("none", 0.99999), ("int8", 0.98)):
        folder, info = out[quantize]
        assert info["quantization"] == quantize and info["file"].endswith(".onnx")
        assert info["cosine_min"] >= floor and info["input_names"][:2] == [
            "input_ids",
            "attention_mask",
        ]
        assert not list(folder.glob("*.safetensors"))  # the graph, not the torch weights
        # Every encode path loads it through load_encoder, whatever the pooling arguments say:
        # the parent's Pooling and Normalize modules are in the folder.
        encoder = load_encoder(path=str(folder), layout="onnx", pooling="cls", normalize=False,
                               max_seq_length=64)  # fmt: skip
        assert [type(m).__name__ for m in encoder][1:] == [type(m).__name__ for m in parent][1:]
        vectors = encode_texts(encoder=encoder, texts=texts, normalize=True, batch_size=3)
        cos = (vectors * reference).sum(axis=1)
        assert cos.min() >= floor, (quantize, cos.min())
        assert np.allclose((vectors**2).sum(axis=1), 1, atol=1e-5)
    fp32_graph = out["none"][0] / "model.onnx"
    int8_graph = out["int8"][0] / "model_int8.onnx"
    assert int8_graph.stat().st_size < fp32_graph.stat().st_size


def test_a_variant_has_its_own_fingerprint_and_a_plain_folder_keeps_its_own(
    variants, tmp_path, tiny_model_path
):
    from workers.ml.cache import model_fingerprint

    folder = tmp_path / "copy"
    shutil.copytree(variants[1]["int8"][0], folder)
    before = model_fingerprint(str(folder))
    graph = folder / "model_int8.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")  # a changed graph is another model
    assert model_fingerprint(str(folder)) != before
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_path, plain)
    fingerprint = model_fingerprint(str(plain))
    (plain / "onnx").mkdir()
    (plain / "onnx" / "model.onnx").write_bytes(b"published beside the weights")
    assert model_fingerprint(str(plain)) == fingerprint  # indexes built before stay valid


def test_a_folder_naming_other_code_is_refused(variants, tmp_path):
    from workers.ml.optimize import load_onnx_encoder

    folder = tmp_path / "tampered"
    shutil.copytree(variants[1]["none"][0], folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "os.system"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="not an ONNX variant folder"):
        load_onnx_encoder(str(folder), max_seq_length=64)


def test_only_a_transformer_exports(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    from workers.ml.optimize import optimize_model

    tokenizer = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    static = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=4)])
    with pytest.raises(ValueError, match="only a transformer model"):
        optimize_model(encoder=static, out_dir=tmp_path / "x", quantize="int8", max_seq_length=8)
