"""Curation jobs end to end (run in-process): mining, the negatives inspector, semantic dedup
with review, DSIR with its random baseline, token lengths; and who may see them."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from apps.datasets.curation import (
    CurationError,
    curation_accept,
    curation_create,
    curation_discard,
)
from apps.datasets.models import CurationJob, DatasetVersion
from apps.datasets.services import dataset_import_beir, dataset_import_training
from tests.conftest import TINY_CORPUS, TINY_QRELS, write_beir
from workers.tasks.curation import curation_execute
from workers.tasks.runtime import job_claim, job_run


def run(job: CurationJob) -> CurationJob:
    claimed = job_claim(model=CurationJob, pk=job.pk)
    assert claimed is not None
    job_run(job=claimed, work=lambda report: curation_execute(job=claimed, report=report))
    claimed.refresh_from_db()
    return claimed


def judged_positive_texts(version) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for qrel in version.qrels.filter(score__gt=0).select_related("query", "document"):
        text = (qrel.document.title + " " + qrel.document.text).strip()
        out.setdefault(qrel.query.text, set()).add(text)
    return out


@pytest.mark.parametrize(
    "params",
    [
        {
            "candidates": "dense",
            "range_min": 0,
            "range_max": 7,
            "num_negatives": 3,
            "relative_margin": "",
        },
        {"candidates": "dense", "relative_margin": "", "range_max": 8, "num_negatives": 8},
        {"candidates": "bm25", "range_max": 7, "num_negatives": 2, "relative_margin": ""},
        {
            "candidates": "hybrid",
            "range_max": 6,
            "num_negatives": 2,
            "sampling": "random",
            "relative_margin": "",
        },
    ],
)
def test_mining_never_returns_a_judged_positive(team, tiny_version, tiny_registered_model, params):
    job = curation_create(
        team=team,
        source=tiny_version,
        kind="mine",
        model=tiny_registered_model,
        params={"split": "test", **params},
        enqueue=False,
    )
    job = run(job)
    assert job.status == "succeeded", job.human_error
    mined = job.version
    assert mined.kind == DatasetVersion.Kind.TRAINING and mined.parent == tiny_version
    assert mined.params["operation"] == "mine_negatives" and mined.params["split"] == "test"
    positives = judged_positive_texts(tiny_version)
    rows = list(mined.training_rows.all())
    assert rows and len(rows) == mined.training_count
    for row in rows:
        assert row.negatives, row
        assert not set(row.negatives) & positives[row.anchor]
        assert len(row.negatives) <= int(params["num_negatives"])
    # Every judged (query, positive) pair of the split whose query kept a negative is a row.
    assert {(r.anchor, r.positive) for r in rows} <= {
        (q, p) for q, ps in positives.items() for p in ps
    }
    if params["candidates"] == "bm25":
        assert job.model is None


def test_negatives_inspector_page(
    client, member, outsider, team, tiny_version, tiny_registered_model
):
    job = run(
        curation_create(
            team=team,
            source=tiny_version,
            kind="mine",
            model=tiny_registered_model,
            params={"split": "test", "range_max": 7, "num_negatives": 2, "relative_margin": ""},
            enqueue=False,
        )
    )
    r = job.result
    assert r["queries"] == 3 and r["samples"]
    sample = r["samples"][0]
    assert {"query", "positives", "negatives", "flagged"} <= set(sample)
    for n in sample["negatives"]:
        assert n["margin"] == pytest.approx(
            min(p["score"] for p in sample["positives"]) - n["score"], abs=1e-3
        )
    assert sum(r["histograms"]["positive"]["counts"]) == 4  # four judged pairs in test
    client.force_login(member)
    page = client.get(reverse("datasets:curation", args=[job.pk])).content.decode()
    assert "Negatives inspector" in page and 'id="score-chart"' in page
    assert "<rect" in page and sample["query"][:20] in page
    # The version page lists the job and links the derived version back to its parent.
    version_page = client.get(reverse("datasets:version", args=[job.version.pk])).content.decode()
    assert "mine_negatives" in version_page
    client.force_login(outsider)
    assert client.get(reverse("datasets:curation", args=[job.pk])).status_code == 404


@pytest.fixture
def dup_version(team, tmp_path):
    corpus = [
        *TINY_CORPUS,
        {"_id": "d9", "title": "Coffee", "text": TINY_CORPUS[4]["text"]},  # copy of unjudged d5
        {"_id": "d10", "title": "Dogs", "text": TINY_CORPUS[1]["text"]},  # copy of judged d2
    ]
    folder = write_beir(tmp_path / "dups", corpus=corpus)
    return dataset_import_beir(team=team, name="dups", path=folder).version


def test_semdedup_review_then_accept(client, member, team, dup_version, tiny_registered_model):
    job = run(
        curation_create(
            team=team,
            source=dup_version,
            kind="semdedup",
            model=tiny_registered_model,
            params={"threshold": "0.9999"},
            enqueue=False,
        )
    )
    assert job.status == "succeeded" and job.review == "pending" and job.version is None
    assert job.result["removed"] == 2 and job.result["protected"] == 5
    removed = {e["removed"] for e in job.result["examples"]}
    assert "d10" in removed and removed & {"d5", "d9"}
    assert "d2" not in removed  # judged: protected
    client.force_login(member)
    page = client.get(reverse("datasets:curation", args=[job.pk])).content.decode()
    assert "2 of 10 would be removed" in page and 'id="accept"' in page
    response = client.post(reverse("datasets:curation_accept", args=[job.pk]))
    job.refresh_from_db()
    new = job.version
    assert response.status_code == 302 and response.url == reverse(
        "datasets:version", args=[new.pk]
    )
    assert job.review == "accepted" and new.parent == dup_version
    assert new.document_count == new.documents.count() == 8
    assert not new.documents.filter(doc_id__in=removed).exists()
    assert (
        new.qrels_counts == dup_version.qrels_counts == {k: len(v) for k, v in TINY_QRELS.items()}
    )
    assert new.queries.count() == dup_version.queries.count()
    assert sum(int(v) for v in new.stats["document_words"].values()) == 8
    assert new.params["operation"] == "semdedup" and new.params["removed"] == 2
    with pytest.raises(CurationError):
        curation_accept(job=job)  # once only


def test_semdedup_discard_makes_nothing(team, dup_version, tiny_registered_model):
    job = run(
        curation_create(
            team=team,
            source=dup_version,
            kind="semdedup",
            model=tiny_registered_model,
            params={"threshold": "0.9999"},
            enqueue=False,
        )
    )
    before = DatasetVersion.objects.count()
    curation_discard(job=job)
    assert job.review == "discarded" and DatasetVersion.objects.count() == before
    with pytest.raises(CurationError):
        curation_accept(job=job)


def test_semdedup_of_training_rows(team, tmp_path, tiny_registered_model):
    # Words the tiny model's vocabulary knows (unknown ones would all read as [UNK]).
    texts = [d["text"] for d in TINY_CORPUS[:3]]
    rows = [{"anchor": texts[i % 3], "positive": texts[(i + 1) % 3]} for i in range(9)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = dataset_import_training(team=team, name="pairs", path=path).version
    job = run(
        curation_create(
            team=team,
            source=version,
            kind="semdedup",
            model=tiny_registered_model,
            params={"threshold": "0.9999"},
            enqueue=False,
        )
    )
    assert job.result["removed"] == 6
    new = curation_accept(job=job)
    assert new.training_count == new.training_rows.count() == 3
    # One of each distinct pair is kept (which copy is an implementation detail).
    kept = set(new.training_rows.values_list("anchor", "positive"))
    assert kept == {(r["anchor"], r["positive"]) for r in rows}


def test_dsir_makes_selection_and_random_baseline(client, member, team, tmp_path, tiny_version):
    import random

    rng = random.Random(0)
    planets = "mars planet sun moon orbit red dusty earth".split()
    cooking = "bake bread flour yeast soup salt stir oven".split()
    rows = [
        {"anchor": " ".join(rng.choices(words, k=6)), "positive": " ".join(rng.choices(words, k=8))}
        for words in [planets] * 30 + [cooking] * 30
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = dataset_import_training(team=team, name="mixed", path=path).version
    client.force_login(member)
    response = client.post(
        reverse("datasets:version_curate", args=[version.pk, "dsir"]),
        {
            "target": tiny_version.pk,
            "target_texts": "documents",
            "k": 20,
            "field": "anchor_positive",
        },
    )
    job = CurationJob.objects.get(kind="dsir")
    assert response.url == reverse("datasets:curation", args=[job.pk])
    job = run(job)
    assert job.status == "succeeded", job.human_error
    selected, baseline = job.version, job.baseline_version
    assert selected.training_count == baseline.training_count == 20
    assert selected.parent == baseline.parent == version
    assert selected.params["operation"] == "dsir_select"
    assert baseline.params["operation"] == "random_subset"
    assert job.result["kl_selected"] < job.result["kl_random"]
    anchors = list(selected.training_rows.values_list("anchor", flat=True))
    assert sum(any(w in a.split() for w in planets) for a in anchors) >= 15
    page = client.get(reverse("datasets:curation", args=[job.pk])).content.decode()
    assert 'id="kl-selected"' in page and 'id="baseline-version"' in page


def test_token_lengths_on_the_version_page(
    client, member, team, tiny_version, tiny_registered_model
):
    client.force_login(member)
    response = client.post(
        reverse("datasets:version_curate", args=[tiny_version.pk, "tokens"]),
        {"model": tiny_registered_model.pk},
    )
    assert response.status_code == 302
    job = run(CurationJob.objects.get(kind="tokens"))
    assert job.status == "succeeded", job.human_error
    tiny_version.refresh_from_db()
    summary = tiny_version.stats["tokens"][str(tiny_registered_model.pk)]
    assert summary["documents"]["count"] == 8 and summary["queries"]["count"] == 5
    page = client.get(reverse("datasets:version", args=[tiny_version.pk])).content.decode()
    assert 'id="words-chart"' in page and "Tokens under tiny" in page
    assert "longer than" in page


def test_curation_permissions_and_bad_input(
    client, viewer, member, outsider, team, other_team, tiny_version, tiny_registered_model
):
    url = reverse("datasets:version_curate", args=[tiny_version.pk, "mine"])
    client.force_login(viewer)
    assert client.post(url, {"split": "test", "model": tiny_registered_model.pk}).status_code == 403
    client.force_login(outsider)
    assert client.post(url, {"split": "test"}).status_code == 404
    client.force_login(member)
    response = client.post(url, {"split": "nope", "model": tiny_registered_model.pk}, follow=True)
    assert "has no split" in response.content.decode()
    response = client.post(
        url,
        {"split": "test", "model": tiny_registered_model.pk, "range_min": 5, "range_max": 3},
        follow=True,
    )
    assert "range_min" in response.content.decode()
    assert not CurationJob.objects.exists()
    with pytest.raises(CurationError):
        curation_create(
            team=other_team,
            source=tiny_version,
            kind="semdedup",
            model=tiny_registered_model,
            enqueue=False,
        )


def test_curation_runs_on_the_encode_queue(settings):
    from embedhub.celery import _route

    assert _route("workers.tasks.curation.curate", (), {}, {}) == {"queue": settings.ENCODE_QUEUE}


def test_mining_reuses_the_evaluations_document_embeddings(
    team, tiny_registered_model, tiny_version, monkeypatch
):
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from workers.tasks.curation import common
    from workers.tasks.evaluation import evaluation_execute

    assert tiny_registered_model.normalize  # the shared-cache condition
    evaluation = evaluation_create(
        team=team,
        model=tiny_registered_model,
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )
    claimed = job_claim(model=Evaluation, pk=evaluation.pk)
    job_run(job=claimed, work=lambda report: evaluation_execute(evaluation=claimed, report=report))
    stages = []
    real = common.encode

    def counting(encoder, texts, *, stage, **kwargs):
        stages.append(stage)
        return real(encoder, texts, stage=stage, **kwargs)

    monkeypatch.setattr(common, "encode", counting)
    job = run(
        curation_create(
            team=team,
            source=tiny_version,
            kind="mine",
            model=tiny_registered_model,
            params={"split": "test", "range_max": 7, "relative_margin": ""},
            enqueue=False,
        )  # fmt: skip
    )
    assert job.status == "succeeded", job.human_error
    assert stages == ["encoding queries"]  # the corpus came from the evaluation's cache


# --- one typed config per kind: the API's body, the page's forms, the command, the worker ------


@pytest.fixture
def api(team, member):
    from django.test import Client

    from apps.accounts.services import api_token_create

    _, raw = api_token_create(team=team, user=member, name="ci")
    client = Client(enforce_csrf_checks=True)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    class Api:
        def post(self, path: str, body: dict | None = None):
            return client.post(path, json.dumps(body or {}), content_type="application/json",
                               **auth)  # fmt: skip

        def get(self, path: str):
            return client.get(path, **auth)

    return Api()


def test_the_schema_lists_every_parameter_of_every_kind(client):
    from workers.common.configs.curation import CONFIGS

    schema = client.get("/api/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/curation-jobs"])
    body = components["CurationIn"]["properties"]["config"]
    assert body["discriminator"]["propertyName"] == "kind"
    assert set(body["discriminator"]["mapping"]) == set(CONFIGS)
    for kind, config_class in CONFIGS.items():
        properties = components[config_class.__name__]["properties"]
        assert set(properties) == set(config_class.model_fields), kind
        assert properties["kind"]["const"] == kind
        for name in config_class.settable():
            assert properties[name]["description"], (kind, name)
    mine = components["MiningConfig"]["properties"]
    assert (mine["range_max"]["minimum"], mine["range_max"]["default"]) == (1, 50)


def test_the_api_starts_a_job_from_its_typed_body(api, team, tiny_version, tiny_registered_model):
    body = {
        "dataset_version": tiny_version.pk,
        "model": tiny_registered_model.pk,
        "config": {"kind": "mine", "split": "test", "range_max": 7, "relative_margin": None},
    }
    response = api.post("/api/v1/curation-jobs", body)
    assert response.status_code == 202, response.json()
    job = CurationJob.objects.get()
    assert response["Location"] == f"/api/v1/curation-jobs/{job.pk}"
    assert job.kind == "mine" and job.params["split"] == "test"
    assert job.params["config"] == {
        "candidates": "dense", "range_min": 0, "range_max": 7, "num_negatives": 5,
        "relative_margin": None, "max_score": None, "sampling": "top", "seed": 0,
    }  # fmt: skip
    run(job)
    detail = api.get(f"/api/v1/curation-jobs/{job.pk}").json()
    assert detail["status"] == "succeeded" and detail["version"]
    assert detail["result"]["queries"] == 3
    listed = api.get(f"/api/v1/curation-jobs?dataset_version={tiny_version.pk}").json()
    assert [j["id"] for j in listed["curation_jobs"]] == [job.pk]


@pytest.mark.parametrize(
    ("config", "status", "named"),
    [
        ({"kind": "mine", "output_path": "/etc/passwd"}, 422, "output_path: unknown field"),
        ({"kind": "semdedup", "threshold": 2}, 422, "threshold"),
        ({"kind": "mine", "range_min": 5, "range_max": 3}, 422, "range_min < range_max"),
        ({"kind": "dsir"}, 422, "target"),
        ({"kind": "sharpen"}, 422, "kind"),
        ({"kind": "mine", "split": "nope"}, 400, "has no split 'nope'"),
    ],
)
def test_the_api_refuses_a_bad_parameter_by_name(
    api, tiny_version, tiny_registered_model, config, status, named
):
    body = {"dataset_version": tiny_version.pk, "model": tiny_registered_model.pk}
    response = api.post("/api/v1/curation-jobs", {**body, "config": config})
    assert response.status_code == status, response.json()
    assert named in response.json()["error"]
    assert "/etc/passwd" not in response.content.decode()
    assert not CurationJob.objects.exists()


def test_the_api_keeps_to_the_team_and_the_role(
    api, team, other_team, viewer, tiny_version, tiny_registered_model, tiny_model_path
):
    from django.test import Client

    from apps.accounts.services import api_token_create
    from apps.registry.services import embedding_model_register

    theirs = embedding_model_register(team=other_team, name="theirs", path=str(tiny_model_path))
    config = {"kind": "tokens"}
    body = {"dataset_version": tiny_version.pk, "model": theirs.pk, "config": config}
    response = api.post("/api/v1/curation-jobs", body)
    assert response.status_code == 404 and response.json()["error"].startswith("model:")
    _, raw = api_token_create(team=team, user=viewer, name="ci")
    response = Client().post(
        "/api/v1/curation-jobs",
        json.dumps({"dataset_version": tiny_version.pk, "model": tiny_registered_model.pk,
                    "config": config}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}",
    )  # fmt: skip
    assert response.status_code == 403
    assert not CurationJob.objects.exists()


def test_a_dedup_is_reviewed_through_the_api(api, team, dup_version, tiny_registered_model):
    response = api.post(
        "/api/v1/curation-jobs",
        {"dataset_version": dup_version.pk, "model": tiny_registered_model.pk,
         "config": {"kind": "semdedup", "threshold": 0.9999}},
    )  # fmt: skip
    assert response.status_code == 202
    job = run(CurationJob.objects.get())
    assert job.review == "pending"
    accepted = api.post(f"/api/v1/curation-jobs/{job.pk}/accept").json()
    job.refresh_from_db()
    assert accepted["review"] == "accepted" and accepted["version"] == job.version_id
    again = api.post(f"/api/v1/curation-jobs/{job.pk}/discard")
    assert again.status_code == 409 and "waiting for review" in again.json()["error"]


def test_the_page_forms_are_built_from_the_configs(tiny_version, tiny_registered_model):
    from apps.datasets.forms import CURATION_FORMS, MiningForm
    from workers.common.configs.curation import CONFIGS, MiningConfig

    for kind, form_class in CURATION_FORMS.items():
        assert form_class.config_class is CONFIGS[kind]
    form = MiningForm(version=tiny_version)
    assert set(MiningConfig.settable()) | {"model"} == set(form.fields)
    margin, window = form.fields["relative_margin"], form.fields["range_max"]
    assert margin.help_text == MiningConfig.model_fields["relative_margin"].description
    assert (window.min_value, window.max_value, window.initial) == (1, 10_000, 50)
    data = {"split": "test", "model": tiny_registered_model.pk, "relative_margin": ""}
    form = MiningForm(data, version=tiny_version)
    assert form.is_valid(), form.errors
    assert form.config.relative_margin is None  # emptied: no margin filter
    del data["relative_margin"]
    form = MiningForm(data, version=tiny_version)
    assert form.is_valid() and form.config.relative_margin == 0.05  # left out: the default
    form = MiningForm({**data, "num_negatives": "0"}, version=tiny_version)
    assert not form.is_valid() and "num_negatives: " in form.problems()[0]


def test_the_command_reads_the_config(tiny_registered_model, tiny_version):
    from tests.test_commands import run as command

    v, m = str(tiny_version.pk), str(tiny_registered_model.pk)
    code, _, err = command("curate", "semdedup", "--dataset-version", v, "--model", m,
                           "--param", "path=/etc/passwd")  # fmt: skip
    assert code == 2 and "--param: path: unknown parameter for semdedup" in err
    assert "/etc/passwd" not in err
    code, _, err = command("curate", "semdedup", "--dataset-version", v, "--model", m,
                           "--param", "threshold=2")  # fmt: skip
    assert code == 2 and "threshold: " in err
    assert not CurationJob.objects.exists()


def test_the_worker_validates_the_stored_parameters(team, tiny_version, tiny_registered_model):
    job = curation_create(team=team, source=tiny_version, kind="semdedup",
                          model=tiny_registered_model, enqueue=False)  # fmt: skip
    CurationJob.objects.filter(pk=job.pk).update(params={**job.params, "output_path": "/etc"})
    job = run(job)
    assert job.status == "failed"
    assert "output_path: Extra inputs are not permitted" in job.human_error
