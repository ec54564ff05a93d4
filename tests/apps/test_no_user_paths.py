"""No user input names a server path or another team's object, for every job kind.

The attack this guards against: a member of team B posted a training run with
``options.base_model_path`` set to team A's run folder and downloaded A's weights. Every job
kind is tried with a path, ``..``, an absolute path and another team's id, through the API, the
service, the command and the page; each is refused by name and nothing is created.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client

from apps.accounts.services import api_token_create
from apps.datasets.curation import CurationError, curation_create
from apps.datasets.models import CurationJob
from apps.datasets.services import dataset_import_beir, dataset_version_pairs_from_qrels
from apps.indexes.models import IndexBuild
from apps.registry.services import embedding_model_register
from apps.runs.models import Evaluation, TrainingRun
from apps.runs.training import TrainingError, training_run_create

pytestmark = pytest.mark.django_db

PATHS = ["/etc", "../../artifacts/runs/1/model", "/nonexistent", "runs/1/model"]


@pytest.fixture
def pairs(tiny_version):
    return dataset_version_pairs_from_qrels(version=tiny_version, split="test").version


@pytest.fixture
def foreign(other_team, tiny_model_path, beir_folder):
    """Team B's model and version: what a member of team A must never reach."""
    model = embedding_model_register(team=other_team, name="theirs", path=str(tiny_model_path))
    version = dataset_import_beir(team=other_team, name="theirs", path=beir_folder).version
    return model, version


@pytest.fixture
def api(team, member, monkeypatch):
    for task in ("training.train", "evaluation.evaluate", "indexing.build_index"):
        monkeypatch.setattr(f"workers.tasks.{task}.apply_async", lambda *a, **k: None)
    _, raw = api_token_create(team=team, user=member, name="ci")
    client = Client(enforce_csrf_checks=True)

    def post(path: str, body: dict):
        return client.post(
            path, json.dumps(body), content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )  # fmt: skip

    return post


def _counts() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (TrainingRun, Evaluation, IndexBuild, CurationJob))


# --- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["base_model_path", "guide_model_path", "layout"])
@pytest.mark.parametrize("value", PATHS)
def test_training_api_refuses_a_folder_in_options(api, tiny_registered_model, pairs, field, value):
    before = _counts()
    body = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk,
            "options": {"max_steps": 1, field: value}}  # fmt: skip
    response = api("/api/v1/training-runs", body)
    assert response.status_code == 422, response.content
    assert response["Content-Type"] == "application/json"
    assert any(field in p and "unknown field" in p for p in response.json()["problems"])
    assert _counts() == before


def test_training_api_refuses_another_teams_models_and_data(
    api, tiny_registered_model, pairs, foreign
):
    model, version = foreign
    before = _counts()
    base = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk}
    for body in (
        {**base, "base_model": model.pk},
        {**base, "train_version": version.pk},
        {**base, "eval_version": version.pk},
        {**base, "guide_model": model.pk, "options": {"loss": "gist"}},
    ):
        response = api("/api/v1/training-runs", body)
        assert response.status_code == 404, (body, response.content)
        assert "/" not in response.json()["error"].replace("no such", "")
    assert _counts() == before


def test_training_api_unknown_top_level_field_is_named(api, tiny_registered_model, pairs):
    body = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk,
            "model_path": "/etc"}  # fmt: skip
    response = api("/api/v1/training-runs", body)
    assert response.status_code == 422
    assert "model_path" in response.json()["error"]


def test_training_api_guide_model_by_id_of_the_team(api, team, tiny_registered_model, pairs):
    guide = embedding_model_register(team=team, name="guide", path=tiny_registered_model.path)
    body = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk,
            "guide_model": guide.pk, "options": {"loss": "gist", "max_steps": 1}}  # fmt: skip
    response = api("/api/v1/training-runs", body)
    assert response.status_code == 202, response.content
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.config["guide_model_path"] == guide.path
    # The API shows no server folder, neither the base's nor the guide's.
    assert not any(k.endswith("_path") for k in response.json()["config"])
    assert guide.path not in response.content.decode()
    missing = api("/api/v1/training-runs", {**body, "guide_model": None})
    assert missing.status_code == 400 and "guide_model" in missing.json()["error"]


