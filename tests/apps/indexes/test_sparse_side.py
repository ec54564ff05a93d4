"""An index's sparse side (a SPLADE model's vectors of its documents) served by a real search
process: mode sparse answers as the bare SparseEncoder does, hybrid fuses dense with it when the
deployment names it, filters apply, and every bad choice is refused naming the field."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.apps.indexes.conftest import META_CORPUS, build_sync

pytestmark = pytest.mark.django_db

QUERY = "red planet mars"


@pytest.fixture
def splade(team, tiny_sparse_path):
    from apps.registry.services import embedding_model_register

    return embedding_model_register(team=team, name="tiny-splade", path=str(tiny_sparse_path))


def bare_sparse(path: str, query: str, allowed=None) -> list[tuple[str, float]]:
    """SparseEncoder's own encode and similarity over the documents (those ``allowed``), every
    document sharing a term, best first."""
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(path, device="cpu", local_files_only=True)
    docs = [(d["_id"], (d["title"] + " " + d["text"]).strip()) for d in META_CORPUS]
    docs = [(i, t) for i, t in docs if allowed is None or i in allowed]
    d = model.encode_document([t for _, t in docs], convert_to_sparse_tensor=True)
    q = model.encode_query([query], convert_to_sparse_tensor=True)
    scores = model.similarity(q, d).to_dense().numpy()[0]
    hits = [(docs[j][0], float(scores[j])) for j in range(len(docs)) if scores[j] > 0]
    return sorted(hits, key=lambda h: (-h[1], [i for i, _ in docs].index(h[0])))


def _token(user, team):
    from apps.accounts.services import api_token_create

    return api_token_create(user=user, team=team, name="t")[1]


def test_mode_sparse_and_hybrid_with_the_sparse_side_answer_as_the_bare_library(
    client, member, team, tiny_registered_model, meta_version, splade, serving,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.models import Deployment
    from apps.indexes.services import deployment_deploy
    from apps.registry.services import ModelInUse, embedding_model_delete
    from workers.ml.fusion import rrf

    build = build_sync(team=team, model=tiny_registered_model, version=meta_version,
                       params={"sparse_model": splade.pk})  # fmt: skip
    assert build.metrics["sparse_bytes"] > 0 and build.metrics["sparse_model"] == "tiny-splade"
    assert build.params == {"sparse_model": splade.pk}
    assert "sparse_model" not in build.spec  # not a faiss setting
    with django_capture_on_commit_callbacks(execute=True):
        d = deployment_deploy(team=team, name="sp", index=build)
    # The index has no BM25 index, so hybrid fuses with its sparse side from the start.
    assert d.fusion["lexical"] == "sparse"
    health = serving.wait_serving(d.serving_key, build.pk)["deployments"][d.serving_key]
    assert health["sparse"] == "tiny-splade"
    token = _token(member, team)

    def search(**body):
        r = client.post(reverse("api:search", kwargs={"name": "sp"}),
                        {"query": QUERY, "k": 8, **body}, content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
        assert r.status_code == 200, r.content
        return r.json()

    sparse = search(mode="sparse")
    assert sparse["timings"]["sparse_ms"] > 0 and sparse["timings"].get("bm25_ms") is None
    got = [(h["id"], h["score"]) for h in sparse["results"][0]["hits"]]
    expected = bare_sparse(splade.path, QUERY)
    assert expected and [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-5)
    # Filters apply to the sparse side: the bare library over the selected documents.
    english = {r["_id"] for r in META_CORPUS if r["metadata"]["lang"] == "en"}
    filtered = search(mode="sparse", filters={"lang": "en"})
    assert [h["id"] for h in filtered["results"][0]["hits"]] == [
        i for i, _ in bare_sparse(splade.path, QUERY, allowed=english)
    ]
    # Hybrid: RRF of the dense and sparse lists, as a hybrid evaluation fuses them.
    dense = search(mode="dense")
    hybrid = search(mode="hybrid")
    assert hybrid["timings"]["sparse_ms"] > 0 and hybrid["timings"]["encode_ms"] > 0

    def as_run(answer):
        return {"q": {h["id"]: h["score"] for h in answer["results"][0]["hits"]}}

    fused = rrf([as_run(dense), as_run(sparse)], k=60, top_k=8)["q"]
    assert [h["id"] for h in hybrid["results"][0]["hits"]] == list(fused)
    assert [h["score"] for h in hybrid["results"][0]["hits"]] == pytest.approx(
        list(fused.values()), abs=1e-6
    )
    # No BM25 index: mode bm25 is refused, naming the mode and what to do.
    r = client.post(reverse("api:search", kwargs={"name": "sp"}),
                    {"query": QUERY, "mode": "bm25"}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.status_code == 400 and "mode: bm25 needs a BM25 index" in r.json()["error"]
    # The console times the sparse side.
    client.force_login(member)
    asked = {"d": "sp", "q": QUERY, "k": 3, "mode": "sparse"}
    html = client.get(reverse("indexes:console"), asked, HTTP_HX_REQUEST="true",
                      HTTP_HX_TARGET="results").content.decode()  # fmt: skip
    assert "sparse-ms" in html and html.count("<li data-doc=") == 3
    page = client.get(reverse("indexes:deployment", args=["sp"])).content.decode()
    assert "tiny-splade" in page and 'name="lexical"' in page
    # A sparse model an index uses cannot be deleted; the server path never shows.
    with pytest.raises(ModelInUse, match="sparse side"):
        embedding_model_delete(model=splade)
    assert splade.path not in json.dumps(sparse) and Deployment.objects.filter(name="sp").exists()


def test_bad_sparse_choices_are_refused_naming_the_field(
    client, member, team, other_team, tiny_registered_model, tiny_version, tiny_sparse_path,
    splade, serving, django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.services import IndexBuildError, deployment_deploy, index_build_create
    from apps.registry.services import embedding_model_register
    from workers.serving.server import Refused, load_sparse_for

    theirs = embedding_model_register(team=other_team, name="s", path=str(tiny_sparse_path))
    for model_id, text in (
        (theirs.pk, f"sparse_model: no model #{theirs.pk} in your team"),
        (tiny_registered_model.pk, "sparse_model: tiny is an embedding model"),
    ):
        with pytest.raises(IndexBuildError, match=text):
            index_build_create(team=team, model=tiny_registered_model, dataset_version=tiny_version,
                               index_type="flat", params={"sparse_model": model_id},
                               enqueue=False)  # fmt: skip
    token = _token(member, team)
    body = {"model": tiny_registered_model.pk, "dataset_version": tiny_version.pk, "type": "flat"}
    r = client.post(reverse("api:index_create"), {**body, "params": {"sparse_model": theirs.pk}},
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.status_code == 404 and "params.sparse_model" in r.json()["error"]
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "sparse_model" in schema["IndexParams"]["properties"]
    assert "sparse" in json.dumps(schema["SearchIn"]["properties"]["mode"])
    assert "lexical" in schema["DeploymentFusion"]["properties"]
    # An index with BM25 alone: fusing with a sparse side it lacks is refused; so is mode sparse.
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                       params={"bm25": True})  # fmt: skip
    with pytest.raises(IndexBuildError, match="fusion.lexical: index #.* has no sparse side"):
        deployment_deploy(team=team, name="dense", index=build, fusion={"lexical": "sparse"})
    with django_capture_on_commit_callbacks(execute=True):
        d = deployment_deploy(team=team, name="dense", index=build)
    serving.wait_serving(d.serving_key, build.pk)
    r = client.post(reverse("api:search", kwargs={"name": "dense"}),
                    {"query": QUERY, "mode": "sparse"}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.status_code == 400 and "mode: sparse needs a sparse side" in r.json()["error"]
    # The search process refuses a sparse side whose model's files changed since the build.
    with pytest.raises(Refused, match="the sparse model tiny-splade changed"):
        load_sparse_for({"path": splade.path, "fingerprint": "stale", "model_name": "tiny-splade"})
