"""One typed config for an evaluation: the API's body, the page's form, the command's options and
what the worker reads back from the row."""

from __future__ import annotations

import io

import pytest

from apps.runs.forms import EvaluationForm
from apps.runs.models import Evaluation
from workers.common.configs.evaluation import EvaluationConfig

pytestmark = pytest.mark.django_db


def test_the_api_schema_lists_every_field_with_its_default_and_help(client):
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["EvaluationIn"]
    properties = schema["properties"]
    assert set(properties) == {*EvaluationConfig.model_fields, "dataset_version"}
    assert all(p.get("description") for p in properties.values())
    assert properties["method"]["enum"] == ["dense", "bm25", "hybrid", "rerank", "sparse"]
    assert properties["k_prime"]["default"] == 100 and "first_stage" in properties
    assert properties["method"]["default"] == "dense" and properties["split"]["default"] == "test"
    assert schema["additionalProperties"] is False and schema["required"] == ["dataset_version"]


def test_the_form_checks_through_the_config(team, tiny_registered_model, tiny_version):
    def form(data):
        return EvaluationForm(data, team=team, version=tiny_version)

    dense = form({"split": "test", "model": tiny_registered_model.pk})
    assert dense.is_valid(), dense.errors
    assert dense.config == EvaluationConfig(model=tiny_registered_model.pk, split="test")
    assert list(form({"split": "test", "method": "dense"}).errors) == ["model"]
    bm25 = form({"split": "test", "method": "bm25"})
    assert bm25.is_valid() and bm25.config.method == "bm25" and bm25.config.model is None
    assert list(form({"split": "test", "method": "tfidf"}).errors) == ["method"]
    assert list(form({"split": "dev", "model": tiny_registered_model.pk}).errors) == ["split"]


def test_the_command_names_a_bad_option(tiny_registered_model, tiny_version, capsys):
    from django.core.management import call_command

    args = ["--model", str(tiny_registered_model.pk), "--dataset-version", str(tiny_version.pk)]
    with pytest.raises(SystemExit) as exited:
        call_command("evaluate", *args, "--split", "", "--sync", stdout=io.StringIO())
    assert exited.value.code == 2
    assert "--split: String should have at least 1 character" in capsys.readouterr().err
    assert not Evaluation.objects.exists()


def test_the_worker_reads_the_rows_config_back(team, tiny_version):
    from apps.runs.services import evaluation_create

    evaluation = evaluation_create(team=team, model=None, method="bm25",
                                   dataset_version=tiny_version, split="test",
                                   enqueue=False)  # fmt: skip
    config = EvaluationConfig.from_row(evaluation)
    assert config == EvaluationConfig(method="bm25", split="test", precision="fp32")
