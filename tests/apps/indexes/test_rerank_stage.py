"""A deployment's rerank stage against a real search process: the first stage's top k′
reordered by the deployed cross-encoder (the same order and scores as the bare library),
its time apart, skippable per request, settable from the page, scoped and guarded."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from django.urls import reverse

from tests.apps.indexes.conftest import build_sync

pytestmark = pytest.mark.django_db


def _token(user, team):
    from apps.accounts.services import api_token_create

    return api_token_create(user=user, team=team, name="t")[1]


@pytest.fixture
def reranker(team, tiny_reranker_path, tmp_path):
    from apps.registry.services import embedding_model_register

    # A copy, so that the guard test may change its files.
    folder = tmp_path / "reranker-copy"
    shutil.copytree(tiny_reranker_path, folder)
    return embedding_model_register(team=team, name="tiny-ce", path=str(folder))


def test_the_rerank_stage_reorders_the_first_stages_top_k_prime_as_the_bare_library(
    client, member, team, other_team, tiny_registered_model, meta_version, reranker, serving,
    tiny_reranker_path, django_capture_on_commit_callbacks,
):  # fmt: skip
    from sentence_transformers import CrossEncoder

    from apps.datasets.models import Document
    from apps.indexes.services import IndexBuildError, deployment_deploy
    from apps.registry.services import ModelInUse, embedding_model_delete, embedding_model_register

    build = build_sync(team=team, model=tiny_registered_model, version=meta_version,
                       params={"bm25": True})  # fmt: skip
    assert build.metrics["texts_bytes"] > 0
    # Bad stages are refused naming the field.
    with pytest.raises(IndexBuildError, match="rerank.k_prime"):
        deployment_deploy(team=team, name="rr", index=build,
                          rerank={"model": reranker.pk, "k_prime": 0})  # fmt: skip
    with pytest.raises(IndexBuildError, match="rerank.model: tiny is an embedding model"):
        deployment_deploy(team=team, name="rr", index=build,
                          rerank={"model": tiny_registered_model.pk})  # fmt: skip
    theirs = embedding_model_register(team=other_team, name="ce", path=str(tiny_reranker_path))
    with pytest.raises(IndexBuildError, match="rerank.model: no such model in your team"):
        deployment_deploy(team=team, name="rr", index=build, rerank={"model": theirs.pk})
    with django_capture_on_commit_callbacks(execute=True):
        d = deployment_deploy(team=team, name="rr", index=build,
                              rerank={"model": reranker.pk, "k_prime": 5})  # fmt: skip
    health = serving.wait_serving(d.serving_key, build.pk)["deployments"][d.serving_key]
    assert health["rerank"] == {"model": reranker.pk, "model_name": "tiny-ce", "k_prime": 5}
    token = _token(member, team)

    def search(**body):
        r = client.post(
            reverse("api:search", kwargs={"name": "rr"}),
            {"query": "red planet mars", "k": 3, **body},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert r.status_code == 200, r.content
        return r.json()

    first = search(k=5, rerank=False)
    assert "rerank_ms" not in first["timings"] or first["timings"]["rerank_ms"] is None
    head = [h["id"] for h in first["results"][0]["hits"]]
    texts = {
        doc.doc_id: (doc.title + " " + doc.text).strip()
        for doc in Document.objects.filter(version=meta_version)
    }
    bare = CrossEncoder(reranker.path, local_files_only=True)
    scores = bare.predict([("red planet mars", texts[i]) for i in head])
    expected = sorted(zip(head, scores, strict=True), key=lambda p: -p[1])[:3]
    reranked = search()
    assert reranked["timings"]["rerank_ms"] > 0
    got = [(h["id"], h["score"]) for h in reranked["results"][0]["hits"]]
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([float(s) for _, s in expected], abs=1e-5)
    # Hybrid and filters: the stage reranks whatever the first stage returned.
    hybrid = search(mode="hybrid", filters={"lang": "en"})
    assert hybrid["timings"]["rerank_ms"] > 0 and hybrid["timings"]["bm25_ms"] >= 0
    langs = dict(Document.objects.filter(version=meta_version).values_list("doc_id", "metadata"))
    assert all(langs[h["id"]]["lang"] == "en" for h in hybrid["results"][0]["hits"])
    # The API shows the stage without a server path; the schema lists it.
    r = client.get(reverse("api:deployment_detail", kwargs={"name": "rr"}),
                   HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.json()["rerank"] == {"model": reranker.pk, "model_name": "tiny-ce", "k_prime": 5}
    assert reranker.path not in r.content.decode()
    # Over the API another team's reranker is a 404; a body without the model names it.
    for stage, status, text in (
        ({"model": theirs.pk}, 404, "rerank.model: no such model"),
        ({"k_prime": 5}, 422, "model"),
    ):
        r = client.post(reverse("api:deployment_create"), {"name": "rr", "index": build.pk,
                        "rerank": stage}, content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
        assert r.status_code == status and text in json.dumps(r.json()), r.content
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "rerank" in schema["DeployIn"]["properties"]
    assert "rerank" in schema["SearchIn"]["properties"]
    # A reranker a deployment uses cannot be deleted.
    with pytest.raises(ModelInUse, match="rerank stage"):
        embedding_model_delete(model=reranker)


def test_the_page_sets_and_removes_the_stage_and_the_console_times_it(
    client, member, team, tiny_registered_model, tiny_version, reranker, serving,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.models import Deployment
    from apps.indexes.services import deployment_deploy

    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    with django_capture_on_commit_callbacks(execute=True):
        d = deployment_deploy(team=team, name="page", index=build)
    client.force_login(member)
    page = client.get(reverse("indexes:deployment", args=["page"])).content.decode()
    assert 'id="settings-form"' in page and "tiny-ce" in page
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(reverse("indexes:deployment_settings", args=["page"]),
                        {"rerank_model": reranker.pk, "k_prime": "4"})  # fmt: skip
    assert r.status_code == 302
    d = Deployment.objects.get(pk=d.pk)
    assert d.rerank["model"] == reranker.pk and d.rerank["k_prime"] == 4
    page = client.get(reverse("indexes:deployment", args=["page"])).content.decode()
    assert 'id="rerank-stage"' in page and "top <strong>4</strong>" in page
    for _ in range(300):
        live = serving.health()["deployments"].get(d.serving_key) or {}
        if live.get("rerank"):
            break
        threading.Event().wait(0.1)
    html = client.get(
        reverse("indexes:console"),
        {"d": "page", "q": "the red planet", "k": 3},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="results",
    ).content.decode()
    assert "rerank-ms" in html and html.count("<li data-doc=") == 3
    off = client.get(reverse("indexes:console"),
                     {"d": "page", "q": "the red planet", "k": 3, "rerank": "off"},
                     HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results").content.decode()  # fmt: skip
    assert "rerank-ms" not in off
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("indexes:deployment_settings", args=["page"]), {"rerank_model": ""})
    assert Deployment.objects.get(pk=d.pk).rerank == {}


def test_a_changed_reranker_folder_is_refused_on_load(
    team, tiny_registered_model, tiny_version, reranker, serving, tmp_path,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from pathlib import Path

    from apps.indexes.services import deployment_deploy
    from tests.support.search import start_search_process, stop_search_process

    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    with django_capture_on_commit_callbacks(execute=True):
        d = deployment_deploy(team=team, name="guarded", index=build,
                              rerank={"model": reranker.pk})  # fmt: skip
    serving.wait_serving(d.serving_key, build.pk)
    weights = next(Path(reranker.path).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    replica = start_search_process(tmp_path, manifest=serving.manifest)
    try:
        errors = {}
        for _ in range(900):  # a loaded machine starts a search process slowly
            errors = replica.health()["errors"]
            if d.serving_key in errors:
                break
            threading.Event().wait(0.1)
        assert "the reranker tiny-ce changed" in errors[d.serving_key]
        assert reranker.path not in errors[d.serving_key]  # no server path in a message
        assert d.serving_key not in replica.health()["deployments"]
    finally:
        stop_search_process(replica)


def test_the_deploy_command_sets_and_removes_the_stage(
    team, tiny_registered_model, tiny_version, reranker, settings, tmp_path
):
    import io
    import json

    from django.core.management import call_command

    from apps.core.commands import InputError
    from apps.indexes.models import Deployment

    settings.SEARCH_URL = "http://127.0.0.1:9"  # no search process: the deploy still records
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)

    def deploy(*args) -> dict:
        out = io.StringIO()
        call_command("deploy", "cmd", "--index", str(build.pk), *args, stdout=out)
        return json.loads(out.getvalue())

    deploy("--rerank-model", str(reranker.pk), "--k-prime", "7")
    assert Deployment.objects.get(name="cmd").rerank["k_prime"] == 7
    with pytest.raises((InputError, SystemExit)):
        deploy("--rerank-model", str(tiny_registered_model.pk))
    deploy("--no-rerank")
    assert Deployment.objects.get(name="cmd").rerank == {}


def test_a_settings_change_on_the_same_index_is_in_the_deploy_log(
    client, member, team, tiny_registered_model, tiny_version, settings
):
    from apps.indexes.models import DeploymentEvent
    from apps.indexes.services import deployment_deploy

    settings.SEARCH_URL = "http://127.0.0.1:9"  # no search process: the log is written anyway
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    deployment = deployment_deploy(team=team, name="logged", index=build, user=member)
    before = dict(deployment.fusion)
    after = {**before, "rrf_k": 10}
    deployment_deploy(team=team, name="logged", index=build, fusion=after, user=member)
    event = DeploymentEvent.objects.filter(name="logged").first()  # newest first
    assert event.action == DeploymentEvent.Action.SETTINGS and event.user == member
    assert event.changes == {"fusion": [before, after]}
    assert event.from_number == event.to_number == build.pk
    client.force_login(member)
    page = client.get(reverse("indexes:deployment", args=["logged"])).content.decode()
    assert "Search settings changed" in page and "rrf_k 10" in page
