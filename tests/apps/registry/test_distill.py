"""Static distillation (Model2Vec) of a registered model: the command, the API, the pages; the
result is a registered model with its source as parent that every encode path can use, its
speed measured against the source and both evaluated on one version."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from apps.registry.models import DistillJob, EmbeddingModel
from apps.runs.models import Evaluation

pytestmark = pytest.mark.django_db


def run(*args) -> dict:
    out = io.StringIO()
    call_command("distill", *args, stdout=out)
    return json.loads(out.getvalue())


def evaluate_pending() -> None:
    from workers.tasks.evaluation import evaluate

    for pk in Evaluation.objects.filter(status="pending").values_list("pk", flat=True):
        evaluate.run(pk)


def test_distill_registers_a_static_model_measured_and_evaluated(
    tiny_registered_model, tiny_version, client, member
):
    from workers.ml.encode import encode_texts, load_encoder

    source = tiny_registered_model
    v = str(tiny_version.pk)
    done = run("--model", str(source.pk), "--pca-dims", "16", "--vocabulary-version", v,
               "--evaluate-version", v, "--sync")  # fmt: skip
    assert done["status"] == "succeeded", done
    static = EmbeddingModel.objects.get(pk=done["model"])
    assert (static.kind, static.parent, static.dimension) == ("static", source, 16)
    assert static.layout == "sentence-transformers" and static.team == source.team
    result = done["result"]
    assert result["vocabulary_words"] > 0 and result["dimension"] == 16
    assert result["speed"]["documents"] == 8
    assert result["speed"]["static_docs_per_s"] > 0 and result["speed"]["source_docs_per_s"] > 0
    # Every encode path loads it the way it loads any model folder.
    encoder = load_encoder(path=static.path, layout=static.layout, pooling=static.pooling,
                           normalize=True, max_seq_length=static.max_seq_length)  # fmt: skip
    vectors = encode_texts(encoder=encoder, texts=["red planet", "hot tea"], normalize=True)
    assert vectors.shape == (2, 16) and np.allclose((vectors**2).sum(axis=1), 1, atol=1e-5)
    # Both evaluated on the version (the source had none yet): once they ran, the pages say
    # what the speed costs.
    assert set(result["evaluations"]) == {"source", "static"}
    evaluate_pending()
    assert Evaluation.objects.filter(status="succeeded").count() == 2
    client.force_login(member)
    job_page = client.get(f"/models/distillations/{done['distillation']}/").content.decode()
    assert "faster" in job_page and "nDCG@10" in job_page and 'id="distill-verdict"' in job_page
    model_page = client.get(f"/models/{static.pk}/").content.decode()
    assert f"/models/distillations/{done['distillation']}/" in model_page


def test_bad_input_is_named_and_nothing_is_made(tiny_registered_model, tiny_version, capsys):
    m = str(tiny_registered_model.pk)

    def refused(*args) -> str:
        with pytest.raises(SystemExit) as exited:
            run("--model", m, *args, "--sync")
        assert exited.value.code == 2
        return capsys.readouterr().err

    assert "pca_dims: 128 is more than the model's 64" in refused("--pca-dims", "128")
    assert "--pca-dims: Input should be greater than or equal to 2" in refused("--pca-dims", "1")
    assert "evaluate_version: no such dataset version" in refused("--evaluate-version", "999999")
    assert "split: " in refused("--evaluate-version", str(tiny_version.pk), "--split", "nope")
    with pytest.raises(CommandError, match="invalid _pca value"):
        run("--model", m, "--pca-dims", "many", "--sync")
    assert not DistillJob.objects.exists()


def test_the_api_starts_one_and_scopes_it(client, team, member, outsider, other_team,
                                         tiny_registered_model, tiny_version):  # fmt: skip
    from apps.accounts.services import api_token_create

    def auth(user, t):
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=t, name='t')[1]}"}

    mine, theirs = auth(member, team), auth(outsider, other_team)
    url = f"/api/v1/models/{tiny_registered_model.pk}/distill"
    r = client.post(url, {"pca_dims": 16, "evaluate_version": tiny_version.pk},
                    content_type="application/json", **mine)  # fmt: skip
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["status"] == "pending" and body["source"] == tiny_registered_model.pk
    assert body["evaluate_version"] == tiny_version.pk and body["split"] == "test"
    assert "path" not in json.dumps(body)
    job_url = f"/api/v1/distillations/{body['id']}"
    assert client.get(job_url, **mine).json()["id"] == body["id"]
    assert client.get(job_url, **theirs).status_code == 404
    assert client.post(url, {}, content_type="application/json", **theirs).status_code == 404
    r = client.post(url, {"pca_dims": 16, "model_path": "/etc"}, content_type="application/json",
                    **mine)  # fmt: skip
    assert r.status_code == 422 and "model_path" in json.dumps(r.json())
    r = client.post(url, {"pca_dims": 999}, content_type="application/json", **mine)
    assert r.status_code == 400 and "pca_dims" in r.json()["error"]
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["DistillIn"]
    assert set(schema["properties"]) == {"pca_dims", "vocabulary_version", "vocabulary_size",
                                         "evaluate_version", "split"}  # fmt: skip


def test_the_model_page_starts_one(client, member, viewer, tiny_registered_model, tiny_version):
    url = f"/models/{tiny_registered_model.pk}/distill/"
    client.force_login(viewer)
    assert client.post(url, {"pca_dims": "16"}).status_code == 403
    client.force_login(member)
    page = client.get(f"/models/{tiny_registered_model.pk}/").content.decode()
    assert 'id="distill-form"' in page
    assert 'name="pca_dims" value="64"' in page  # the default 256, down to the model's 64
    r = client.post(url, {"pca_dims": "16", "evaluate_version": str(tiny_version.pk),
                          "vocabulary_size": "10000"})  # fmt: skip
    job = DistillJob.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/models/distillations/{job.pk}/"
    assert job.params["pca_dims"] == 16 and job.evaluate_version == tiny_version
    r = client.post(url, {"pca_dims": "999", "vocabulary_size": "10000"})
    assert r.status_code == 200 and "pca_dims: 999 is more than" in r.content.decode()
