"""A deployment's relevance calibration: the job on the deployed index, staleness and the refit
on swap, the pages, the API, the search process's ``relevance`` and ``min_relevance``, and
another team's deployment or calibration as a 404."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from django.urls import reverse

from tests.apps.indexes.conftest import build_sync

pytestmark = pytest.mark.django_db


def _deploy(*, team, name, build, capture, user=None):
    from apps.indexes.services import deployment_deploy

    with capture(execute=True):
        return deployment_deploy(team=team, name=name, index=build, user=user)


def _fit(*, team, deployment, **params):
    """A calibration fitted in this process by the worker's own task code."""
    from apps.indexes.calibrations import calibration_create
    from workers.tasks.calibration import calibrate

    job = calibration_create(team=team, deployment=deployment, enqueue=False,
                             params={"split": "test", "depth": 10, **params})  # fmt: skip
    calibrate.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


def _token(user, team):
    from apps.accounts.services import api_token_create

    return api_token_create(user=user, team=team, name="t")[1]


def test_fitted_on_the_served_index_then_stale_after_a_swap_and_refitted(
    client,
    member,
    team,
    tiny_registered_model,
    tiny_version,
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    from apps.indexes.calibrations import calibration_state
    from apps.indexes.models import Calibration
    from apps.indexes.services import deployment_deploy, deployments_manifest
    from workers.tasks.calibration import calibrate

    capture = django_capture_on_commit_callbacks
    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    hnsw = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                      index_type="hnsw")  # fmt: skip
    d = _deploy(team=team, name="prod", build=flat, capture=capture)
    assert deployments_manifest()[d.serving_key]["calibration"] == {}
    job = _fit(team=team, deployment=d, method="cosine_adapter")
    assert job.index_id == flat.pk and job.model["method"] == "cosine_adapter"
    r = job.results
    assert 0 <= r["ece"] <= 1 and len(r["reliability"]) == 10
    c = r["counts"]
    # The test split's 3 judged queries: fitted on, chosen on and measured on, none twice.
    assert c["fit_queries"] + c["calibration_queries"] + c["held_out_queries"] == 3
    assert min(c["fit_queries"], c["calibration_queries"], c["held_out_queries"]) == 1
    assert sum(b["count"] for b in r["reliability"]) == c["held_out_hits"] == 8  # 8 documents
    for side in ("calibrated", "raw"):
        assert set(r["held_out"][side]) >= {"precision", "recall", "threshold", "abstain"}
    entry = deployments_manifest()[d.serving_key]["calibration"]
    assert entry == {"id": job.pk, "model": job.model, "threshold": job.threshold}
    # Queries through a model upgrade's adapter are another model's: no relevance meanwhile.
    type(d).objects.filter(pk=d.pk).update(adapter={"upgrade": 1})
    assert deployments_manifest()[d.serving_key]["calibration"] == {}
    client.force_login(member)
    page = client.get(reverse("indexes:deployment", args=["prod"])).content.decode()
    assert 'id="calibration-adapter"' in page
    type(d).objects.filter(pk=d.pk).update(adapter={})

    # The swap: the calibration is stale (not served), and a refit on the new index is queued
    # once the swap has committed.
    sent = []
    monkeypatch.setattr(calibrate, "apply_async", lambda *a, **kw: sent.append((a, kw)))
    with capture() as callbacks:
        deployment_deploy(team=team, name="prod", index=hnsw)
    assert not Calibration.objects.filter(refit_of=job).exists()  # not inside the swap
    with capture(execute=True):
        for callback in callbacks:
            callback()
    refit = Calibration.objects.get(refit_of=job)
    assert refit.status == "pending" and refit.index_id == hnsw.pk
    assert refit.params == job.params and refit.celery_task_name == calibrate.name
    assert sent == [((), {"args": [refit.pk], "kwargs": {}, "task_id": refit.celery_task_id})]
    d.refresh_from_db()
    state = calibration_state(deployment=d)
    assert state["stale"] and state["current"] == job and state["pending"] == refit
    assert deployments_manifest()[d.serving_key]["calibration"] == {}
    client.force_login(member)
    page = client.get(reverse("indexes:deployment", args=["prod"])).content.decode()
    assert 'id="calibration-stale"' in page and f"#{refit.pk}" in page
    page = client.get(reverse("indexes:calibration", args=["prod", job.pk])).content.decode()
    assert "Stale:" in page and f"now serves index #{hnsw.pk}" in page
    assert Calibration.objects.filter(deployment=d).count() == 2

    calibrate.run(refit.pk)
    refit.refresh_from_db()
    assert refit.status == "succeeded"
    assert deployments_manifest()[d.serving_key]["calibration"]["id"] == refit.pk
    assert not calibration_state(deployment=d)["stale"]


