"""Optimized (ONNX Runtime) variants of a registered model: the command, the API, the pages;
the variant is a registered model with its source as parent, checked against the source's
vectors, measured, evaluated beside it with the paired test, marked when it loses too much,
and used by the search process like any model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from apps.registry.models import EmbeddingModel, OptimizeJob
from apps.runs.models import Evaluation

pytestmark = pytest.mark.django_db


def run(*args) -> dict:
    out = io.StringIO()
    call_command("optimize", *args, stdout=out)
    return json.loads(out.getvalue())


def evaluate_pending() -> None:
    from workers.tasks.evaluation import evaluate

    for pk in Evaluation.objects.filter(status="pending").values_list("pk", flat=True):
        evaluate.run(pk)


def test_optimize_registers_a_variant_checked_measured_evaluated_and_judged(
    tiny_registered_model, tiny_version, client, member, settings
):
    source = tiny_registered_model
    done = run("--model", str(source.pk), "--quantize", "int8", "--evaluate-version",
               str(tiny_version.pk), "--sync")  # fmt: skip
    assert done["status"] == "succeeded", done
    variant = EmbeddingModel.objects.get(pk=done["model"])
    assert (variant.kind, variant.parent, variant.layout) == ("optimized", source, "onnx")
    assert (variant.dimension, variant.pooling, variant.normalize) == (
        source.dimension, source.pooling, source.normalize)  # fmt: skip
    opt = variant.optimization
    assert opt["backend"] == "onnx" and opt["quantization"] == "int8"
    assert opt["file"] == "model_int8.onnx" and opt["quantization_config"]["per_channel"]
    assert opt["cosine_min"] >= settings.OPTIMIZE_MIN_COSINE and isinstance(opt["isa"], list)
    speed = done["result"]["speed"]
    assert speed["documents"] == 8 and speed["variant_docs_per_s"] > 0 and speed["speedup"] > 0
    assert set(done["result"]["evaluations"]) == {"source", "variant"}
    assert not variant.quality  # not judged before both evaluations ran
    evaluate_pending()
    variant.refresh_from_db()
    q = variant.quality
    assert q["metric"] == "ndcg@10" and q["evaluations"] == done["result"]["evaluations"]
    ev = Evaluation.objects.get(pk=done["result"]["evaluations"]["variant"])
    assert q["value"] == ev.metrics["ndcg@10"] and ev.precision_used == "fp32"
    assert q["below_bar"] == (q["drop"] > settings.QUALITY_MAX_DROP)
    client.force_login(member)
    page = client.get(f"/models/optimizations/{done['optimization']}/").content.decode()
    assert 'id="optimize-verdict"' in page and "nDCG@10" in page and "cosine" in page
    assert "Paired comparison" in page
    model_page = client.get(f"/models/{variant.pk}/").content.decode()
    assert f"/models/optimizations/{done['optimization']}/" in model_page
    assert 'id="optimize-form"' not in model_page  # a variant is not optimized again


def test_a_variant_that_loses_quality_is_marked_wherever_it_is_offered(
    tiny_registered_model, tiny_version, client, member, settings
):
    from apps.registry.services import variant_quality_record

    done = run("--model", str(tiny_registered_model.pk), "--quantize", "none",
               "--evaluate-version", str(tiny_version.pk), "--sync")  # fmt: skip
    evaluate_pending()
    variant = EmbeddingModel.objects.get(pk=done["model"])
    assert variant.quality["drop"] == pytest.approx(0, abs=1e-3)  # fp32 graph: same ranking
    assert not variant.below_quality_bar
    # The bar below what this variant lost: it is marked in lists, on its page and in the
    # choices of every form that offers models.
    settings.QUALITY_MAX_DROP = -1.0
    variant_quality_record(
        evaluation=Evaluation.objects.get(pk=done["result"]["evaluations"]["variant"])
    )
    variant.refresh_from_db()
    assert variant.below_quality_bar and "vs its parent" in str(variant)
    client.force_login(member)
    assert "below the quality bar" in client.get("/models/").content.decode()
    assert 'id="below-bar"' in client.get(f"/models/{variant.pk}/").content.decode()
    assert "vs its parent" in client.get("/indexes/new/").content.decode()


def test_bad_input_is_named_and_nothing_is_made(tiny_registered_model, tiny_version, capsys):
    m = str(tiny_registered_model.pk)

    def refused(*args) -> str:
        with pytest.raises(SystemExit) as exited:
            run("--model", m, *args, "--sync")
        assert exited.value.code == 2
        return capsys.readouterr().err

    assert "--quantize: Input should be 'none' or 'int8'" in refused("--quantize", "int4")
    assert "--backend: Input should be 'onnx'" in refused("--backend", "openvino")
    assert "evaluate_version: no such dataset version" in refused("--evaluate-version", "999999")
    assert "split: " in refused("--evaluate-version", str(tiny_version.pk), "--split", "nope")
    with pytest.raises(CommandError, match="invalid int value"):
        run("--model", m, "--evaluate-version", "x", "--sync")
    assert not OptimizeJob.objects.exists()


def test_a_variant_is_neither_optimized_again_nor_trained(team, tiny_registered_model,
                                                          tiny_version):  # fmt: skip
    from apps.datasets.services import dataset_version_pairs_from_qrels
    from apps.runs.training import TrainingError, training_run_create

    done = run("--model", str(tiny_registered_model.pk), "--quantize", "none", "--sync")
    assert done["status"] == "succeeded" and done["result"]["evaluations"] == {}
    with pytest.raises(SystemExit):
        run("--model", str(done["model"]), "--sync")
    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    with pytest.raises(TrainingError, match="base_model: .* cannot be trained"):
        training_run_create(team=team, base_model=EmbeddingModel.objects.get(pk=done["model"]),
                            train_version=pairs, enqueue=False)  # fmt: skip


def test_the_api_starts_one_and_scopes_it(client, team, member, outsider, other_team, viewer,
                                         tiny_registered_model, tiny_version):  # fmt: skip
    from apps.accounts.services import api_token_create

    def auth(user, t):
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=t, name='t')[1]}"}

    mine, theirs = auth(member, team), auth(outsider, other_team)
    url = f"/api/v1/models/{tiny_registered_model.pk}/optimize"
    r = client.post(url, {"quantize": "int8", "evaluate_version": tiny_version.pk},
                    content_type="application/json", **mine)  # fmt: skip
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["status"] == "pending" and body["source"] == tiny_registered_model.pk
    assert body["params"]["backend"] == "onnx" and body["split"] == "test"
    assert r["Location"] == f"/api/v1/optimizations/{body['id']}"
    job_url = f"/api/v1/optimizations/{body['id']}"
    assert client.get(job_url, **mine).json()["id"] == body["id"]
    assert client.get(job_url, **theirs).status_code == 404
    assert client.post(url, {}, content_type="application/json", **theirs).status_code == 404
    r = client.post(url, {}, content_type="application/json", **auth(viewer, team))
    assert r.status_code == 403
    r = client.post(url, {"quantize": "int4"}, content_type="application/json", **mine)
    assert r.status_code == 422 and "quantize" in json.dumps(r.json())
    r = client.post(url, {"path": "/etc"}, content_type="application/json", **mine)
    assert r.status_code == 422 and "path" in json.dumps(r.json())
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["OptimizeIn"]
    assert set(schema["properties"]) == {"backend", "quantize", "evaluate_version", "split"}
    # The registered variant, in the model API: how it was made, never where it lies.
    from workers.tasks.optimize import optimize

    optimize.run(body["id"])
    job = client.get(job_url, **mine).json()
    assert job["status"] == "succeeded", job
    model = client.get(f"/api/v1/models/{job['model']}", **mine).json()
    assert model["kind"] == "optimized" and model["optimization"]["quantization"] == "int8"
    assert model["layout"] == "onnx" and "/" not in json.dumps(model["optimization"])


def test_the_model_page_starts_one(client, member, viewer, tiny_registered_model, tiny_version):
    url = f"/models/{tiny_registered_model.pk}/optimize/"
    client.force_login(viewer)
    assert client.post(url, {"backend": "onnx", "quantize": "int8"}).status_code == 403
    client.force_login(member)
    page = client.get(f"/models/{tiny_registered_model.pk}/").content.decode()
    assert 'id="optimize-form"' in page and 'name="quantize"' in page
    r = client.post(url, {"backend": "onnx", "quantize": "int8",
                          "evaluate_version": str(tiny_version.pk)})  # fmt: skip
    job = OptimizeJob.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/models/optimizations/{job.pk}/"
    assert job.params["quantize"] == "int8" and job.evaluate_version == tiny_version
    r = client.post(url, {"backend": "onnx", "quantize": "int8", "split": "nope",
                          "evaluate_version": str(tiny_version.pk)})  # fmt: skip
    assert r.status_code == 200 and "has no judged split" in r.content.decode()


def test_every_encode_path_keys_and_guards_the_variant_apart(tiny_registered_model, tiny_version):
    from workers.tasks.encoding import embedding_keys, precision_for

    done = run("--model", str(tiny_registered_model.pk), "--quantize", "int8", "--sync")
    variant = EmbeddingModel.objects.get(pk=done["model"])
    common = dict(version=tiny_version, split="test", max_seq_length=64, query_prefix="",
                  document_prefix="", precision="fp32")  # fmt: skip
    assert embedding_keys(model=variant, **common) != embedding_keys(
        model=tiny_registered_model, **common
    )
    # bf16 autocast does not reach ONNX Runtime: a variant encodes (and records) fp32.
    assert precision_for(model=variant, requested="bf16") == "fp32"
    assert precision_for(model=variant, requested="auto") == "fp32"
    # Token counts read the variant's own tokenizer (saved beside the graph).
    from workers.ml.tokens import load_tokenizer, token_lengths

    lengths = token_lengths(tokenizer=load_tokenizer(variant.path), texts=["red planet"])
    assert (
        lengths.tolist()
        == token_lengths(
            tokenizer=load_tokenizer(tiny_registered_model.path), texts=["red planet"]
        ).tolist()
    )
    assert np.all(lengths > 0)
