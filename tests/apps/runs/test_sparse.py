"""Sparse models (SPLADE through sentence-transformers' SparseEncoder): registered as such, kept
out of everything dense, evaluated with a sparse inverted index (the same figures as the bare
library and pytrec_eval), and offered as the lexical side of a hybrid."""

from __future__ import annotations

import json

import pytest

from apps.registry.services import embedding_model_register
from apps.runs.models import Evaluation
from apps.runs.services import EvaluationError, evaluation_create
from tests.apps.runs.test_hybrid import run
from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES

pytestmark = pytest.mark.django_db


@pytest.fixture
def splade(team, tiny_sparse_path):
    return embedding_model_register(team=team, name="tiny-splade", path=str(tiny_sparse_path))


def bare_ndcg(path: str) -> dict[str, float]:
    """SparseEncoder's own encode and similarity, every document scored, pytrec_eval."""
    import pytrec_eval
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(path, device="cpu", local_files_only=True)
    docs = [(d["_id"], (d["title"] + " " + d["text"]).strip()) for d in TINY_CORPUS]
    judged = {q for q, _, _ in TINY_QRELS["test"]}
    queries = [(q["_id"], q["text"]) for q in TINY_QUERIES if q["_id"] in judged]
    d = model.encode_document([t for _, t in docs], convert_to_sparse_tensor=True)
    q = model.encode_query([t for _, t in queries], convert_to_sparse_tensor=True)
    scores = model.similarity(q, d).to_dense().numpy()
    run = {qid: {docs[j][0]: float(scores[i, j]) for j in range(len(docs)) if scores[i, j] > 0}
           for i, (qid, _) in enumerate(queries)}  # fmt: skip
    qrels: dict = {}
    for qid, doc, rel in TINY_QRELS["test"]:
        qrels.setdefault(qid, {})[doc] = rel
    out = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return {qid: v["ndcg_cut_10"] for qid, v in out.items()}


def test_a_sparse_folder_registers_as_sparse_and_is_kept_out_of_dense_work(
    team, splade, tiny_version, tiny_sparse_path
):
    from apps.indexes.services import IndexBuildError, index_build_create
    from apps.runs.training import TrainingError, training_run_preview

    vocabulary = json.loads((tiny_sparse_path / "config.json").read_text())["vocab_size"]
    assert splade.is_sparse and splade.dimension == vocabulary
    with pytest.raises(EvaluationError, match="model: tiny-splade is a sparse model"):
        evaluation_create(team=team, model=splade, dataset_version=tiny_version, split="test",
                          enqueue=False)  # fmt: skip
    with pytest.raises(IndexBuildError, match="model: tiny-splade is a sparse model"):
        index_build_create(team=team, model=splade, dataset_version=tiny_version,
                           index_type="flat", enqueue=False)  # fmt: skip
    with pytest.raises(TrainingError, match=r"sparse model \(SPLADE\): train it further with"):
        training_run_preview(team=team, base_model=splade, train_version=tiny_version)


def test_sparse_evaluation_equals_the_bare_library_and_pytrec_eval(
    splade, tiny_version, tiny_registered_model
):
    done = run("--method", "sparse", "--model", str(splade.pk), "--dataset-version",
               str(tiny_version.pk), "--sync")  # fmt: skip
    assert done["status"] == "succeeded", done
    evaluation = Evaluation.objects.get(pk=done["evaluation"])
    expected = bare_ndcg(splade.path)
    got = {r.query.query_id: r.metrics["ndcg@10"] for r in evaluation.results.all()}
    assert got.keys() == expected.keys()
    for qid, value in expected.items():
        assert got[qid] == pytest.approx(value, abs=1e-6)
    assert evaluation.timings["active_dims_per_document"] > 0
    # An embedding model is not a sparse one.
    with pytest.raises(SystemExit):
        run("--method", "sparse", "--model", str(tiny_registered_model.pk), "--dataset-version",
            str(tiny_version.pk), "--sync")  # fmt: skip


def test_a_sparse_model_is_the_lexical_side_of_a_hybrid(
    client, team, member, other_team, splade, tiny_registered_model, tiny_version,
    tiny_sparse_path,
):  # fmt: skip
    done = run("--method", "hybrid", "--model", str(tiny_registered_model.pk), "--lexical-model",
               str(splade.pk), "--dataset-version", str(tiny_version.pk), "--sync")  # fmt: skip
    assert done["status"] == "succeeded", done
    hybrid = Evaluation.objects.get(pk=done["evaluation"])
    assert hybrid.fusion["lexical_model"] == splade.pk
    assert hybrid.label == "tiny + tiny-splade (RRF)"
    # The API: another team's sparse model is missing; an embedding model is refused by name.
    from apps.accounts.services import api_token_create

    token = api_token_create(user=member, team=team, name="t")[1]
    theirs = embedding_model_register(team=other_team, name="sp", path=str(tiny_sparse_path))
    body = {"method": "hybrid", "model": tiny_registered_model.pk, "split": "test",
            "dataset_version": tiny_version.pk}  # fmt: skip
    for lexical, status, text in (
        (theirs.pk, 404, "lexical_model: no such model"),
        (tiny_registered_model.pk, 400, "not a sparse model"),
    ):
        r = client.post(
            "/api/v1/evaluations",
            {**body, "lexical_model": lexical},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert r.status_code == status and text in r.json()["error"], r.content
    # The page: the hybrid settings offer the team's sparse models; the model page says what
    # is not built.
    client.force_login(member)
    page = client.get(f"/datasets/versions/{tiny_version.pk}/").content.decode()
    assert 'name="lexical_model"' in page and "tiny-splade" in page
    model_page = client.get(f"/models/{splade.pk}/").content.decode()
    assert "sparse (SPLADE)" in model_page and "fine-tune it with the splade loss" in model_page
    assert 'id="optimize"' not in model_page
    r = client.post(f"/runs/evaluate/{tiny_version.pk}/", {"method": "sparse", "model": splade.pk,
                    "split": "test", "precision": "auto"})  # fmt: skip
    assert r.status_code == 302
    assert Evaluation.objects.filter(method="sparse", model=splade).exists()