def test_training_service_refuses_paths_and_foreign_objects(
    team, tiny_registered_model, pairs, foreign
):
    model, _ = foreign
    for options in ({"base_model_path": "/etc"}, {"guide_model_path": "../x"}, {"nope": 1}):
        with pytest.raises(TrainingError) as caught:
            training_run_create(team=team, base_model=tiny_registered_model,
                                train_version=pairs, options=options, enqueue=False)  # fmt: skip
        assert next(iter(options)) in str(caught.value)
    with pytest.raises(TrainingError):
        training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                            guide_model=model, options={"loss": "gist"}, enqueue=False)  # fmt: skip
    assert not TrainingRun.objects.exists()


def test_train_command_refuses_a_folder_and_a_foreign_guide(
    tmp_path, tiny_registered_model, pairs, foreign, capsys
):
    model, _ = foreign
    for spec in (
        {"options": {"base_model_path": "/etc"}},
        {"guide_model": model.pk, "options": {"loss": "gist"}},
    ):
        path = tmp_path / "run.json"
        path.write_text(json.dumps({"base_model": tiny_registered_model.pk,
                                    "train_version": pairs.pk, **spec}))  # fmt: skip
        with pytest.raises(SystemExit) as caught:
            call_command("train", "--config", str(path))
        assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "base_model_path: unknown field" in err and "guide_model" in err
    assert not TrainingRun.objects.exists()


# --- evaluations, indexes, deployments -------------------------------------------------------


def test_evaluation_api_refuses_unknown_fields_and_foreign_ids(
    api, tiny_registered_model, tiny_version, foreign
):
    model, version = foreign
    base = {"dataset_version": tiny_version.pk, "model": tiny_registered_model.pk}
    assert api("/api/v1/evaluations", {**base, "model_path": "/etc"}).status_code == 422
    assert api("/api/v1/evaluations", {**base, "model": model.pk}).status_code == 404
    assert api("/api/v1/evaluations", {**base, "dataset_version": version.pk}).status_code == 404
    assert not Evaluation.objects.exists()


@pytest.mark.parametrize("value", PATHS)
def test_index_api_refuses_paths_in_params_and_body(api, tiny_registered_model, tiny_version,
                                                    value):  # fmt: skip
    base = {"model": tiny_registered_model.pk, "dataset_version": tiny_version.pk, "type": "flat"}
    response = api("/api/v1/indexes", {**base, "params": {"path": value}})
    assert response.status_code == 422 and "path" in response.json()["error"]
    response = api("/api/v1/indexes", {**base, "output_dir": value})
    assert response.status_code == 422 and "output_dir" in response.json()["error"]
    assert value not in response.content.decode()
    assert not IndexBuild.objects.exists()


def test_index_and_deploy_api_refuse_foreign_ids(api, tiny_registered_model, tiny_version, foreign):
    model, version = foreign
    base = {"model": tiny_registered_model.pk, "dataset_version": tiny_version.pk, "type": "flat"}
    assert api("/api/v1/indexes", {**base, "model": model.pk}).status_code == 404
    assert api("/api/v1/indexes", {**base, "dataset_version": version.pk}).status_code == 404
    assert not IndexBuild.objects.exists()


# --- curation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["semdedup", "mine", "dsir", "tokens"])
@pytest.mark.parametrize("value", PATHS)
def test_curation_refuses_unknown_params(team, tiny_registered_model, tiny_version, kind, value):
    with pytest.raises(CurationError) as caught:
        curation_create(team=team, source=tiny_version, kind=kind, model=tiny_registered_model,
                        params={"output_path": value}, enqueue=False)  # fmt: skip
    assert "output_path: unknown parameter" in str(caught.value)
    assert value not in str(caught.value)
    assert not CurationJob.objects.exists()


def test_curation_refuses_another_teams_target_and_model(
    team, tiny_registered_model, pairs, tiny_version, foreign
):
    model, version = foreign
    for target in (version.pk, f"../{version.pk}", "/etc"):
        with pytest.raises(CurationError, match="target"):
            curation_create(team=team, source=pairs, kind="dsir", params={"target": target},
                            enqueue=False)  # fmt: skip
    with pytest.raises(CurationError, match="your team"):
        curation_create(team=team, source=tiny_version, kind="semdedup", model=model,
                        enqueue=False)  # fmt: skip
    assert not CurationJob.objects.exists()


def test_curation_page_refuses_an_unknown_field(client, member, tiny_registered_model,
                                                tiny_version):  # fmt: skip
    client.force_login(member)
    response = client.post(
        f"/datasets/versions/{tiny_version.pk}/curate/semdedup/",
        {"model": tiny_registered_model.pk, "threshold": "0.9", "path": "/etc"},
        follow=True,
    )
    assert "path: unknown parameter" in response.content.decode()
    assert not CurationJob.objects.exists()