def test_calibration_page_fits_and_shows_results(client, member, team, tiny_registered_model,
                                                 tiny_version, django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    from apps.indexes.models import Calibration

    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="prod", build=flat, capture=django_capture_on_commit_callbacks)
    client.force_login(member)
    url = reverse("indexes:calibration_new", args=["prod"])
    page = client.get(url).content.decode()
    assert 'id="calibration-form"' in page and "No calibration yet" in page
    # A split the version does not have is refused on the field; nothing is queued.
    r = client.post(url, {"split": "test", "held_out_split": "test", "method": "logistic",
                          "target": "precision", "target_value": "0.8", "depth": "10"})  # fmt: skip
    assert r.status_code == 200 and "another split" in r.content.decode()
    r = client.post(url, {"split": "test", "method": "isotonic", "target": "recall",
                          "target_value": "0.9", "conformal": "on", "depth": "10"})  # fmt: skip
    job = Calibration.objects.get(deployment=d)
    assert r.status_code == 302 and r["Location"].endswith(f"/calibration/{job.pk}/")
    assert job.params["conformal"] and job.params["target"] == "recall"
    from workers.tasks.calibration import calibrate

    calibrate.run(job.pk)
    page = client.get(r["Location"]).content.decode()
    assert 'id="ece"' in page and 'id="reliability-chart"' in page
    assert 'id="threshold-table"' in page and "single global raw-score threshold" in page
    assert 'id="conformal-guarantee"' in page and "exchangeable" in page
    # The status partial for the page's own poll.
    part = client.get(r["Location"], HTTP_HX_REQUEST="true", HTTP_HX_TARGET="calibration-status")
    assert part.content.decode().lstrip().startswith('<div id="calibration-status"')
    # The job ended: the "in use" line above is refreshed out of band.
    assert 'id="calibration-current" hx-swap-oob="true"' in part.content.decode()
    assert 'id="calibration-link"' in client.get(reverse("indexes:deployment", args=["prod"])
                                                  ).content.decode()  # fmt: skip


def test_another_teams_deployment_or_calibration_is_a_404(client, member, outsider, team,
                                                          other_team, tiny_registered_model,
                                                          tiny_version,
                                                          django_capture_on_commit_callbacks):  # fmt: skip  # noqa: E501
    capture = django_capture_on_commit_callbacks
    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    d = _deploy(team=team, name="prod", build=flat, capture=capture)
    job = _fit(team=team, deployment=d)
    client.force_login(outsider)
    for url in (reverse("indexes:calibration_new", args=["prod"]),
                reverse("indexes:calibration", args=["prod", job.pk])):  # fmt: skip
        assert client.get(url).status_code == 404
    assert client.post(reverse("indexes:calibration_new", args=["prod"]),
                       {"split": "test"}).status_code == 404  # fmt: skip
    assert client.post(reverse("indexes:calibration_cancel", args=["prod", job.pk])
                       ).status_code == 404  # fmt: skip
    token = _token(outsider, other_team)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    detail = reverse("api:calibration_detail", kwargs={"name": "prod", "pk": job.pk})
    for url in (reverse("api:calibrations", kwargs={"name": "prod"}), detail):
        assert client.get(url, **auth).status_code == 404
    r = client.post(reverse("api:calibration_create", kwargs={"name": "prod"}),
                    {"split": "test"}, content_type="application/json", **auth)  # fmt: skip
    assert r.status_code == 404
    assert client.get(reverse("indexes:calibration_by_id", args=[job.pk])).status_code == 404
    # The team's own member sees it, also by its number alone (the jobs list's link).
    client.force_login(member)
    assert client.get(reverse("indexes:calibration", args=["prod", job.pk])).status_code == 200
    r = client.get(reverse("indexes:calibration_by_id", args=[job.pk]))
    assert r.status_code == 302 and r["Location"] == reverse("indexes:calibration",
                                                             args=["prod", job.pk])  # fmt: skip


