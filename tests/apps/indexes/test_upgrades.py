"""Model upgrades without downtime (issue 16 §3): the adapter job, serving through the adapter,
re-embedding, the cutover gated by the paired test, rollback under load, the API and the page."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from tests.apps.indexes.conftest import build_sync
from tests.conftest import TINY_CORPUS, TINY_QUERIES, write_beir
from tests.support.s3 import s3_env, s3_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def tiny_model_v2_path(tmp_path_factory):
    """A second tiny model: the same architecture and vocabulary, other random weights (a
    space the first one's index cannot read without an adapter)."""
    from tests.support.tiny_model import build_tiny_model

    sentences = [r["title"] + " " + r["text"] for r in TINY_CORPUS] + [
        q["text"] for q in TINY_QUERIES
    ]
    folder = tmp_path_factory.mktemp("tiny-model-v2") / "model"
    return build_tiny_model(folder, sentences=sentences, seed=1)


@pytest.fixture
def new_model(team, tiny_model_v2_path):
    from apps.registry.services import embedding_model_register

    return embedding_model_register(team=team, name="tiny-v2", path=str(tiny_model_v2_path))


@pytest.fixture
def judged_version(team, tmp_path):
    """The tiny corpus with 40 judged test queries: enough for the paired test to decide."""
    from apps.datasets.services import dataset_import_beir

    queries = [{"_id": f"q{i}", "text": f"{TINY_QUERIES[i % 4]['text']} {i}"} for i in range(40)]
    qrels = {"test": [(f"q{i}", f"d{i % 8 + 1}", 1) for i in range(40)]}
    folder = write_beir(tmp_path / "judged", queries=queries, qrels=qrels)
    return dataset_import_beir(team=team, name="judged", path=folder).version


def _deploy(*, team, name, build, capture, user=None):
    from apps.indexes.services import deployment_deploy

    with capture(execute=True):
        return deployment_deploy(team=team, name=name, index=build, user=user)


def _prepared(*, team, deployment, model, kind="orthogonal"):
    """An upgrade whose adapter job ran here, by the worker's own task code."""
    from apps.indexes.upgrades import model_upgrade_create
    from workers.tasks.upgrade import prepare_upgrade

    upgrade = model_upgrade_create(team=team, deployment=deployment, new_model=model,
                                   adapter_kind=kind, enqueue=False)  # fmt: skip
    prepare_upgrade.run(upgrade.pk)
    upgrade.refresh_from_db()
    assert upgrade.status == "succeeded", upgrade.error
    return upgrade


def _reembedded(upgrade):
    """The re-embedding index built here; its two evaluations left pending."""
    from apps.indexes.upgrades import model_upgrade_reembed
    from workers.tasks.indexing import build_index

    build = model_upgrade_reembed(upgrade=upgrade, enqueue=False)
    build_index.run(build.pk)
    build.refresh_from_db()
    assert build.status == "succeeded", build.error
    upgrade.refresh_from_db()
    return upgrade


def _judge(evaluation, values):
    """Finish an evaluation with these per-query nDCG@10 values (every metric the same), in
    the split's query order: the paired test then has known inputs."""
    from apps.datasets.models import Query
    from apps.runs.models import QueryResult
    from workers.common.metrics import METRICS

    queries = list(
        Query.objects.filter(version=evaluation.dataset_version, qrels__split=evaluation.split)
        .distinct()
        .order_by("pk")
    )
    assert len(queries) == len(values)
    QueryResult.objects.bulk_create(
        QueryResult(evaluation=evaluation, query=q, metrics=dict.fromkeys(METRICS, float(v)))
        for q, v in zip(queries, values, strict=True)
    )
    evaluation.metrics = dict.fromkeys(METRICS, float(np.mean(values)))
    evaluation.status = "succeeded"
    evaluation.finished_at = timezone.now()
    evaluation.save()


def test_the_adapter_job_fits_the_map_and_reports_compatibility(
    team, member, tiny_registered_model, new_model, tiny_version, django_capture_on_commit_callbacks
):
    from workers.ml.adapter import load_adapter

    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="prod", build=old, capture=django_capture_on_commit_callbacks)
    upgrade = _prepared(team=team, deployment=d, model=new_model)
    report = upgrade.report
    assert report["documents"] == len(TINY_CORPUS) and report["queries"] == 3
    for side in ("new_on_old", "old_on_new", "adapted_on_old", "adapted_vs_old"):
        assert 0.0 <= report["recall"][side] <= 1.0
    assert set(report["ndcg_at_10"]) == {"old", "new", "new_on_old", "old_on_new",
                                         "adapted_on_old"}  # fmt: skip
    assert report["adapter_us_per_query"] > 0
    matrix = load_adapter(upgrade.adapter_path, sha256=upgrade.adapter_sha256)
    assert matrix.shape == (64, 64)
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(64), atol=1e-4)  # orthogonal
    assert upgrade.adapter_encoder["model_id"] == new_model.pk
    assert upgrade.adapter_encoder["fingerprint"]


