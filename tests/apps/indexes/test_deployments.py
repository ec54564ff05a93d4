"""Deployments against a real search process: deploy, swap under load, the encoder guard, the
console and the REST search API."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.urls import reverse

from tests.apps.indexes.conftest import LANGS, build_sync

pytestmark = pytest.mark.django_db


def _token(user, team, name="t"):
    from apps.accounts.services import api_token_create

    return api_token_create(user=user, team=team, name=name)[1]


def _deploy(*, team, name, build, user=None, capture):
    from apps.indexes.services import deployment_deploy

    with capture(execute=True):
        return deployment_deploy(team=team, name=name, index=build, user=user)


def test_deploy_swap_undeploy_are_logged_and_published(team, member, tiny_registered_model,
                                                       tiny_version, serving, tmp_path,
                                                       django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    from apps.indexes.models import DeploymentEvent
    from apps.indexes.services import IndexBuildError, deployment_undeploy
    from tests.support.search import start_search_process, stop_search_process

    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    hnsw = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                      index_type="hnsw")  # fmt: skip
    capture = django_capture_on_commit_callbacks
    d = _deploy(team=team, name="prod", build=flat, user=member, capture=capture)
    manifest = json.loads(serving.manifest.read_text())["deployments"]
    assert manifest[d.serving_key]["index_id"] == flat.pk
    serving.wait_serving(d.serving_key, flat.pk)
    # A search process started now (a restart, another replica) serves it from the manifest.
    replica = start_search_process(tmp_path, manifest=serving.manifest)
    try:
        replica.wait_serving(d.serving_key, flat.pk)
    finally:
        stop_search_process(replica)
    with pytest.raises(IndexBuildError, match="already serves"):
        _deploy(team=team, name="prod", build=flat, capture=capture)
    with pytest.raises(IndexBuildError, match="name"):
        _deploy(team=team, name="no spaces please", build=flat, capture=capture)
    d = _deploy(team=team, name="prod", build=hnsw, user=member, capture=capture)
    health = serving.wait_serving(d.serving_key, hnsw.pk)
    assert health["deployments"][d.serving_key]["mmap"] is True  # faiss maps HNSW's vectors
    with capture(execute=True):
        deployment_undeploy(deployment=d, user=member)
    assert json.loads(serving.manifest.read_text())["deployments"] == {}
    events = list(DeploymentEvent.objects.filter(team=team).order_by("at", "pk"))
    assert [(e.action, e.from_index_id, e.to_index_id) for e in events] == [
        ("deploy", None, flat.pk),
        ("swap", flat.pk, hnsw.pk),
        ("undeploy", hnsw.pk, None),
    ]
    assert events[0].user == member
    # The index a deployment served stays, and so does its history.
    assert DeploymentEvent.objects.filter(name="prod").count() == 3


@pytest.mark.django_db(transaction=True)  # the client threads need committed rows
def test_swap_under_concurrent_queries_loses_none(team, owner, tiny_registered_model,
                                                  tiny_version, serving,
                                                  django_capture_on_commit_callbacks):  # fmt: skip
    """Eight clients query the deployment over the REST API while it is swapped back and forth
    between two indexes: every request succeeds, and answers come from both indexes."""
    from django.test import Client

    a = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    b = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                   index_type="hnsw")  # fmt: skip
    d = _deploy(team=team, name="live", build=a, capture=django_capture_on_commit_callbacks)
    serving.wait_serving(d.serving_key, a.pk)
    token = _token(owner, team)
    url = reverse("api:search", kwargs={"name": "live"})
    # The token's first use records last_used_at: done once here, not by eight threads at once
    # (the unit tier's SQLite refuses concurrent writers of one table rather than waiting).
    first = Client().post(url, {"query": "red planet", "k": 3}, content_type="application/json",
                          HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert first.status_code == 200 and first.json()["index"] == a.pk
    stop = threading.Event()
    statuses: list[int] = []
    served: set[int] = set()
    lock = threading.Lock()

    def client_loop():
        from django.db import connection

        c = Client()
        try:
            _queries(c)
        finally:
            connection.close()  # the thread's own connection, or the test database stays busy

    def _queries(c):
        while not stop.is_set():
            r = c.post(url, {"query": "red planet", "k": 3}, content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 200:
                    served.add(r.json()["index"])

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client_loop) for _ in range(8)]
        for target in (b, a, b):
            seen = len(statuses)
            _deploy(team=team, name="live", build=target,
                    capture=django_capture_on_commit_callbacks)  # fmt: skip
            serving.wait_serving(d.serving_key, target.pk)
            # Keep querying a while after each swap, so requests straddle every one.
            while len(statuses) < seen + 30:
                threading.Event().wait(0.01)
        stop.set()
        for f in futures:
            f.result()
    assert len(statuses) >= 90
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert served == {a.pk, b.pk}


def test_search_process_refuses_an_index_built_for_another_encoder(team, tiny_registered_model,
                                                                   tiny_version, serving,
                                                                   django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    from apps.indexes.models import Deployment
    from apps.indexes.services import deployments_publish

    good = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    other = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                       index_type="flat", params={"dim": 32})  # fmt: skip
    d = _deploy(team=team, name="guarded", build=good, capture=django_capture_on_commit_callbacks)
    serving.wait_serving(d.serving_key, good.pk)
    # A deployment whose recorded encoder (full 64 dims) does not match the index (32 dims):
    # the process must refuse it and keep serving the index it had.
    Deployment.objects.filter(pk=d.pk).update(index=other)
    answer = deployments_publish(wait=True)
    assert "truncate_dim" in answer["errors"][d.serving_key]
    health = serving.health()
    assert health["deployments"][d.serving_key]["index_id"] == good.pk
    assert "refused" in health["errors"][d.serving_key]


def test_a_bf16_index_is_searched_with_bf16_queries_and_never_mixed(team, tiny_registered_model,
                                                                      tiny_version, serving,
                                                                      django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    from apps.indexes.models import Deployment
    from apps.indexes.selectors import deployment_query
    from apps.indexes.services import deployments_publish
    from workers.ml.encode import document_text, encode_texts, load_encoder

    fp32 = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                      precision="fp32")  # fmt: skip
    bf16 = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                      precision="bf16")  # fmt: skip
    assert (fp32.encoder["precision"], bf16.encoder["precision"]) == ("fp32", "bf16")
    capture = django_capture_on_commit_callbacks
    d = _deploy(team=team, name="half", build=bf16, capture=capture)
    serving.wait_serving(d.serving_key, bf16.pk)
    found = deployment_query(team=team, name="half", queries=["red planet"], k=8)
    # The query was encoded in bf16 as the documents were: the scores are the bf16 ones.
    m = tiny_registered_model
    encoder = load_encoder(path=m.path, layout=m.layout, pooling=m.pooling,
                           normalize=m.normalize, max_seq_length=m.max_seq_length)  # fmt: skip
    query = encode_texts(encoder=encoder, texts=[m.query_prefix + "red planet"],
                         normalize=m.normalize, precision="bf16")  # fmt: skip
    rows = list(tiny_version.documents.values_list("doc_id", "title", "text"))
    texts = {doc_id: m.document_prefix + document_text(title, text) for doc_id, title, text in rows}
    vectors = encode_texts(encoder=encoder, texts=list(texts.values()), normalize=m.normalize,
                           precision="bf16")  # fmt: skip
    expected = dict(zip(texts, (vectors @ query[0]).tolist(), strict=True))
    hits = found["results"][0]["hits"]
    for hit in hits:
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=1e-5)
    # bf16 autocast moves these vectors by ~1e-5 only (cosine 0.99997 for MiniLM), too little
    # for the scores to tell; the process says which precision encodes this deployment's queries.
    assert serving.health()["deployments"][d.serving_key]["precision"] == "bf16"
    # A deployment recorded for fp32 queries pointed at the bf16 index is refused.
    live = _deploy(team=team, name="full", build=fp32, capture=capture)
    assert (
        serving.wait_serving(live.serving_key, fp32.pk)["deployments"][live.serving_key][
            "precision"
        ]
        == "fp32"
    )
    Deployment.objects.filter(pk=live.pk).update(index=bf16)
    answer = deployments_publish(wait=True)
    assert "precision" in answer["errors"][live.serving_key]
    assert serving.health()["deployments"][live.serving_key]["index_id"] == fp32.pk


def test_an_optimized_variant_is_served_by_onnx_and_never_mixed_with_its_parent(
    team, tiny_registered_model, tiny_version, serving, django_capture_on_commit_callbacks
):
    import io

    from django.core.management import call_command

    from apps.indexes.models import Deployment
    from apps.indexes.selectors import deployment_query
    from apps.indexes.services import deployments_publish
    from apps.registry.models import EmbeddingModel
    from workers.ml.encode import document_text, encode_texts, load_encoder

    out = io.StringIO()
    call_command("optimize", "--model", str(tiny_registered_model.pk), "--quantize", "int8",
                 "--sync", stdout=out)  # fmt: skip
    variant = EmbeddingModel.objects.get(pk=json.loads(out.getvalue())["model"])
    parent = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    onnx = build_sync(team=team, model=variant, version=tiny_version, precision="auto")
    assert (onnx.encoder["backend"], onnx.encoder["quantization"]) == ("onnx", "int8")
    assert (onnx.encoder["precision"], parent.encoder["backend"]) == ("fp32", "torch")
    capture = django_capture_on_commit_callbacks
    d = _deploy(team=team, name="fast", build=onnx, capture=capture)
    health = serving.wait_serving(d.serving_key, onnx.pk)["deployments"][d.serving_key]
    assert (health["backend"], health["quantization"]) == ("onnx", "int8")
    found = deployment_query(team=team, name="fast", queries=["red planet"], k=8)
    # The search process encoded the query with the variant, as the index's documents were.
    encoder = load_encoder(path=variant.path, layout="onnx", pooling=variant.pooling,
                           normalize=variant.normalize,
                           max_seq_length=variant.max_seq_length)  # fmt: skip
    query = encode_texts(encoder=encoder, texts=["red planet"], normalize=True)
    rows = list(tiny_version.documents.values_list("doc_id", "title", "text"))
    texts = {doc_id: document_text(title, text) for doc_id, title, text in rows}
    vectors = encode_texts(encoder=encoder, texts=list(texts.values()), normalize=True)
    expected = dict(zip(texts, (vectors @ query[0]).tolist(), strict=True))
    for hit in found["results"][0]["hits"]:
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=1e-4)
    # The parent's deployment pointed at the variant's index is refused: other vectors.
    live = _deploy(team=team, name="full", build=parent, capture=capture)
    serving.wait_serving(live.serving_key, parent.pk)
    Deployment.objects.filter(pk=live.pk).update(index=onnx)
    answer = deployments_publish(wait=True)
    refused = answer["errors"][live.serving_key]
    assert "fingerprint" in refused and "backend" in refused and "quantization" in refused
    assert serving.health()["deployments"][live.serving_key]["index_id"] == parent.pk


def test_console_shows_hits_with_snippets_timing_and_side_by_side(client, member, team,
                                                                  tiny_registered_model,
                                                                  tiny_version, serving,
                                                                  django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    hnsw = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                      index_type="hnsw")  # fmt: skip
    for name, build in (("one", flat), ("two", hnsw)):
        d = _deploy(team=team, name=name, build=build, capture=django_capture_on_commit_callbacks)
        serving.wait_serving(d.serving_key, build.pk)
    client.force_login(member)
    page = client.get(reverse("indexes:console"))
    assert page.status_code == 200 and b'id="q"' in page.content
    query = {"d": "one", "b": "two", "q": "the red planet", "k": 8}
    r = client.get(reverse("indexes:console"), query, HTTP_HX_REQUEST="true",
                   HTTP_HX_TARGET="results")  # fmt: skip
    html = r.content.decode()
    assert r.status_code == 200 and html.lstrip().startswith('<div id="results">')
    # The query is the page's URL (pushed by htmx): opened as such it shows the same hits.
    shared = client.get(reverse("indexes:console"), query).content.decode()
    assert shared.count("<li data-doc=") == 16 and 'value="the red planet"' in shared
    assert html.count('class="side"') == 2 and "encode " in html and "search " in html
    assert html.count("<li data-doc=") == 16  # all 8 documents, both sides
    assert "<mark>planet</mark>" in html  # Mars is among the 8: its matched words are marked
    listing = client.get(reverse("indexes:list")).content.decode()
    assert "live" in listing and 'data-deployment="one"' in listing
    detail = client.get(reverse("indexes:deployment", args=["one"])).content.decode()
    assert f"#{flat.pk}" in detail and "Deployed" in detail


def test_filters_apply_inside_the_search(client, member, team, tiny_registered_model,
                                         meta_version, serving,
                                         django_capture_on_commit_callbacks):  # fmt: skip
    from apps.datasets.models import Document

    lang_of = {d.doc_id: d.metadata["lang"] for d in Document.objects.filter(version=meta_version)}
    for index_type in ("flat", "hnsw", "binary"):
        build = build_sync(team=team, model=tiny_registered_model, version=meta_version,
                           index_type=index_type)  # fmt: skip
        d = _deploy(team=team, name=f"m-{index_type}", build=build,
                    capture=django_capture_on_commit_callbacks)  # fmt: skip
        serving.wait_serving(d.serving_key, build.pk)
        token = _token(member, team, name=index_type)
        r = client.post(
            reverse("api:search", kwargs={"name": d.name}),
            {"query": "planet", "k": 8, "filters": {"lang": "de"}, "documents": True},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert r.status_code == 200, r.content
        hits = r.json()["results"][0]["hits"]
        # Two documents are German: both come back although k would allow eight, and no other.
        assert sorted(h["id"] for h in hits) == sorted(
            doc for doc, lang in lang_of.items() if lang == "de"
        ), index_type
        assert all(h["title"] is not None for h in hits)
        r = client.post(
            reverse("api:search", kwargs={"name": d.name}),
            {"query": "planet", "filters": {"colour": "red"}},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert r.status_code == 400 and "colour" in r.json()["error"]
    # JSON values go through as they are: a boolean and a number match the metadata's own.
    r = client.post(
        reverse("api:search", kwargs={"name": "m-flat"}),
        {"query": "planet", "k": 8, "filters": {"featured": True, "year": 2003}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert [h["id"] for h in r.json()["results"][0]["hits"]] == ["d4"]  # i = 3
    assert LANGS.count("de") == 2


def test_search_api_scoping_and_shapes(client, owner, viewer, outsider, team, other_team,
                                       tiny_registered_model, tiny_version, serving,
                                       django_capture_on_commit_callbacks):  # fmt: skip
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="api", build=build, capture=django_capture_on_commit_callbacks)
    serving.wait_serving(d.serving_key, build.pk)
    url = reverse("api:search", kwargs={"name": "api"})
    mine, theirs = _token(viewer, team), _token(outsider, other_team)

    def post(body, token=mine):
        return client.post(url, body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip

    r = post({"queries": ["red planet", "tea"], "k": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["index"] == build.pk and len(body["results"]) == 2
    assert [len(q["hits"]) for q in body["results"]] == [2, 2]
    assert body["results"][0]["hits"][0]["score"] >= body["results"][0]["hits"][1]["score"]
    assert set(body["timings"]) == {"encode_ms", "search_ms"}
    assert post({"query": "x"}, token=theirs).status_code == 404  # another team's name
    assert post({"query": "x"}, token=theirs).json()["error"] == "not found"
    hit = post({"query": "tea", "k": 1, "documents": True}).json()["results"][0]["hits"][0]
    doc = tiny_version.documents.get(doc_id=hit["id"])
    assert (hit["title"], hit["text"]) == (doc.title, doc.text)
    # A row the search process has not loaded yet (deploy committed, reload pending): 503,
    # said apart from a name that does not exist.
    from apps.indexes.models import Deployment

    pending = Deployment.objects.create(team=team, name="pending", index=build, encoder=d.encoder)
    r = client.post(reverse("api:search", kwargs={"name": "pending"}), {"query": "x"},
                    content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {mine}")  # fmt: skip  # noqa: E501
    assert r.status_code == 503 and "not loaded" in r.json()["error"]
    pending.delete()
    assert client.post(url, {"query": "x"}, content_type="application/json").status_code == 401
    assert post({"query": "x", "queries": ["y"]}).status_code == 400
    assert post({"query": "x", "k": 0}).status_code == 422
    # Read-only listings; a viewer cannot deploy.
    auth = {"HTTP_AUTHORIZATION": f"Bearer {mine}"}
    listing = client.get(reverse("api:deployments"), **auth).json()["deployments"]
    assert [x["name"] for x in listing] == ["api"] and listing[0]["index"] == build.pk
    assert (
        "path" not in listing[0]["encoder"] and listing[0]["encoder"]["pooling"]
    )  # no server path
    assert (
        client.get(reverse("api:index_detail", kwargs={"pk": build.pk}), **auth).status_code == 200
    )
    outsider_auth = {"HTTP_AUTHORIZATION": f"Bearer {theirs}"}
    assert client.get(reverse("api:index_detail", kwargs={"pk": build.pk}),
                      **outsider_auth).status_code == 404  # fmt: skip
    r = client.post(reverse("api:deployment_create"), {"name": "x", "index": build.pk},
                    content_type="application/json", **auth)  # fmt: skip
    assert r.status_code == 403
    # Another team sees none of it, and cannot deploy this team's index under its own name.
    detail = reverse("api:deployment_detail", kwargs={"name": "api"})
    assert client.get(detail, **outsider_auth).status_code == 404
    assert client.delete(detail, **outsider_auth).status_code == 404
    assert client.get(reverse("api:deployments"), **outsider_auth).json() == {"deployments": []}
    r = client.post(reverse("api:deployment_create"), {"name": "stolen", "index": build.pk},
                    content_type="application/json", **outsider_auth)  # fmt: skip
    assert r.status_code == 404
    assert client.get(detail, **auth).json()["index"] == build.pk


def test_deploy_and_build_over_the_api(client, owner, team, tiny_registered_model, tiny_version,
                                       serving, django_capture_on_commit_callbacks,
                                       monkeypatch):  # fmt: skip
    from apps.indexes.models import IndexBuild

    monkeypatch.setattr("apps.indexes.services.job_enqueue", lambda job, task: None)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {_token(owner, team)}"}
    r = client.post(reverse("api:index_create"),
                    {"model": tiny_registered_model.pk, "dataset_version": tiny_version.pk,
                     "type": "hnsw", "params": {"hnsw_m": 8}},
                    content_type="application/json", **auth)  # fmt: skip
    assert r.status_code == 202, r.content
    pk = r.json()["id"]
    assert r["Location"] == f"/api/v1/indexes/{pk}"
    from workers.tasks.indexing import build_index

    build_index.run(pk)
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(reverse("api:deployment_create"), {"name": "from-api", "index": pk},
                        content_type="application/json", **auth)  # fmt: skip
    assert r.status_code == 200 and r.json()["history"][0]["action"] == "deploy"
    serving.wait_serving(f"{team.pk}/from-api", pk)
    with django_capture_on_commit_callbacks(execute=True):
        r = client.delete(reverse("api:deployment_delete", kwargs={"name": "from-api"}), **auth)
    assert r.status_code == 204
    assert IndexBuild.objects.filter(pk=pk).exists()


def test_a_changed_model_folder_is_refused_on_load(team, tiny_model_path, tiny_version, serving,
                                                   tmp_path,
                                                   django_capture_on_commit_callbacks):  # fmt: skip
    """The model files an index was built with changed (re-installed, edited): a search process
    loading the deployment refuses it rather than encode queries with another model."""
    import shutil

    from apps.registry.services import embedding_model_register
    from tests.support.search import start_search_process, stop_search_process

    folder = tmp_path / "model-copy"
    shutil.copytree(tiny_model_path, folder)
    model = embedding_model_register(team=team, name="copy", path=str(folder))
    build = build_sync(team=team, model=model, version=tiny_version)
    d = _deploy(team=team, name="fragile", build=build, capture=django_capture_on_commit_callbacks)
    serving.wait_serving(d.serving_key, build.pk)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    replica = start_search_process(tmp_path, manifest=serving.manifest)
    try:
        for _ in range(300):
            errors = replica.health()["errors"]
            if d.serving_key in errors:
                break
            threading.Event().wait(0.1)
        assert "changed since the index was built" in errors[d.serving_key]
        assert d.serving_key not in replica.health()["deployments"]
    finally:
        stop_search_process(replica)


def test_queries_are_encoded_with_the_deployments_recorded_prefix(team, owner, tiny_model_path,
                                                                 tiny_version, serving, client,
                                                                 django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    """The search process prepends the model's query prefix, exactly as recorded: its scores
    equal exact search with "query: …" encoded here, and differ from those without it."""
    import numpy as np

    from apps.registry.services import embedding_model_register
    from workers.ml.encode import load_encoder
    from workers.tasks.encoding import embedding_cache

    model = embedding_model_register(team=team, name="prefixed", path=str(tiny_model_path),
                                     query_prefix="query: ")  # fmt: skip
    build = build_sync(team=team, model=model, version=tiny_version)
    assert build.encoder["query_prefix"] == "query: "
    d = _deploy(team=team, name="prefixed", build=build,
                capture=django_capture_on_commit_callbacks)  # fmt: skip
    serving.wait_serving(d.serving_key, build.pk)
    r = client.post(reverse("api:search", kwargs={"name": "prefixed"}),
                    {"query": "red planet", "k": 8}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {_token(owner, team)}")  # fmt: skip
    served = {h["id"]: h["score"] for h in r.json()["results"][0]["hits"]}
    vectors, ids = embedding_cache().get(build.embedding_key)
    encoder = load_encoder(path=model.path, layout=model.layout, pooling=model.pooling,
                           normalize=model.normalize, max_seq_length=model.max_seq_length,
                           device="cpu")  # fmt: skip

    def scores(text):
        q = encoder.encode([text], normalize_embeddings=model.normalize)[0]
        return dict(zip(ids, (np.asarray(vectors) @ q).tolist(), strict=True))

    with_prefix, without = scores("query: red planet"), scores("red planet")
    assert set(served) == set(ids)
    assert all(abs(served[i] - with_prefix[i]) < 1e-4 for i in ids)
    assert any(abs(served[i] - without[i]) > 1e-3 for i in ids)


def test_bm25_and_hybrid_modes_search_both_sides_fuse_as_recorded_and_filter(
    client,
    member,
    team,
    tiny_registered_model,
    meta_version,
    serving,
    django_capture_on_commit_callbacks,
):
    import bm25s

    from apps.datasets.models import Document
    from apps.indexes.services import IndexBuildError, deployment_deploy
    from workers.ml.fusion import rrf

    capture = django_capture_on_commit_callbacks
    plain = build_sync(team=team, model=tiny_registered_model, version=meta_version)
    both = build_sync(
        team=team, model=tiny_registered_model, version=meta_version, params={"bm25": True}
    )
    assert both.metrics["bm25_bytes"] > 0 and "bm25_bytes" not in plain.metrics
    with pytest.raises(IndexBuildError, match="fusion.rrf_k"):
        deployment_deploy(team=team, name="mixed", index=both, fusion={"rrf_k": 0})
    with capture(execute=True):
        d = deployment_deploy(
            team=team,
            name="mixed",
            index=both,
            fusion={"rrf_k": 10, "candidates": 20, "dense_weight": 0.5},
        )
    health = serving.wait_serving(d.serving_key, both.pk)["deployments"][d.serving_key]
    assert health["bm25"] is True and health["fusion"]["rrf_k"] == 10
    token = _token(member, team)

    def search(mode, k=8, filters=None, name="mixed", query="red planet mars"):
        body = {"query": query, "k": k, "mode": mode}
        if filters:
            body["filters"] = filters
        r = client.post(
            reverse("api:search", kwargs={"name": name}),
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        return r

    # BM25 alone: bm25s' own answer over the same documents, the same scores.
    docs = list(Document.objects.filter(version=meta_version).order_by("pk"))
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(
            [(x.title + " " + x.text).strip() for x in docs], stopwords="en", show_progress=False
        ),
        show_progress=False,
    )
    idx, sc = retriever.retrieve(
        bm25s.tokenize(["red planet mars"], stopwords="en", show_progress=False),
        k=8,
        show_progress=False,
    )
    expected = [
        (docs[int(j)].doc_id, float(s)) for j, s in zip(idx[0], sc[0], strict=True) if s > 0
    ]
    r = search("bm25")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["mode"] == "bm25" and body["timings"]["bm25_ms"] >= 0
    assert [(h["id"], pytest.approx(h["score"], abs=1e-5)) for h in body["results"][0]["hits"]] == [
        (doc, pytest.approx(s, abs=1e-5)) for doc, s in expected
    ]
    # Hybrid: the dense and BM25 lists, 20 deep each, fused by RRF with the recorded k.
    dense = search("dense", k=20).json()["results"][0]["hits"]
    lexical = search("bm25", k=20).json()["results"][0]["hits"]
    fused = rrf(
        [
            {"q": {h["id"]: h["score"] for h in dense}},
            {"q": {h["id"]: h["score"] for h in lexical}},
        ],
        k=10,
        top_k=5,
    )["q"]
    hybrid = search("hybrid", k=5).json()
    assert [h["id"] for h in hybrid["results"][0]["hits"]] == list(fused)
    assert hybrid["timings"]["encode_ms"] > 0 and hybrid["timings"]["bm25_ms"] >= 0
    # Filters apply to both sides.
    lang_of = {x.doc_id: x.metadata["lang"] for x in docs}
    for mode in ("bm25", "hybrid"):
        # (German: Python and the moon; the query shares words with the moon's text only.)
        found = search(mode, filters={"lang": "de"}, query="moon orbits red planet mars")
        hits = found.json()["results"][0]["hits"]
        assert hits and all(lang_of[h["id"]] == "de" for h in hits), mode
    # An index without BM25 refuses the two modes by name; a bad mode is named.
    with capture(execute=True):
        deployment_deploy(team=team, name="plain", index=plain)
    serving.wait_serving(f"{team.pk}/plain", plain.pk)
    r = search("hybrid", name="plain")
    assert r.status_code == 400 and "mode: hybrid needs a BM25 index" in r.json()["error"]
    r = search("splade")
    assert r.status_code == 422 and "mode" in json.dumps(r.json())
    assert (
        client.get(
            reverse("api:deployment_detail", kwargs={"name": "mixed"}),
            HTTP_AUTHORIZATION=f"Bearer {token}",
        ).json()["fusion"]["candidates"]
        == 20
    )