def test_api_fits_a_calibration_and_refuses_bad_values_naming_the_field(
    client, owner, team, tiny_registered_model, tiny_version, django_capture_on_commit_callbacks
):
    from workers.tasks.calibration import calibrate

    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    _deploy(team=team, name="prod", build=flat, capture=django_capture_on_commit_callbacks)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {_token(owner, team)}"}
    url = reverse("api:calibration_create", kwargs={"name": "prod"})

    def post(body):
        return client.post(url, body, content_type="application/json", **auth)

    r = post({"split": "nope"})
    assert r.status_code == 400 and r.json()["error"].startswith("split:")
    r = post({"split": "test", "target_value": 2})
    assert r.status_code == 422 and "target_value" in r.json()["error"]
    r = post({"split": "test", "conformal": True})
    assert r.status_code == 422 and "conformal: the conformal threshold" in r.json()["error"]
    r = post({"split": "test", "methd": "logistic"})
    assert r.status_code == 422 and "methd" in r.json()["error"]
    r = post({"split": "test", "method": "logistic", "depth": 10})
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["status"] == "pending" and body["index"] == flat.pk
    calibrate.run(body["id"])
    one = client.get(r["Location"], **auth).json()
    assert one["status"] == "succeeded" and one["results"]["ece"] is not None
    assert not one["stale"] and "path" not in json.dumps(one)
    listed = client.get(reverse("api:calibrations", kwargs={"name": "prod"}), **auth).json()
    assert [c["id"] for c in listed["calibrations"]] == [body["id"]]
    deployment = client.get(reverse("api:deployment_detail", kwargs={"name": "prod"}),
                            **auth).json()  # fmt: skip
    assert deployment["calibration"]["id"] == body["id"]
    assert deployment["calibration"]["stale"] is False
    # Every new field is in the API's schema.
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "min_relevance" in schemas["SearchIn"]["properties"]
    assert "relevance" in schemas["Hit"]["properties"]
    assert "calibration" in schemas["DeploymentOut"]["properties"]
    assert {"method", "target", "target_value", "conformal"} <= set(
        schemas["CalibrationConfig"]["properties"]
    )
    paths = client.get("/api/openapi.json").json()["paths"]
    assert "/api/v1/deployments/{name}/calibrations" in paths


def _raw_search(serving, body: dict) -> tuple[int, dict]:
    from workers.serving.auth import bearer

    req = urllib.request.Request(serving.url + "/search", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                                         **bearer(serving.token)})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.django_db(transaction=True)  # the search process reads what the job committed
