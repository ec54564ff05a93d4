"""Precision through the product: asked for on a job, resolved on the worker, recorded on the
row, part of the embedding-cache key and of an index's query encoder; ``auto`` turns to bf16
only once the model's bf16 evaluation has ranked within the allowed drop of its fp32 one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.runs.models import Evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture
def native_bf16(monkeypatch):
    """A worker CPU with AVX-512 BF16, whatever this machine has."""
    from workers.ml import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))


def evaluate(model, version, *extra) -> dict:
    out = io.StringIO()
    call_command("evaluate", "--model", str(model.pk), "--dataset-version", str(version.pk),
                 "--split", "test", "--sync", *extra, stdout=out)  # fmt: skip
    return json.loads(out.getvalue())


def test_auto_is_fp32_until_bf16_is_proven_then_bf16(tiny_registered_model, tiny_version,
                                                     native_bf16, settings):  # fmt: skip
    from apps.runs.selectors import precision_check

    model, version = tiny_registered_model, tiny_version
    first = evaluate(model, version)  # auto, nothing proven yet
    assert first["precision"] == "fp32"
    assert precision_check(model=model) is None
    bf16 = evaluate(model, version, "--precision", "bf16")
    assert bf16["precision"] == "bf16" and bf16["cache_hit"] is False  # its own cache entry
    rows = {e.precision_used: e for e in Evaluation.objects.filter(model=model)}
    assert rows["bf16"].embedding_key != rows["fp32"].embedding_key
    assert (rows["bf16"].precision, rows["fp32"].precision) == ("bf16", "auto")
    check = precision_check(model=model)
    assert check["evaluations"] == [bf16["evaluation"], first["evaluation"]]
    assert check["drop"] == pytest.approx(
        (first["metrics"]["ndcg@10"] - bf16["metrics"]["ndcg@10"]) / first["metrics"]["ndcg@10"]
    )
    # A drop over the allowed one keeps auto on fp32; within it, auto is bf16 (and reads the
    # bf16 vectors from the cache).
    settings.QUALITY_MAX_DROP = check["drop"] - 0.5 if check["drop"] > 0 else -0.01
    assert not precision_check(model=model)["passed"]
    assert evaluate(model, version)["precision"] == "fp32"
    settings.QUALITY_MAX_DROP = max(check["drop"], 0) + 0.01
    again = evaluate(model, version)
    assert again["precision"] == "bf16" and again["cache_hit"] is True


def test_the_model_page_says_what_auto_does(client, member, tiny_registered_model, tiny_version,
                                            native_bf16, settings):  # fmt: skip
    client.force_login(member)
    url = f"/models/{tiny_registered_model.pk}/"
    assert "not checked yet" in client.get(url).content.decode()
    evaluate(tiny_registered_model, tiny_version, "--precision", "bf16")
    evaluate(tiny_registered_model, tiny_version, "--precision", "fp32")
    settings.QUALITY_MAX_DROP = 1.0
    assert "precision auto encodes in bf16" in client.get(url).content.decode()
    settings.QUALITY_MAX_DROP = -1.0
    assert "precision auto stays fp32" in client.get(url).content.decode()


def test_auto_stays_fp32_without_native_bf16(tiny_registered_model, tiny_version, monkeypatch,
                                             settings):  # fmt: skip
    from workers.ml import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    settings.QUALITY_MAX_DROP = 1.0  # any bf16 result passes
    evaluate(tiny_registered_model, tiny_version, "--precision", "bf16")
    evaluate(tiny_registered_model, tiny_version, "--precision", "fp32")
    assert evaluate(tiny_registered_model, tiny_version)["precision"] == "fp32"


def test_the_command_and_api_refuse_an_unknown_precision(client, team, member,
                                                         tiny_registered_model,
                                                         tiny_version):  # fmt: skip
    from django.core.management import CommandError

    from apps.accounts.services import api_token_create

    with pytest.raises(CommandError, match="--precision: invalid choice: 'fp16'"):
        evaluate(tiny_registered_model, tiny_version, "--precision", "fp16")
    token = api_token_create(user=member, team=team, name="t")[1]
    r = client.post("/api/v1/evaluations", {"dataset_version": tiny_version.pk,
                    "model": tiny_registered_model.pk, "precision": "fp16"},
                    content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip  # noqa: E501
    assert r.status_code == 422 and "precision" in json.dumps(r.json())
    r = client.post("/api/v1/evaluations", {"dataset_version": tiny_version.pk,
                    "model": tiny_registered_model.pk, "precision": "bf16"},
                    content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip  # noqa: E501
    assert r.status_code == 202
    assert (r.json()["precision"], r.json()["precision_used"]) == ("bf16", None)
    assert Evaluation.objects.get(pk=r.json()["id"]).precision == "bf16"
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert schema["EvaluationIn"]["properties"]["precision"]["enum"] == ["auto", "fp32", "bf16"]
    assert schema["IndexIn"]["properties"]["precision"]["default"] == "auto"


def test_an_index_records_its_precision_and_the_page_shows_it(client, member, team,
                                                              tiny_registered_model,
                                                              tiny_version):  # fmt: skip
    from apps.indexes.services import index_build_create
    from workers.tasks.indexing import build_index

    build = index_build_create(team=team, model=tiny_registered_model,
                               dataset_version=tiny_version, index_type="flat",
                               precision="bf16", enqueue=False)  # fmt: skip
    build_index.run(build.pk)
    build.refresh_from_db()
    assert build.status == "succeeded", build.error
    assert build.precision_used == "bf16" and build.encoder["precision"] == "bf16"
    recorded = json.loads((Path(build.path) / "encoder.json").read_text())
    assert recorded["precision"] == "bf16"  # what the search process checks a deployment by
    client.force_login(member)
    page = client.get(f"/indexes/{build.pk}/").content.decode()
    assert 'id="precision">bf16' in page


def test_build_index_and_curate_take_precision_on_the_command_line(
    tiny_registered_model, tiny_version, capsys
):
    from apps.datasets.models import CurationJob
    from apps.indexes.models import IndexBuild

    m, v = str(tiny_registered_model.pk), str(tiny_version.pk)
    out = io.StringIO()
    call_command("build_index", "--model", m, "--dataset-version", v, "--type", "flat",
                 "--precision", "bf16", "--sync", stdout=out)  # fmt: skip
    built = json.loads(out.getvalue())
    assert built["precision"] == "bf16"
    assert IndexBuild.objects.get(pk=built["index"]).encoder["precision"] == "bf16"
    out = io.StringIO()
    call_command("curate", "semdedup", "--dataset-version", v, "--model", m, "--precision",
                 "bf16", "--sync", stdout=out)  # fmt: skip
    job = CurationJob.objects.get()
    assert job.params["precision"] == "bf16" and job.result["precision"] == "bf16"
    with pytest.raises(SystemExit) as exited:
        call_command("curate", "dsir", "--dataset-version", v, "--precision", "bf16",
                     "--sync", stdout=io.StringIO())  # fmt: skip
    assert exited.value.code == 2 and "--precision: dsir encodes nothing" in capsys.readouterr().err
