"""One typed config for training (workers/common/configs/training.py): the page's form, the API's
body, the command and the worker all take their fields, defaults and bounds from it."""

from __future__ import annotations

import json

import pytest
from django import forms

from apps.datasets.services import dataset_version_pairs_from_qrels
from apps.runs.forms import TrainingRunForm
from apps.runs.models import TrainingRun
from apps.runs.training import TrainingError, training_run_create
from workers.common.configs.training import ConfigError, TrainConfig, TrainOptions

pytestmark = pytest.mark.django_db

PAGE_ONLY = {"name", "base_model", "train_version", "eval_version", "eval_split", "guide_model",
             "precision"}  # fmt: skip
NOT_ON_THE_PAGE = {"device", "bf16", "fp16"}  # the server's choice; bf16/fp16 are "precision"


@pytest.fixture
def pairs(tiny_version):
    return dataset_version_pairs_from_qrels(version=tiny_version, split="test").version


def test_the_form_is_the_config(team):
    form = TrainingRunForm(team=team)
    fields = form.fields
    assert set(fields) - PAGE_ONLY == set(TrainOptions.model_fields) - NOT_ON_THE_PAGE
    for name, info in TrainOptions.model_fields.items():
        if name in NOT_ON_THE_PAGE:
            continue
        field = fields[name]
        assert field.initial == info.default, name
        assert field.help_text == info.description, name
        for bound in info.metadata:
            for attr, key in (("ge", "min_value"), ("gt", "min_value"), ("le", "max_value"),
                              ("lt", "max_value")):  # fmt: skip
                if hasattr(bound, attr):
                    assert getattr(field, key) == getattr(bound, attr), (name, attr)
    # What the browser tests and users know stays: labels, choices, the precision select.
    assert fields["train_version"].label == "Training data"
    assert fields["lora_r"].label == "LoRA rank"
    assert [c[0] for c in fields["method"].choices] == ["full", "lora"]
    assert dict(fields["loss"].choices)["gist"].startswith("GISTEmbed")
    assert [c[0] for c in fields["precision"].choices] == ["fp32", "bf16", "fp16"]
    assert isinstance(fields["merge_lora"], forms.BooleanField) and fields["merge_lora"].initial
    assert "as the model" in str(form["normalize"]) and "as the model" in str(form["pooling"])


def test_the_forms_values_become_the_config(team, tiny_registered_model, pairs):
    base = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk, "method": "lora",
            "loss": "matryoshka", "matryoshka_dims": "64, 32",
            "lora_target_modules": "query, value", "precision": "bf16", "merge_lora": "on",
            "no_duplicates": "on"}  # fmt: skip
    form = TrainingRunForm(base, team=team)
    assert form.is_valid(), form.errors
    assert form.config == TrainOptions(
        method="lora", loss="matryoshka", matryoshka_dims=[64, 32],
        lora_target_modules=["query", "value"], bf16=True, merge_lora=True, no_duplicates=True,
    )  # fmt: skip
    # An unticked box is False; an empty number takes the config's default.
    form = TrainingRunForm({**base, "merge_lora": "", "batch_size": ""}, team=team)
    assert form.is_valid() and form.config.merge_lora is False and form.config.batch_size == 32
    for bad, field in (({"lora_dropout": "1"}, "lora_dropout"), ({"batch_size": "0"}, "batch_size"),
                       ({"matryoshka_dims": "64,64"}, "matryoshka_dims"),
                       ({"loss": "gist"}, "guide_model")):  # fmt: skip
        form = TrainingRunForm({**base, **bad}, team=team)
        assert not form.is_valid() and field in form.errors, (bad, form.errors)