def test_search_process_returns_relevance_and_honours_min_relevance(
    client, member, owner, team, tiny_registered_model, tiny_version, serving,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from apps.indexes.selectors import SearchFailed, deployment_query
    from workers.ml.calibration import relevance_rows

    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version,
                       params={"bm25": True})  # fmt: skip
    d = _deploy(team=team, name="live", build=build, capture=django_capture_on_commit_callbacks)
    serving.wait_serving(d.serving_key, build.pk)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {_token(owner, team)}"}
    url = reverse("api:search", kwargs={"name": "live"})

    def search(body):
        return client.post(url, body, content_type="application/json", **auth)

    # Not calibrated yet: no relevance, and min_relevance is refused naming it.
    r = search({"query": "red planet", "k": 3})
    assert r.status_code == 200 and r.json()["results"][0]["hits"][0]["relevance"] is None
    r = search({"query": "red planet", "min_relevance": 0.5})
    assert r.status_code == 400 and r.json()["error"].startswith("min_relevance:")
    assert "no current relevance calibration" in r.json()["error"]

    job = _fit(team=team, deployment=d, method="logistic")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # published by the job; the process follows the file
        live = serving.health()["deployments"].get(d.serving_key) or {}
        if (live.get("calibration") or {}).get("id") == job.pk:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"calibration #{job.pk} never served: {serving.health()}")

    full = search({"query": "red planet", "k": 8}).json()["results"][0]["hits"]
    expected = relevance_rows(job.model, [[h["score"] for h in full]])[0]
    assert [h["relevance"] for h in full] == pytest.approx(expected, abs=1e-6)
    # With k = 3 the relevance is the same: the features read the query's first 10 hits.
    top = search({"query": "red planet", "k": 3}).json()["results"][0]["hits"]
    assert [h["relevance"] for h in top] == pytest.approx(expected[:3], abs=1e-6)
    served = [h["relevance"] for h in full]
    cut = sorted(served)[len(served) // 2]
    kept = search({"query": "red planet", "k": 8, "min_relevance": cut}).json()
    hits = kept["results"][0]["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in full if h["relevance"] >= cut]
    assert len(hits) < len(full)
    # Bad values, named: the API's schema, the web's own check and the search process's.
    r = search({"query": "red planet", "min_relevance": 1.5})
    assert r.status_code == 422 and "min_relevance" in r.json()["error"]
    with pytest.raises(SearchFailed, match="^min_relevance:") as caught:
        deployment_query(team=team, name="live", queries=["x"], min_relevance=-1)
    assert caught.value.status == 400
    status, body = _raw_search(serving, {"deployment": d.serving_key, "queries": ["x"],
                                         "min_relevance": "high"})  # fmt: skip
    assert status == 400 and body["error"].startswith("min_relevance:")
    # Calibrated on dense scores: another mode gives no relevance and refuses min_relevance.
    r = search({"query": "red planet", "mode": "bm25"})
    assert r.status_code == 200 and r.json()["results"][0]["hits"][0]["relevance"] is None
    r = search({"query": "red planet", "mode": "bm25", "min_relevance": 0.2})
    assert r.status_code == 400 and "mode dense" in r.json()["error"]

    # The console marks the hits the calibration's threshold would cut.
    client.force_login(member)
    query = {"d": "live", "q": "red planet", "k": 8}
    html = client.get(reverse("indexes:console"), query, HTTP_HX_REQUEST="true",
                      HTTP_HX_TARGET="results").content.decode()  # fmt: skip
    assert "P(rel)" in html and 'class="small calibration-cut"' in html
    threshold = job.threshold
    would_cut = sum(p < threshold for p in expected) if threshold is not None else len(expected)
    assert html.count('class="badge cut-badge"') == would_cut


def test_calibrate_command_fits_and_names_bad_options(team, tiny_registered_model, tiny_version,
                                                      django_capture_on_commit_callbacks, capsys):  # fmt: skip  # noqa: E501
    from io import StringIO

    from django.core.management import call_command

    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    _deploy(team=team, name="prod", build=flat, capture=django_capture_on_commit_callbacks)
    out = StringIO()
    call_command("calibrate", "prod", "--split", "test", "--method", "isotonic", "--depth", "10",
                 "--target", "recall", "--target-value", "0.9", "--conformal", "--sync",
                 stdout=out)  # fmt: skip
    got = json.loads(out.getvalue())
    assert got["status"] == "succeeded" and got["method"] == "isotonic"
    assert got["index"] == flat.pk and set(got["held_out"]) == {"calibrated", "raw"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        call_command("calibrate", "prod", "--split", "nope", "--sync")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("--split: ")


def test_a_swap_to_data_without_the_split_queues_no_refit_and_the_page_says_why(
    client, member, team, tiny_registered_model, tiny_version, tmp_path,
    django_capture_on_commit_callbacks, monkeypatch,
):  # fmt: skip
    from apps.datasets.services import dataset_import_beir
    from apps.indexes.models import Calibration
    from tests.conftest import TINY_QRELS, write_beir
    from workers.tasks.calibration import calibrate

    capture = django_capture_on_commit_callbacks
    flat = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    folder = write_beir(tmp_path / "dev-only", qrels={"dev": TINY_QRELS["test"]})
    other = dataset_import_beir(team=team, name="dev-only", path=folder).version
    moved = build_sync(team=team, model=tiny_registered_model, version=other)
    d = _deploy(team=team, name="prod", build=flat, capture=capture)
    job = _fit(team=team, deployment=d)
    monkeypatch.setattr(calibrate, "apply_async", lambda *a, **kw: None)
    _deploy(team=team, name="prod", build=moved, capture=capture)
    assert not Calibration.objects.filter(refit_of=job).exists()  # it could only fail
    client.force_login(member)
    page = client.get(reverse("indexes:deployment", args=["prod"])).content.decode()
    assert 'id="calibration-stale"' in page and 'id="refit-problem"' in page
    assert "has no judged split &#x27;test&#x27;" in page