def test_start_refuses_bad_values_naming_the_field(
    team, tiny_registered_model, new_model, tiny_version, settings,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.upgrades import UpgradeError, model_upgrade_create

    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="prod", build=old, capture=django_capture_on_commit_callbacks)
    cases = [
        ({"new_model": tiny_registered_model}, "model: prod already serves"),
        ({"new_model": new_model, "adapter_kind": "cubic"}, "adapter: unknown kind"),
        ({"new_model": new_model, "split": "nope"}, "split:"),
        ({"new_model": new_model, "precision": "fp8"}, "precision:"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UpgradeError, match=message):
            model_upgrade_create(team=team, deployment=d, enqueue=False, **kwargs)
    with pytest.raises(UpgradeError, match="adapter: orthogonal needs one dimension"):
        type(new_model).objects.filter(pk=new_model.pk).update(dimension=32)
        new_model.refresh_from_db()
        model_upgrade_create(team=team, deployment=d, new_model=new_model, enqueue=False)
    # A second start of the same upgrade while it waits is the same job (one click, one job).
    settings.JOB_DEDUPE_WINDOW_S = 10
    first = model_upgrade_create(team=team, deployment=d, new_model=new_model,
                                 adapter_kind="linear", enqueue=False)  # fmt: skip
    again = model_upgrade_create(team=team, deployment=d, new_model=new_model,
                                 adapter_kind="linear", enqueue=False)  # fmt: skip
    assert again.pk == first.pk


def test_cutover_is_refused_when_significantly_worse_and_goes_through_when_forced(
    team, member, tiny_registered_model, new_model, judged_version,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.models import Deployment, DeploymentEvent
    from apps.indexes.upgrades import CutoverRefused, model_upgrade_cutover

    old = build_sync(team=team, model=tiny_registered_model, version=judged_version)
    capture = django_capture_on_commit_callbacks
    d = _deploy(team=team, name="prod", build=old, capture=capture)
    upgrade = _reembedded(_prepared(team=team, deployment=d, model=new_model))
    rng = np.random.default_rng(0)
    _judge(upgrade.old_evaluation, np.clip(0.8 + rng.normal(0, 0.05, 40), 0, 1))
    _judge(upgrade.new_evaluation, np.clip(0.4 + rng.normal(0, 0.05, 40), 0, 1))
    with pytest.raises(CutoverRefused, match="force: the new model is significantly worse"):
        with capture(execute=True):
            model_upgrade_cutover(upgrade=upgrade, user=member)
    assert Deployment.objects.get(pk=d.pk).index_id == old.pk
    upgrade.refresh_from_db()
    assert upgrade.cut_over_at is None
    with capture(execute=True):
        model_upgrade_cutover(upgrade=upgrade, user=member, force=True)
    upgrade.refresh_from_db()
    assert Deployment.objects.get(pk=d.pk).index_id == upgrade.new_index_id
    assert upgrade.forced is True and upgrade.verdict["worse"] is True
    assert upgrade.verdict["delta"] < -0.3 and upgrade.verdict["p_value"] < 0.05
    assert upgrade.rollback_until > timezone.now() + timedelta(hours=23)
    swap = DeploymentEvent.objects.filter(team=team, name="prod").first()
    assert (swap.action, swap.from_index_id, swap.to_index_id) == (
        "swap", old.pk, upgrade.new_index_id,
    )  # fmt: skip


def test_cutover_goes_through_unforced_when_not_worse_and_rollback_window_closes(
    team, member, tiny_registered_model, new_model, judged_version, settings,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.models import Deployment
    from apps.indexes.upgrades import (
        UpgradeError,
        model_upgrade_cutover,
        model_upgrade_rollback,
    )

    old = build_sync(team=team, model=tiny_registered_model, version=judged_version)
    capture = django_capture_on_commit_callbacks
    d = _deploy(team=team, name="prod", build=old, capture=capture)
    upgrade = _prepared(team=team, deployment=d, model=new_model)
    with pytest.raises(UpgradeError, match="new_index: re-embed"):
        model_upgrade_cutover(upgrade=upgrade)
    upgrade = _reembedded(upgrade)
    with pytest.raises(UpgradeError, match="verdict: the paired test needs both evaluations"):
        model_upgrade_cutover(upgrade=upgrade)
    values = np.linspace(0.2, 0.9, 40)
    _judge(upgrade.old_evaluation, values)
    _judge(upgrade.new_evaluation, values[::-1])  # the same mean, no significant difference
    settings.UPGRADE_ROLLBACK_HOURS = 0.5
    with capture(execute=True):
        model_upgrade_cutover(upgrade=upgrade, user=member)
    upgrade.refresh_from_db()
    assert upgrade.forced is False and upgrade.verdict["significant"] is False
    # The index a rollback needs cannot be deleted while the window is open.
    from apps.indexes.services import IndexBuildError, index_build_delete

    with pytest.raises(IndexBuildError, match=f"upgrade #{upgrade.pk} of prod rolls back to"):
        index_build_delete(build=old)
    with pytest.raises(UpgradeError, match="upgrade: already cut over"):
        model_upgrade_cutover(upgrade=upgrade)
    type(upgrade).objects.filter(pk=upgrade.pk).update(
        rollback_until=timezone.now() - timedelta(seconds=1)
    )
    upgrade.refresh_from_db()
    with pytest.raises(UpgradeError, match="rollback: the window closed"):
        model_upgrade_rollback(upgrade=upgrade)
    assert Deployment.objects.get(pk=d.pk).index_id == upgrade.new_index_id
    # Once it closed, the old index may go, and the upgrade's record with it.
    from pathlib import Path

    adapter_folder = Path(upgrade.adapter_path).parent
    assert adapter_folder.is_dir()
    with capture(execute=True):
        index_build_delete(build=old)
    assert not type(upgrade).objects.filter(pk=upgrade.pk).exists()
    assert not adapter_folder.exists()


@pytest.mark.django_db(transaction=True)  # the client threads need committed rows
def test_adapter_then_cutover_then_rollback_under_concurrent_queries_loses_none(
    team, owner, tiny_registered_model, new_model, tiny_version, serving,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    """Eight clients query the deployment over the REST API while it starts answering through
    the adapter, cuts over to the re-embedded index, and rolls back: every request succeeds,
    and answers come from both indexes; the adapter's time is in the answers while it serves."""
    from django.test import Client

    from apps.accounts.services import api_token_create
    from apps.indexes.models import Deployment
    from apps.indexes.upgrades import (
        model_upgrade_cutover,
        model_upgrade_rollback,
        model_upgrade_serve_adapter,
    )
    from workers.tasks.evaluation import evaluate

    capture = django_capture_on_commit_callbacks
    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="live", build=old, capture=capture)
    serving.wait_serving(d.serving_key, old.pk)
    upgrade = _reembedded(_prepared(team=team, deployment=d, model=new_model))
    for evaluation in (upgrade.old_evaluation, upgrade.new_evaluation):
        evaluate.run(evaluation.pk)  # the real evaluations (3 judged queries: not significant)
    token = api_token_create(user=owner, team=team, name="t")[1]
    url = reverse("api:search", kwargs={"name": "live"})
    stop = threading.Event()
    answers: list[tuple[int, int | None, bool]] = []
    lock = threading.Lock()

    def client_loop():
        from django.db import connection

        c = Client()
        try:
            while not stop.is_set():
                r = c.post(url, {"query": "red planet", "k": 3}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
                body = r.json() if r.status_code == 200 else {}
                with lock:
                    answers.append((r.status_code, body.get("index"),
                                    "adapter_ms" in body.get("timings", {})))  # fmt: skip
        finally:
            connection.close()

    def wait_answers(n=30):
        seen = len(answers)
        while len(answers) < seen + n:
            threading.Event().wait(0.01)

    def wait_adapter(on: bool, timeout=60.0):
        deadline = threading.Event()
        for _ in range(int(timeout / 0.1)):
            described = serving.health()["deployments"].get(d.serving_key) or {}
            if bool(described.get("adapter")) == on:
                return described
            deadline.wait(0.1)
        raise AssertionError(f"adapter never {'on' if on else 'off'}: {serving.health()}")

    # The token's first use records last_used_at: done once here, not by eight threads at once
    # (the unit tier's SQLite refuses concurrent writers of one table rather than waiting).
    first = Client().post(url, {"query": "red planet", "k": 3}, content_type="application/json",
                          HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert first.status_code == 200 and first.json()["index"] == old.pk
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client_loop) for _ in range(8)]
        wait_answers()
        with capture(execute=True):
            model_upgrade_serve_adapter(upgrade=upgrade, serve=True, user=owner)
        described = wait_adapter(True)
        assert described["adapter"]["model"] == new_model.name
        assert described["index_id"] == old.pk
        wait_answers()
        with capture(execute=True):
            model_upgrade_cutover(upgrade=upgrade, user=owner)
        serving.wait_serving(d.serving_key, upgrade.new_index_id)
        wait_adapter(False)  # the swap ends the adapter
        wait_answers()
        upgrade.refresh_from_db()
        with capture(execute=True):
            model_upgrade_rollback(upgrade=upgrade, user=owner)
        serving.wait_serving(d.serving_key, old.pk)
        wait_answers()
        stop.set()
        for f in futures:
            f.result()
    statuses = [s for s, _, _ in answers]
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    served = {index for _, index, _ in answers}
    assert served == {old.pk, upgrade.new_index_id}
    assert any(adapted for _, _, adapted in answers)  # served through the adapter a while
    deployment = Deployment.objects.get(pk=d.pk)
    assert deployment.index_id == old.pk and deployment.adapter == {}
    upgrade.refresh_from_db()
    assert upgrade.rolled_back_at is not None and not upgrade.can_roll_back


@pytest.fixture
def api(team, member):
    from django.test import Client

    from apps.accounts.services import api_token_create

    token = api_token_create(user=member, team=team, name="t")[1]
    client = Client()

    def call(method, path, body=None):
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return getattr(client, method)(path, **kwargs)

    return call


def test_api_upgrade_fields_refusals_and_other_teams(
    api, team, other_team, tiny_registered_model, new_model, tiny_version, tiny_model_path,
    judged_version, django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.models import ModelUpgrade
    from apps.registry.services import embedding_model_register
    from workers.tasks.upgrade import prepare_upgrade

    capture = django_capture_on_commit_callbacks
    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    _deploy(team=team, name="prod", build=old, capture=capture)
    theirs = embedding_model_register(team=other_team, name="theirs", path=str(tiny_model_path))
    their_index = build_sync(team=other_team, model=theirs, version=judged_version_of(other_team))
    _deploy(team=other_team, name="their-prod", build=their_index, capture=capture)

    # Another team's model or deployment: 404, as for a missing one.
    r = api("post", "/api/v1/deployments/prod/upgrades", {"model": theirs.pk})
    assert r.status_code == 404 and r.json()["error"].startswith("model:")
    r = api("post", "/api/v1/deployments/their-prod/upgrades", {"model": new_model.pk})
    assert r.status_code == 404
    # Bad values are refused naming the field.
    r = api("post", "/api/v1/deployments/prod/upgrades", {"model": new_model.pk,
                                                          "adapter": "cubic"})  # fmt: skip
    assert r.status_code == 422 and "adapter" in json.dumps(r.json())
    r = api("post", "/api/v1/deployments/prod/upgrades", {"model": new_model.pk, "split": "x"})
    assert r.status_code == 400 and r.json()["error"].startswith("split:")
    r = api("post", "/api/v1/deployments/prod/upgrades", {"model": new_model.pk, "path": "/x"})
    assert r.status_code == 422 and "path" in json.dumps(r.json())

    with capture(execute=False):
        r = api("post", "/api/v1/deployments/prod/upgrades", {"model": new_model.pk})
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["status"] == "pending" and body["adapter"] == "orthogonal"
    assert body["old_index"] == old.pk and body["new_model"] == new_model.pk
    pk = body["id"]
    prepare_upgrade.run(pk)
    body = api("get", f"/api/v1/upgrades/{pk}").json()
    assert body["status"] == "succeeded"
    assert body["report"]["recall"]["adapted_on_old"] is not None
    assert "per_query" not in body["report"]
    text = json.dumps(body)
    assert str(ModelUpgrade.objects.get(pk=pk).adapter_path) not in text
    assert "/artifacts/" not in text and "adapter_path" not in text
    # Steps out of order are refused naming what is missing.
    r = api("post", f"/api/v1/upgrades/{pk}/cutover", {})
    assert r.status_code == 400 and r.json()["error"].startswith("new_index:")
    r = api("post", f"/api/v1/upgrades/{pk}/rollback")
    assert r.status_code == 400 and r.json()["error"].startswith("rollback:")
    r = api("post", f"/api/v1/upgrades/{pk}/cutover", {"force": "sometimes"})
    assert r.status_code == 422 and "force" in json.dumps(r.json())
    # The adapter on: the deployment says so (no path), and the list shows the upgrade.
    with capture(execute=True):
        r = api("post", f"/api/v1/upgrades/{pk}/adapter", {"serve": True})
    assert r.status_code == 200 and r.json()["serving_adapter"] is True
    deployment = api("get", "/api/v1/deployments/prod").json()
    assert deployment["adapter"] == {"upgrade": pk, "kind": "orthogonal", "model": new_model.pk,
                                     "model_name": "tiny-v2"}  # fmt: skip
    assert "adapter" in json.dumps(deployment["history"][0]) or deployment["history"]
    assert [u["id"] for u in api("get", "/api/v1/upgrades").json()["upgrades"]] == [pk]
    # Re-embedding: a pending index build of the new model, and the gate's evaluations.
    with capture(execute=False):
        r = api("post", f"/api/v1/upgrades/{pk}/reembed")
    assert r.status_code == 202
    body = r.json()
    assert (
        body["new_index_status"] == "pending" and body["old_evaluation"] and body["new_evaluation"]
    )
    # Another team's upgrade is a 404 on every URL.
    their_upgrade = ModelUpgrade.objects.create(
        team=other_team, deployment_id=their_index.deployments.first().pk, old_index=their_index,
        new_model=theirs, split="test",
    )  # fmt: skip
    for method, path, payload in (
        ("get", f"/api/v1/upgrades/{their_upgrade.pk}", None),
        ("post", f"/api/v1/upgrades/{their_upgrade.pk}/adapter", {"serve": True}),
        ("post", f"/api/v1/upgrades/{their_upgrade.pk}/reembed", None),
        ("post", f"/api/v1/upgrades/{their_upgrade.pk}/cutover", {}),
        ("post", f"/api/v1/upgrades/{their_upgrade.pk}/rollback", None),
    ):
        assert api(method, path, payload).status_code == 404, path


def judged_version_of(team):
    from django.conf import settings

    from apps.datasets.services import dataset_import_beir

    folder = write_beir(settings.ARTIFACTS_ROOT.parent / f"beir-{team.pk}")
    return dataset_import_beir(team=team, name="theirs", path=folder).version


def test_every_new_api_field_is_in_the_schema(client):
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert set(schemas["UpgradeIn"]["properties"]) == {"model", "adapter", "split", "precision"}
    assert set(schemas["AdapterIn"]["properties"]) == {"serve"}
    assert set(schemas["CutoverIn"]["properties"]) == {"force"}
    out = set(schemas["UpgradeOut"]["properties"])
    names = ("report", "serving_adapter", "new_index", "new_index_status", "new_index_progress",
             "old_evaluation", "new_evaluation", "gate", "verdict", "forced", "cut_over_at",
             "rollback_until", "rolled_back_at", "can_roll_back")  # fmt: skip
    for name in names:
        assert name in out, name
    assert {"worse", "p_value", "delta", "verdict"} <= set(schemas["GateOut"]["properties"])
    assert "adapter" in schemas["DeploymentOut"]["properties"]
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in ("/api/v1/deployments/{name}/upgrades", "/api/v1/upgrades/{pk}/adapter",
                 "/api/v1/upgrades/{pk}/reembed", "/api/v1/upgrades/{pk}/cutover",
                 "/api/v1/upgrades/{pk}/rollback"):  # fmt: skip
        assert path in paths, path


def test_the_page_shows_the_report_verdict_and_refuses_an_unforced_worse_cutover(
    client, member, outsider, team, tiny_registered_model, new_model, judged_version,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    capture = django_capture_on_commit_callbacks
    old = build_sync(team=team, model=tiny_registered_model, version=judged_version)
    _deploy(team=team, name="prod", build=old, capture=capture)
    client.force_login(member)
    page = client.get(reverse("indexes:deployment", args=["prod"])).content.decode()
    assert 'id="upgrade-form"' in page and "tiny-v2" in page
    with capture(execute=False):
        r = client.post(reverse("indexes:upgrade_start", args=["prod"]),
                        {"model": new_model.pk, "adapter": "linear", "split": "test"})  # fmt: skip
    from apps.indexes.models import ModelUpgrade
    from workers.tasks.upgrade import prepare_upgrade

    upgrade = ModelUpgrade.objects.get()
    assert r.status_code == 302 and r.url == reverse("indexes:upgrade", args=[upgrade.pk])
    assert upgrade.adapter_kind == "linear"
    page = client.get(r.url).content.decode()
    assert 'hx-trigger="every 2s"' in page  # polls while the job waits
    assert r.url in client.get(reverse("core:jobs")).content.decode()  # on the Jobs page too
    prepare_upgrade.run(upgrade.pk)
    page = client.get(r.url).content.decode()
    assert 'id="compat-report"' in page and 'id="adapter-on"' in page
    report = ModelUpgrade.objects.get(pk=upgrade.pk).report
    assert f"{report['ndcg_at_10']['adapted_on_old']:.4f}" in page
    assert f"{report['judged_recall_at_10']['new_on_old']:.4f}" in page
    assert 'hx-trigger="every 2s"' not in page
    fragment = client.get(r.url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="upgrade-status")
    assert fragment.content.decode().lstrip().startswith('<div id="upgrade-status"')
    upgrade.refresh_from_db()
    upgrade = _reembedded(upgrade)
    rng = np.random.default_rng(1)
    _judge(upgrade.old_evaluation, np.clip(0.8 + rng.normal(0, 0.05, 40), 0, 1))
    _judge(upgrade.new_evaluation, np.clip(0.3 + rng.normal(0, 0.05, 40), 0, 1))
    page = client.get(r.url).content.decode()
    assert 'data-worse="true"' in page and 'id="force"' in page
    with capture(execute=True):
        refused = client.post(reverse("indexes:upgrade_cutover", args=[upgrade.pk]), follow=True)
    assert "significantly worse" in refused.content.decode()
    upgrade.refresh_from_db()
    assert upgrade.cut_over_at is None
    with capture(execute=True):
        client.post(reverse("indexes:upgrade_cutover", args=[upgrade.pk]), {"force": "1"})
    upgrade.refresh_from_db()
    assert upgrade.forced and upgrade.cut_over_at
    page = client.get(r.url).content.decode()
    assert 'id="rollback"' in page and "forced" in page
    with capture(execute=True):
        client.post(reverse("indexes:upgrade_rollback", args=[upgrade.pk]))
    upgrade.refresh_from_db()
    assert upgrade.rolled_back_at is not None
    # Another team's member: the page and every step are 404s.
    client.force_login(outsider)
    assert client.get(reverse("indexes:upgrade", args=[upgrade.pk])).status_code == 404
    assert client.post(reverse("indexes:upgrade_rollback", args=[upgrade.pk])).status_code == 404


def test_with_a_bucket_the_adapter_is_published_and_another_host_fetches_it(
    s3_env, team, tiny_registered_model, new_model, tiny_version,  # noqa: F811
    django_capture_on_commit_callbacks,
):  # fmt: skip
    """ARTIFACTS_ROOT in an S3 bucket: the job uploads the adapter before its row names it, and
    a search process on a host without the file fetches it (checked against its sha256)."""
    import shutil
    from pathlib import Path

    from workers.serving.server import load_adapter_for

    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="prod", build=old, capture=django_capture_on_commit_callbacks)
    upgrade = _prepared(team=team, deployment=d, model=new_model)
    folder = Path(upgrade.adapter_path).parent
    shutil.rmtree(folder)  # this host no longer has it: as on a search replica
    adapter = {"upgrade": upgrade.pk, "kind": "orthogonal", "path": upgrade.adapter_path,
               "sha256": upgrade.adapter_sha256, "encoder": upgrade.adapter_encoder}  # fmt: skip
    matrix = load_adapter_for(adapter, dimension=64)
    assert matrix.shape == (64, 64) and (folder / "adapter.npy").exists()
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(64), atol=1e-4)


def test_index_params_the_new_model_cannot_hold_are_refused_naming_the_field(
    api, client, member, team, tiny_registered_model, new_model, tiny_version,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    """The old index keeps 48 Matryoshka dimensions; a 32-d new model is allowed with the
    linear adapter, but its re-embedding could not keep 48: refused at the start, and (for an
    upgrade begun before) at the re-embed as a message naming the field, never a 500."""
    from apps.indexes.models import ModelUpgrade
    from apps.indexes.upgrades import UpgradeError, model_upgrade_create, model_upgrade_reembed

    capture = django_capture_on_commit_callbacks
    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                     params={"dim": 48})  # fmt: skip
    d = _deploy(team=team, name="prod", build=old, capture=capture)
    type(new_model).objects.filter(pk=new_model.pk).update(dimension=32)
    new_model.refresh_from_db()
    with pytest.raises(UpgradeError, match=r"model: tiny-v2 \(32 dimensions\).*dim: 48"):
        model_upgrade_create(team=team, deployment=d, new_model=new_model,
                             adapter_kind="linear", enqueue=False)  # fmt: skip
    r = api("post", "/api/v1/deployments/prod/upgrades", {"model": new_model.pk,
                                                          "adapter": "linear"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"].startswith("model: tiny-v2")
    assert not ModelUpgrade.objects.exists()

    upgrade = ModelUpgrade.objects.create(
        team=team, deployment=d, old_index=old, new_model=new_model, adapter_kind="linear",
        split="test", status="succeeded",
    )  # fmt: skip
    with pytest.raises(UpgradeError, match="new_index: dim: 48 is more than the model's 32"):
        model_upgrade_reembed(upgrade=upgrade, enqueue=False)
    with capture(execute=False):
        r = api("post", f"/api/v1/upgrades/{upgrade.pk}/reembed")
    assert r.status_code == 400 and r.json()["error"].startswith("new_index: dim: 48")
    client.force_login(member)
    with capture(execute=False):
        page = client.post(reverse("indexes:upgrade_reembed", args=[upgrade.pk]), follow=True)
    assert page.status_code == 200 and "new_index: dim: 48" in page.content.decode()
    upgrade.refresh_from_db()
    assert upgrade.new_index is None and upgrade.old_evaluation is None  # nothing half-made
    # An evaluation's refusal is one too (here: a build stands, and the split is unknown).
    type(upgrade).objects.filter(pk=upgrade.pk).update(split="gone", new_index=old)
    with pytest.raises(UpgradeError, match="^old_evaluation: .*'gone'"):
        model_upgrade_reembed(upgrade=upgrade, enqueue=False)


def test_reembed_runs_a_failed_or_cancelled_evaluation_again(
    api, client, member, team, tiny_registered_model, new_model, judged_version,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    """A re-embedding whose build succeeded but one of whose evaluations failed is not stuck:
    the cutover says to re-embed, and re-embedding (page or API) starts only that evaluation
    again; the cutover then goes through."""
    from apps.indexes.upgrades import UpgradeError, model_upgrade_cutover, model_upgrade_reembed
    from apps.runs.models import Evaluation

    capture = django_capture_on_commit_callbacks
    old = build_sync(team=team, model=tiny_registered_model, version=judged_version)
    d = _deploy(team=team, name="prod", build=old, capture=capture)
    upgrade = _reembedded(_prepared(team=team, deployment=d, model=new_model))
    build, first_old, first_new = upgrade.new_index, upgrade.old_evaluation, upgrade.new_evaluation
    values = np.linspace(0.2, 0.9, 40)
    _judge(first_new, values[::-1])
    Evaluation.objects.filter(pk=first_old.pk).update(status="failed")
    upgrade.refresh_from_db()
    with pytest.raises(UpgradeError, match=r"verdict: .*\(failed, succeeded\); re-embed"):
        model_upgrade_cutover(upgrade=upgrade)
    body = api("get", f"/api/v1/upgrades/{upgrade.pk}").json()
    assert body["old_evaluation_status"] == "failed" and body["reembed_due"] == ["old_evaluation"]
    client.force_login(member)
    page = client.get(reverse("indexes:upgrade", args=[upgrade.pk])).content.decode()
    assert 'id="reembed-again"' in page and "Run the failed or cancelled evaluation again" in page

    with capture(execute=False):
        r = client.post(reverse("indexes:upgrade_reembed", args=[upgrade.pk]))
    assert r.status_code == 302
    upgrade.refresh_from_db()
    assert upgrade.new_index_id == build.pk and upgrade.new_evaluation_id == first_new.pk
    assert upgrade.old_evaluation_id != first_old.pk
    assert upgrade.old_evaluation.status == "pending"
    assert upgrade.old_evaluation.model_id == tiny_registered_model.pk
    page = client.get(reverse("indexes:upgrade", args=[upgrade.pk])).content.decode()
    assert 'id="reembed-again"' not in page
    # Nothing failed: a re-embed changes nothing.
    ids = (upgrade.old_evaluation_id, upgrade.new_evaluation_id)
    assert model_upgrade_reembed(upgrade=upgrade, enqueue=False).pk == build.pk
    upgrade.refresh_from_db()
    assert (upgrade.old_evaluation_id, upgrade.new_evaluation_id) == ids

    # A cancelled one, through the API: the same.
    second_old = upgrade.old_evaluation
    Evaluation.objects.filter(pk=first_new.pk).update(status="cancelled")
    with capture(execute=False):
        r = api("post", f"/api/v1/upgrades/{upgrade.pk}/reembed")
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["new_index"] == build.pk and body["old_evaluation"] == second_old.pk
    assert body["new_evaluation"] != first_new.pk and body["new_evaluation_status"] == "pending"
    assert body["reembed_due"] == []
    upgrade.refresh_from_db()
    _judge(upgrade.old_evaluation, values)
    _judge(upgrade.new_evaluation, values[::-1])
    with capture(execute=True):
        model_upgrade_cutover(upgrade=upgrade, user=member)
    upgrade.refresh_from_db()
    assert upgrade.cut_over_at is not None


def test_the_start_form_answers_a_bad_model_value_with_its_message(
    client, member, team, tiny_registered_model, tiny_version, django_capture_on_commit_callbacks
):
    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    _deploy(team=team, name="prod", build=old, capture=django_capture_on_commit_callbacks)
    client.force_login(member)
    for value in ("abc", "", "1.5", "-"):
        r = client.post(reverse("indexes:upgrade_start", args=["prod"]), {"model": value},
                        follow=True)  # fmt: skip
        assert r.status_code == 200, value
        assert "model: choose one of your team&#x27;s embedding models." in r.content.decode()


def test_undeploying_deletes_the_upgrades_adapter_folders_after_commit(
    team, member, tiny_registered_model, new_model, tiny_version,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from pathlib import Path

    from apps.indexes.models import ModelUpgrade
    from apps.indexes.services import deployment_undeploy

    capture = django_capture_on_commit_callbacks
    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="prod", build=old, capture=capture)
    upgrade = _prepared(team=team, deployment=d, model=new_model)
    folder = Path(upgrade.adapter_path).parent
    assert folder.is_dir()
    with capture(execute=False) as callbacks:
        deployment_undeploy(deployment=d, user=member)
    assert folder.is_dir()  # not before the commit
    for callback in callbacks:
        callback()
    assert not ModelUpgrade.objects.filter(pk=upgrade.pk).exists()
    assert not folder.exists()