def test_one_default_for_the_user_and_the_trainer():
    """The trainer's config is the options plus the server's fields: same defaults, same rules."""
    options = TrainOptions()
    config = TrainConfig.from_dict({"base_model_path": "/m"})
    for name in TrainOptions.model_fields:
        if getattr(options, name) is not None:
            assert getattr(config, name) == getattr(options, name), name
    assert (config.effective_learning_rate, config.model_copy(update={"method": "lora"})
            .effective_learning_rate) == (2e-5, 1e-4)  # fmt: skip
    with pytest.raises(ConfigError, match="^fp16: choose bf16 or fp16"):
        TrainConfig.from_dict({"base_model_path": "/m", "bf16": True, "fp16": True})
    with pytest.raises(ValueError, match="bf16 or fp16"):
        TrainOptions(bf16=True, fp16=True)


def test_options_resolve_over_the_base_models_settings(tiny_registered_model):
    m = tiny_registered_model
    registered = dict(
        base_model_path=m.path, layout=m.layout, pooling="cls", normalize=False,
        max_seq_length=77, query_prefix="q: ", document_prefix="d: ", guide_model_path=None,
    )  # fmt: skip
    config = TrainConfig.resolve(TrainOptions(max_seq_length=32), **registered)
    assert (config.pooling, config.normalize, config.max_seq_length) == ("cls", False, 32)
    assert (config.query_prefix, config.document_prefix) == ("q: ", "d: ")
    explicit = TrainConfig.resolve(TrainOptions(query_prefix=""), **registered)
    assert explicit.query_prefix == ""  # set to nothing is not "the model's"


def test_null_means_the_default_and_true_is_not_a_number():
    assert TrainOptions.model_validate({"batch_size": None}).batch_size == 32
    assert TrainOptions.model_validate({"save_total_limit": None}).save_total_limit is None
    with pytest.raises(ValueError, match="batch_size"):
        TrainOptions.model_validate({"batch_size": True})


def test_the_api_schema_lists_every_option(client):
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    properties = schema["TrainOptions"]["properties"]
    assert set(properties) == set(TrainOptions.model_fields)
    assert all(p.get("description") for p in properties.values())
    assert (properties["batch_size"]["default"], properties["batch_size"]["minimum"]) == (32, 1)
    assert properties["loss"]["default"] == "mnrl"
    assert schema["TrainOptions"]["additionalProperties"] is False


def test_the_service_names_every_bad_option(team, tiny_registered_model, pairs):
    with pytest.raises(TrainingError) as caught:
        training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                            options={"batch_size": 0, "colour": "red"}, enqueue=False)  # fmt: skip
    assert any(p.startswith("batch_size: ") for p in caught.value.problems)
    assert "colour: unknown field" in caught.value.problems
    assert not TrainingRun.objects.exists()


def test_the_worker_validates_the_stored_config_again(team, tiny_registered_model, pairs):
    from workers.tasks.runtime import job_claim, job_run
    from workers.tasks.training import training_run_execute

    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              options={"max_steps": 1}, enqueue=False)  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(config={**run.config, "batch_size": 0})
    claimed = job_claim(model=TrainingRun, pk=run.pk)
    job_run(job=claimed, work=lambda report: training_run_execute(run=claimed, report=report))
    claimed.refresh_from_db()
    assert claimed.status == "failed"
    assert "Bad training configuration: batch_size" in claimed.human_error


def test_the_command_reads_the_config_and_names_what_is_wrong(
    tmp_path, tiny_registered_model, pairs, capsys
):
    from django.core.management import call_command

    path = tmp_path / "run.json"
    base = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk}
    for spec, expected in (
        ({**base, "batch_size": 4}, "batch_size: unknown field"),
        ({**base, "options": {"batch_size": 0, "loss": "nope"}}, "options.batch_size: "),
        ({**base, "options": {"loss": "nope"}}, "options.loss: "),
    ):
        path.write_text(json.dumps(spec))
        with pytest.raises(SystemExit) as caught:
            call_command("train", "--config", str(path))
        assert caught.value.code == 2
        assert expected in capsys.readouterr().err, spec
    assert not TrainingRun.objects.exists()
