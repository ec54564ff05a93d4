"""Index builds through the product path: service → the worker's task code → measured row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from tests.apps.indexes.conftest import build_sync

pytestmark = pytest.mark.django_db


def test_flat_build_is_exact_and_reports_the_models_own_ndcg(team, tiny_registered_model,
                                                             tiny_version, evaluation):  # fmt: skip
    from workers.tasks.evaluation import evaluate

    evaluate.run(evaluation.pk)
    evaluation.refresh_from_db()
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    m = build.metrics
    assert m["recall_at_10"] == pytest.approx(1.0)
    # Flat is exact search: the index's nDCG@10 is the model's, equal to the evaluation's.
    assert m["ndcg_at_10"] == pytest.approx(evaluation.metrics["ndcg@10"], abs=1e-9)
    assert m["exact_ndcg_at_10"] == pytest.approx(evaluation.metrics["ndcg@10"], abs=1e-9)
    assert m["ndcg_loss"] == pytest.approx(0.0, abs=1e-9)
    assert m["queries"] == 3 and build.split == "test"
    assert m["latency_p50_ms"] > 0 and m["latency_p99_ms"] >= m["latency_p50_ms"]
    assert m["size_bytes"] > 0 and m["bytes_per_vector"] > 0
    # The evaluation encoded the documents: the build read them from the cache.
    assert build.cache_hit and build.embedding_key == evaluation.embedding_key
    folder = Path(build.path)
    assert (folder / "ids.json").exists() and (folder / "encoder.json").exists()
    encoder = json.loads((folder / "encoder.json").read_text())
    assert encoder == build.encoder
    assert encoder["model_id"] == tiny_registered_model.pk and encoder["truncate_dim"] is None


def test_cache_hit_never_loads_the_model(team, tiny_registered_model, tiny_version, monkeypatch):
    first = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    assert not first.cache_hit

    def no_model(**kwargs):
        raise AssertionError("the model was loaded although the cache holds every vector")

    monkeypatch.setattr("workers.ml.evaluate.load_encoder", no_model)
    second = build_sync(
        team=team, model=tiny_registered_model, version=tiny_version, index_type="hnsw"
    )
    assert second.cache_hit and second.embedding_key == first.embedding_key


def test_matryoshka_and_binary_builds_record_their_encoder(team, tiny_registered_model,
                                                           tiny_version):  # fmt: skip
    build = build_sync(
        team=team,
        model=tiny_registered_model,
        version=tiny_version,
        index_type="binary",
        params={"dim": 32, "rescore": 4},
    )
    assert build.dimension == 32 and build.encoder["truncate_dim"] == 32
    assert "first 32 dims" in build.label and "re-score ×4" in build.label
    assert build.metrics["recall_at_10"] > 0


def test_bad_parameters_are_a_message_and_no_job(team, tiny_registered_model, tiny_version):
    from apps.indexes.models import IndexBuild
    from apps.indexes.services import IndexBuildError, index_build_create

    with pytest.raises(IndexBuildError, match="type"):
        index_build_create(team=team, model=tiny_registered_model, dataset_version=tiny_version,
                           index_type="annoy", enqueue=False)  # fmt: skip
    with pytest.raises(IndexBuildError, match="dim"):
        index_build_create(team=team, model=tiny_registered_model, dataset_version=tiny_version,
                           index_type="flat", params={"dim": 100000}, enqueue=False)  # fmt: skip
    with pytest.raises(IndexBuildError, match="hnsw_m"):
        index_build_create(team=team, model=tiny_registered_model, dataset_version=tiny_version,
                           index_type="hnsw", params={"hnsw_m": -3}, enqueue=False)  # fmt: skip
    assert not IndexBuild.objects.exists()


def test_other_teams_model_cannot_be_indexed(team, other_team, tiny_model_path, tiny_version):
    from apps.indexes.services import IndexBuildError, index_build_create
    from apps.registry.services import embedding_model_register

    foreign = embedding_model_register(team=other_team, name="x", path=str(tiny_model_path))
    with pytest.raises(IndexBuildError, match="same team"):
        index_build_create(team=team, model=foreign, dataset_version=tiny_version,
                           index_type="flat", enqueue=False)  # fmt: skip


def test_new_index_page_builds_and_detail_shows_metrics_and_chart(client, member, team,
                                                                 tiny_registered_model,
                                                                 tiny_version,
                                                                 monkeypatch):  # fmt: skip
    from apps.indexes.models import IndexBuild

    sent = []
    monkeypatch.setattr("apps.indexes.services.job_enqueue", lambda job, task: sent.append(job.pk))
    client.force_login(member)
    page = client.get(reverse("indexes:new"))
    assert page.status_code == 200 and b'data-types="hnsw binary_hnsw"' in page.content
    response = client.post(
        reverse("indexes:new"),
        {
            "model": tiny_registered_model.pk,
            "dataset_version": tiny_version.pk,
            "index_type": "hnsw",
            "hnsw_m": 16,
            "ef_search": 32,
        },
    )
    build = IndexBuild.objects.get()
    assert response.status_code == 302 and sent == [build.pk]
    assert build.params == {"hnsw_m": 16, "ef_search": 32}
    from workers.tasks.indexing import build_index

    build_index.run(build.pk)
    build_sync(team=team, model=tiny_registered_model, version=tiny_version)  # a second point
    page = client.get(reverse("indexes:detail", args=[build.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-metric="recall_at_10"' in html and 'id="tradeoff"' in html
    assert html.count('class="front"') == 2  # both panels draw the Pareto front
    assert "HNSW · M=16 ef=32" in html
    listing = client.get(reverse("indexes:list")).content.decode()
    assert f'href="/indexes/{build.pk}/"' in listing


def test_another_team_gets_404_and_a_viewer_cannot_build(client, outsider, viewer, team,
                                                        tiny_registered_model,
                                                        tiny_version):  # fmt: skip
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    client.force_login(outsider)
    assert client.get(reverse("indexes:detail", args=[build.pk])).status_code == 404
    client.force_login(viewer)
    assert client.get(reverse("indexes:detail", args=[build.pk])).status_code == 200
    assert client.post(reverse("indexes:new"), {}).status_code == 403
    assert client.post(reverse("indexes:deploy", args=[build.pk]), {"name": "x"}).status_code == 403


def test_build_index_command_prints_json(team, tiny_registered_model, tiny_version):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(
        "build_index",
        "--model", str(tiny_registered_model.pk),
        "--dataset-version", str(tiny_version.pk),
        "--type", "ivf_flat",
        "--param", "nlist=2",
        "--param", "nprobe=2",
        "--sync",
        stdout=out,
    )  # fmt: skip
    payload = json.loads(out.getvalue())
    assert payload["status"] == "succeeded" and payload["type"] == "ivf_flat"
    assert payload["spec"]["nlist"] == 2 and payload["metrics"]["recall_at_10"] == 1.0


def test_page_and_command_take_the_configs_bounds_defaults_and_names(
    client, member, tiny_registered_model, tiny_version, monkeypatch, capsys
):
    from django.core.management import call_command

    from apps.indexes.models import IndexBuild

    monkeypatch.setattr("apps.indexes.services.job_enqueue", lambda job, task: None)
    client.force_login(member)
    page = client.get(reverse("indexes:new")).content.decode()
    assert "HNSW: links per node; default 32" in page and 'max="256"' in page
    body = {"model": tiny_registered_model.pk, "dataset_version": tiny_version.pk}
    response = client.post(reverse("indexes:new"), {**body, "index_type": "hnsw", "hnsw_m": 300})
    assert response.status_code == 200 and list(response.context["form"].errors) == ["hnsw_m"]
    response = client.post(reverse("indexes:new"), {**body, "index_type": "flat", "dim": 64,
                                                    "pca_dim": 128})  # fmt: skip
    assert "pca_dim: 128 exceeds the truncated dimension 64" in response.content.decode()
    assert not IndexBuild.objects.exists()

    args = ["--model", str(tiny_registered_model.pk), "--dataset-version", str(tiny_version.pk)]
    with pytest.raises(SystemExit) as exited:
        call_command("build_index", *args, "--type", "hnsw", "--param", "hnsw_m=300",
                     "--param", "colour=red", "--sync")  # fmt: skip
    err = capsys.readouterr().err
    assert exited.value.code == 2 and not IndexBuild.objects.exists()
    assert "--param hnsw_m: Input should be less than or equal to 256" in err
    assert "--param colour: unknown parameter (expected some of dim, pca_dim" in err


def test_the_api_schema_lists_every_parameter_with_its_default_and_bounds(client):
    from workers.common.configs.indexing import IndexParams

    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    properties = schemas["IndexParams"]["properties"]
    assert set(properties) == set(IndexParams.model_fields)
    assert all(p.get("description") for p in properties.values())
    assert (properties["hnsw_m"]["default"], properties["hnsw_m"]["maximum"]) == (32, 256)
    assert properties["nlist"].get("default") is None and properties["nlist"]["anyOf"]
    assert schemas["IndexParams"]["additionalProperties"] is False


def test_a_build_records_the_given_params_and_the_full_spec(team, tiny_registered_model,
                                                            tiny_version):  # fmt: skip
    from apps.indexes.services import index_build_create
    from workers.common.configs.indexing import IndexParams

    build = index_build_create(team=team, model=tiny_registered_model,
                               dataset_version=tiny_version, index_type="ivf_pq",
                               params={"nprobe": "4", "dim": ""}, enqueue=False)  # fmt: skip
    assert build.params == {"nprobe": 4}
    # The faiss spec: every parameter but bm25 and sparse_model (indexes beside it, not faiss
    # settings).
    spec = IndexParams().model_dump(exclude={"bm25", "sparse_model"})
    assert build.spec == {**spec, "type": "ivf_pq", "nprobe": 4}


def test_a_cancel_before_the_work_ends_the_row_as_cancelled(team, tiny_registered_model,
                                                            tiny_version):  # fmt: skip
    from apps.indexes.models import IndexBuild
    from apps.indexes.services import index_build_create, index_folder
    from workers.tasks.indexing import index_build_execute
    from workers.tasks.runtime import job_claim, job_run

    build = index_build_create(team=team, model=tiny_registered_model,
                               dataset_version=tiny_version, index_type="flat",
                               enqueue=False)  # fmt: skip
    build = job_claim(model=IndexBuild, pk=build.pk)
    IndexBuild.objects.filter(pk=build.pk).update(cancel_requested=True)
    job_run(job=build, work=lambda report: index_build_execute(build=build, report=report))
    build.refresh_from_db()
    assert build.status == "cancelled"
    assert not index_folder(build=build).exists()


def test_a_cancel_after_the_files_are_written_removes_them(team, tiny_registered_model,
                                                           tiny_version):  # fmt: skip
    from apps.indexes.services import index_build_create, index_folder
    from workers.tasks.indexing import index_build_execute
    from workers.tasks.runtime import JobCancelled

    build = index_build_create(team=team, model=tiny_registered_model,
                               dataset_version=tiny_version, index_type="hnsw",
                               enqueue=False)  # fmt: skip
    seen = []

    class Report:
        def __call__(self, stage, done=0, total=0):
            seen.append(stage)
            if stage == "measuring":
                assert index_folder(build=build).exists()  # the index is on disk now
                raise JobCancelled()

        def check(self):
            pass

    with pytest.raises(JobCancelled):
        index_build_execute(build=build, report=Report())
    assert "building" in seen and not index_folder(build=build).exists()


def test_delete_refuses_a_deployed_index_then_removes_row_and_files(
    client,
    member,
    team,
    tiny_registered_model,
    tiny_version,
    django_capture_on_commit_callbacks,
    settings,
    tmp_path,
):
    from apps.indexes.models import DeploymentEvent, IndexBuild
    from apps.indexes.services import deployment_deploy, deployment_undeploy

    settings.SEARCH_URL = "http://127.0.0.1:9"  # no search process: deploys still record
    settings.SEARCH_MANIFEST = tmp_path / "manifest.json"
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    folder = Path(build.path)
    d = deployment_deploy(team=team, name="keep", index=build)
    client.force_login(member)
    url = reverse("indexes:delete", args=[build.pk])
    client.post(url)
    assert IndexBuild.objects.filter(pk=build.pk).exists() and folder.exists()
    deployment_undeploy(deployment=d)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302
    assert not IndexBuild.objects.filter(pk=build.pk).exists() and not folder.exists()
    events = DeploymentEvent.objects.filter(name="keep").order_by("at", "pk")
    # The log stays whole: the deleted index's number is still there, only the link is gone.
    assert [(e.action, e.from_number, e.to_number, e.to_index_id) for e in events] == [
        ("deploy", None, build.pk, None),
        ("undeploy", build.pk, None, None),
    ]
    page = client.get(reverse("indexes:list")).content.decode()
    assert f'#{build.pk} <span class="muted small">(deleted)</span>' in page


def test_the_periodic_publish_repairs_a_missing_or_stale_manifest(team, tiny_registered_model,
                                                                  tiny_version, settings,
                                                                  tmp_path):  # fmt: skip
    from apps.indexes.models import Deployment
    from workers.tasks.indexing import publish_deployments

    settings.SEARCH_MANIFEST = tmp_path / "serving" / "deployments.json"
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    # As if the web died after the commit and before its on_commit publish.
    d = Deployment.objects.create(team=team, name="orphan", index=build, encoder=build.encoder)
    publish_deployments.run()
    entry = json.loads(settings.SEARCH_MANIFEST.read_text())["deployments"][d.serving_key]
    assert entry["index_id"] == build.pk and entry["path"] == build.path
    stamp = settings.SEARCH_MANIFEST.stat().st_mtime_ns
    publish_deployments.run()  # nothing changed: the file is not rewritten
    assert settings.SEARCH_MANIFEST.stat().st_mtime_ns == stamp


def test_admin_lists_index_objects_and_refuses_edits(client, team, tiny_registered_model,
                                                     tiny_version, django_user_model):  # fmt: skip
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    admin = django_user_model.objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(admin)
    assert client.get("/admin/indexes/indexbuild/").status_code == 200
    change = client.post(f"/admin/indexes/indexbuild/{build.pk}/change/", {"index_type": "hnsw"})
    assert change.status_code == 403


def test_build_index_command_without_a_worker_times_out_with_the_jobs_status(
    team, tiny_registered_model, tiny_version, capsys
):
    from django.core.management import call_command

    with pytest.raises(SystemExit) as exit_:
        call_command("build_index", "--model", str(tiny_registered_model.pk),
                     "--dataset-version", str(tiny_version.pk), "--type", "flat",
                     "--timeout", "0")  # fmt: skip
    assert exit_.value.code == 1
    out = capsys.readouterr()
    payload = json.loads(out.out)
    assert payload["status"] == "pending" and payload["metrics"] == {}
    assert f"index {payload['index']} queued" in out.err


def test_deploy_command_deploys_reports_serving_state_and_undeploys(
    team, other_team, tiny_registered_model, tiny_version, settings, tmp_path, capsys
):
    from django.core.management import call_command

    from apps.indexes.models import Deployment, DeploymentEvent

    settings.SEARCH_URL = "http://127.0.0.1:9"  # no search process: the deploy still records
    settings.SEARCH_MANIFEST = tmp_path / "manifest.json"
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    call_command("deploy", "cli", "--index", str(build.pk))
    payload = json.loads(capsys.readouterr().out)
    assert payload == {"name": "cli", "index": build.pk, "serving": "down", "live_index": None,
                       "error": None}  # fmt: skip
    assert Deployment.objects.get(name="cli").index == build
    # The same name in another team makes --undeploy ambiguous without --team.
    Deployment.objects.create(team=other_team, name="cli", index=build, encoder={})
    with pytest.raises(SystemExit) as exit_:
        call_command("deploy", "cli", "--undeploy")
    assert exit_.value.code == 2 and "pass --team" in capsys.readouterr().err
    call_command("deploy", "cli", "--undeploy", "--team", team.slug)
    assert not Deployment.objects.filter(team=team, name="cli").exists()
    assert list(DeploymentEvent.objects.filter(team=team).values_list("action", flat=True)) == [
        "undeploy", "deploy"]  # fmt: skip
