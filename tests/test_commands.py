"""The command line: JSON on stdout, `FILE:LINE: reason` and exit status 2 on bad input."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from apps.datasets.models import Dataset
from apps.registry.models import EmbeddingModel
from tests.conftest import write_beir

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[int, dict | None, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            call_command(*args, stdout=out)
        except SystemExit as exc:
            code = exc.code
    text = out.getvalue().strip()
    return code, (json.loads(text) if text else None), err.getvalue()


def test_team_register_import_evaluate_sync(team, tiny_model_path, beir_folder):
    code, model, _ = run("register_model", str(tiny_model_path), "--team", "acme", "--name", "tiny")
    assert code == 0 and model["dimension"] == 64 and model["pooling"] == "mean"
    code, data, _ = run("import_dataset", str(beir_folder), "--team", "acme", "--name", "tiny")
    assert code == 0
    assert (data["documents"], data["queries"], data["qrels"]) == (8, 5, {"test": 4, "train": 1})
    code, again, _ = run("import_dataset", str(beir_folder), "--team", "acme", "--name", "tiny")
    assert again["version"] == data["version"] and again["created"] is False

    code, result, _ = run(
        "evaluate",
        "--model",
        str(model["model"]),
        "--dataset-version",
        str(data["version"]),
        "--split",
        "test",
        "--sync",
    )
    assert code == 0 and result["status"] == "succeeded"
    assert set(result["metrics"]) >= {"ndcg@10", "mrr@10", "recall@100"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())


def test_bad_dataset_exits_2_with_file_line_reason_and_writes_nothing(team, tmp_path):
    folder = write_beir(tmp_path / "bad", qrels={"test": [("q1", "nope", 1)]})
    code, out, err = run("import_dataset", str(folder), "--team", "acme", "--name", "bad")
    assert code == 2 and out is None
    assert err.strip() == f"{folder / 'qrels' / 'test.tsv'}:2: unknown document id 'nope'"
    assert not Dataset.objects.exists()


def test_bad_model_folder_and_unknown_team_exit_2(team, tmp_path):
    code, _, err = run("register_model", str(tmp_path / "nowhere"), "--team", "acme", "--name", "x")
    assert code == 2 and "nowhere" in err
    code, _, err = run("register_model", str(tmp_path), "--team", "ghosts", "--name", "x")
    assert code == 2 and "no team 'ghosts'" in err
    assert not EmbeddingModel.objects.exists()


def test_evaluate_rejects_unknown_split(tiny_registered_model, tiny_version):
    code, _, err = run(
        "evaluate",
        "--model",
        str(tiny_registered_model.pk),
        "--dataset-version",
        str(tiny_version.pk),
        "--split",
        "dev",
        "--sync",
    )
    assert code == 2 and "no split 'dev'" in err and "test, train" in err


def test_demo_is_idempotent(settings, tmp_path, django_capture_on_commit_callbacks):
    from django.contrib.auth import get_user_model

    settings.VAR_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        code, first, _ = run("demo")
    assert code == 0 and first["username"] == "admin" and len(first["password"]) >= 12
    assert first["documents"] == 5183 and first["qrels"] == {"test": 339, "train": 919}
    model = EmbeddingModel.objects.get(pk=first["model"])
    assert (model.dimension, model.max_seq_length, model.normalize) == (384, 256, True)
    user = get_user_model().objects.get(username="admin")
    assert user.check_password(first["password"])
    counts = [M.objects.count() for M in (get_user_model(), EmbeddingModel, Dataset)]
    with django_capture_on_commit_callbacks(execute=True):
        code, second, _ = run("demo")
    assert second == first
    assert [M.objects.count() for M in (get_user_model(), EmbeddingModel, Dataset)] == counts


def test_demo_gives_a_new_password_when_var_was_wiped(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    from django.contrib.auth import get_user_model

    settings.VAR_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        _, first, _ = run("demo")
    (tmp_path / "demo-admin-password").unlink()
    with django_capture_on_commit_callbacks(execute=True):
        _, second, _ = run("demo")
    assert second["password"] != first["password"]
    assert get_user_model().objects.get(username="admin").check_password(second["password"])


def test_curate_mine_sync_and_bad_input(tiny_registered_model, tiny_version):
    m, v = str(tiny_registered_model.pk), str(tiny_version.pk)
    code, result, err = run(
        "curate", "mine", "--dataset-version", v, "--model", m, "--sync",
        "--param", "split=test", "--param", "range_max=7", "--param", "relative_margin=",
    )  # fmt: skip
    assert code == 0, err
    assert result["status"] == "succeeded" and result["version"]
    assert result["result"]["queries"] == 3
    code, _, err = run("curate", "mine", "--dataset-version", v, "--model", m, "--param", "x")
    assert code == 2 and "is not KEY=VALUE" in err
    code, _, err = run("curate", "mine", "--dataset-version", v, "--model", m, "--param", "split=x")
    assert code == 2 and "has no split" in err
