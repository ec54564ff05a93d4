"""Rerankers in the product: registered as such, kept out of everything that embeds, trained as
a run, and evaluated retrieve-then-rerank over another evaluation's lists (command, API, page),
scoped to the team."""

from __future__ import annotations

import json

import pytest

from apps.registry.services import embedding_model_register
from apps.runs.models import Evaluation
from apps.runs.services import EvaluationError, evaluation_create
from tests.apps.runs.test_hybrid import run

pytestmark = pytest.mark.django_db


@pytest.fixture
def reranker(team, tiny_reranker_path):
    return embedding_model_register(team=team, name="tiny-ce", path=str(tiny_reranker_path))


@pytest.fixture
def bm25(tiny_version):
    done = run("--method", "bm25", "--dataset-version", str(tiny_version.pk), "--sync")
    assert done["status"] == "succeeded"
    return Evaluation.objects.get(pk=done["evaluation"])


def auth(user, team):
    from apps.accounts.services import api_token_create

    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=team, name='t')[1]}"}


def test_a_cross_encoder_registers_as_a_reranker_and_cannot_embed(
    team, reranker, tiny_version, tiny_registered_model
):
    from apps.indexes.services import IndexBuildError, index_build_create
    from apps.registry.services import OptimizeError, optimize_job_create
    from apps.runs.training import TrainingError, training_run_preview
    from workers.common.configs.optimize import OptimizeConfig

    assert reranker.is_reranker and reranker.dimension == 1
    assert tiny_registered_model.role == "embedding"
    with pytest.raises(EvaluationError, match="model: tiny-ce is a reranker"):
        evaluation_create(team=team, model=reranker, dataset_version=tiny_version, split="test",
                          enqueue=False)  # fmt: skip
    with pytest.raises(IndexBuildError, match="model: tiny-ce is a reranker"):
        index_build_create(team=team, model=reranker, dataset_version=tiny_version,
                           index_type="flat", enqueue=False)  # fmt: skip
    with pytest.raises(OptimizeError, match="model: tiny-ce is a reranker"):
        optimize_job_create(team=team, source=reranker, config=OptimizeConfig(), enqueue=False)
    with pytest.raises(TrainingError, match="base_model: tiny-ce is a reranker"):
        training_run_preview(team=team, base_model=reranker, train_version=tiny_version,
                             options={"loss": "mnrl"})  # fmt: skip
    # A reranker loss takes it (a reranker trains further).
    preview = training_run_preview(team=team, base_model=reranker, train_version=tiny_version,
                                   options={"loss": "bce"})  # fmt: skip
    assert preview["config"]["loss"] == "bce"


def test_rerank_evaluation_by_command_scores_the_first_stages_lists(
    team, reranker, tiny_version, bm25, tiny_registered_model
):
    done = run("--method", "rerank", "--model", str(reranker.pk), "--first-stage",
               str(bm25.pk), "--k-prime", "5", "--dataset-version", str(tiny_version.pk),
               "--sync")  # fmt: skip
    assert done["status"] == "succeeded", done
    rerank = Evaluation.objects.get(pk=done["evaluation"])
    assert rerank.first_stage == bm25 and rerank.fusion == {"k_prime": 5}
    assert rerank.split == bm25.split and rerank.query_count == bm25.query_count
    assert set(rerank.metrics) == set(bm25.metrics)
    assert rerank.timings["ms_per_query"] > 0 and rerank.timings["pairs"] > 0
    assert rerank.label == "BM25 (bm25s) → tiny-ce (top 5)"
    # A reranker leaves the first stage's documents below k′ where they were: recall@100 and
    # the set of documents returned do not change.
    assert rerank.metrics["recall@100"] == pytest.approx(bm25.metrics["recall@100"])
    # The same again is the same evaluation.
    again = run("--method", "rerank", "--model", str(reranker.pk), "--first-stage",
                str(bm25.pk), "--k-prime", "5", "--dataset-version", str(tiny_version.pk),
                "--sync")  # fmt: skip
    assert again["status"] == "succeeded"
    # Only a reranker reranks, and only a finished evaluation's lists.
    with pytest.raises(EvaluationError, match="model: tiny is an embedding model"):
        evaluation_create(team=team, model=tiny_registered_model, method="rerank",
                          dataset_version=tiny_version, split="test", first_stage=bm25,
                          enqueue=False)  # fmt: skip
    pending = evaluation_create(
        team=team, model=None, method="bm25", dataset_version=tiny_version, split="test",
        enqueue=False,
    )  # fmt: skip
    with pytest.raises(EvaluationError, match="first_stage: evaluation #.* has not succeeded"):
        evaluation_create(team=team, model=reranker, method="rerank", dataset_version=tiny_version,
                          split="test", first_stage=pending, enqueue=False)  # fmt: skip
    with pytest.raises(EvaluationError, match="first_stage: .* rerank it on the same version"):
        evaluation_create(team=team, model=reranker, method="rerank", dataset_version=tiny_version,
                          split="train", first_stage=bm25, enqueue=False)  # fmt: skip


def test_a_rerank_whose_first_stage_lost_its_run_file_fails_saying_so(
    team, reranker, tiny_version, bm25
):
    from pathlib import Path

    from workers.tasks.evaluation import evaluate

    rerank = evaluation_create(team=team, model=reranker, method="rerank",
                               dataset_version=tiny_version, split="test", first_stage=bm25,
                               enqueue=False)  # fmt: skip
    Path(bm25.run_file).unlink()
    evaluate.run(rerank.pk)
    rerank.refresh_from_db()
    assert rerank.status == "failed"
    assert "first stage's ranked lists are gone" in rerank.human_error


def test_the_api_and_the_pages_rerank_scoped_to_the_team(
    client, team, member, other_team, reranker, tiny_version, bm25, tiny_reranker_path, tmp_path
):
    body = {"method": "rerank", "model": reranker.pk, "first_stage": bm25.pk, "k_prime": 3,
            "split": "test", "dataset_version": tiny_version.pk}  # fmt: skip
    r = client.post("/api/v1/evaluations", body, content_type="application/json",
                    **auth(member, team))  # fmt: skip
    assert r.status_code == 202, r.content
    out = r.json()
    assert out["method"] == "rerank" and out["first_stage"] == bm25.pk
    assert out["fusion"] == {"k_prime": 3}
    # Bad parameters are refused naming the field.
    for bad, field in (({"k_prime": 0}, "k_prime"), ({"first_stage": None}, "first_stage")):
        r = client.post("/api/v1/evaluations", {**body, **bad}, content_type="application/json",
                        **auth(member, team))  # fmt: skip
        assert r.status_code in (400, 422) and field in json.dumps(r.json()), r.content
    # Another team's reranker and first stage are missing, not forbidden.
    theirs = embedding_model_register(team=other_team, name="ce", path=str(tiny_reranker_path))
    r = client.post("/api/v1/evaluations", {**body, "model": theirs.pk},
                    content_type="application/json", **auth(member, team))  # fmt: skip
    assert r.status_code == 404 and r.json()["error"] == "model: no such model in your team"
    from apps.datasets.services import dataset_import_beir
    from tests.conftest import write_beir

    their_version = dataset_import_beir(
        team=other_team, name="theirs", path=write_beir(tmp_path / "theirs")
    ).version
    their_bm25 = evaluation_create(
        team=other_team, model=None, method="bm25", dataset_version=their_version,
        split="test", enqueue=False,
    )  # fmt: skip
    r = client.post("/api/v1/evaluations", {**body, "first_stage": their_bm25.pk},
                    content_type="application/json", **auth(member, team))  # fmt: skip
    assert r.status_code == 404
    assert r.json()["error"] == "first_stage: no such evaluation in your team"
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["EvaluationIn"]
    assert {"first_stage", "k_prime"} <= set(schema["properties"])
    assert "rerank" in schema["properties"]["method"]["enum"]

    # The pages: the first stage offers "Rerank these"; the form starts one; the rerank's page
    # links the paired comparison with its first stage.
    client.force_login(member)
    page = client.get(f"/runs/evaluations/{bm25.pk}/").content.decode()
    assert 'id="rerank-these"' in page and "tiny-ce" in page
    r = client.post(f"/runs/evaluate/{tiny_version.pk}/", {"method": "rerank", "model": reranker.pk,
                    "first_stage": bm25.pk, "k_prime": "7", "split": "test",
                    "precision": "auto"})  # fmt: skip
    assert r.status_code == 302
    made = Evaluation.objects.get(method="rerank", fusion__k_prime=7)
    assert made.first_stage == bm25 and made.model == reranker
    page = client.get(f"/runs/evaluations/{made.pk}/").content.decode()
    assert 'id="rerank"' in page and f"evaluation #{bm25.pk}" in page
    version_page = client.get(f"/datasets/versions/{tiny_version.pk}/").content.decode()
    assert 'id="rerank-settings"' in version_page and "(reranker)" in version_page
    model_page = client.get(f"/models/{reranker.pk}/").content.decode()
    assert 'id="role"' in model_page and 'id="optimize"' not in model_page
    assert client.get(f"/models/{theirs.pk}/").status_code == 404


def test_the_compare_page_sets_the_rerank_against_its_first_stage(
    client, member, team, reranker, tiny_version, bm25
):
    done = run("--method", "rerank", "--model", str(reranker.pk), "--first-stage",
               str(bm25.pk), "--dataset-version", str(tiny_version.pk), "--sync")  # fmt: skip
    client.force_login(member)
    page = client.get(f"/runs/evaluations/{done['evaluation']}/").content.decode()
    assert 'id="compare-first-stage"' in page
    r = client.get(f"/runs/compare/?e={bm25.pk}&e={done['evaluation']}&baseline={bm25.pk}")
    assert r.status_code == 200
    text = r.content.decode()
    assert "tiny-ce" in text and "BM25" in text


def test_a_reranker_run_registers_a_reranker_and_reranks_the_latest_first_stage(
    team, tiny_registered_model, tiny_version, bm25, tmp_path, monkeypatch
):
    from apps.datasets.services import dataset_import_training
    from apps.runs.training import training_run_create
    from tests.apps.runs.test_training import run_sync
    from tests.conftest import TINY_CORPUS

    monkeypatch.setattr("workers.tasks.evaluation.evaluate.apply_async", lambda *a, **k: None)
    rows = [
        {"anchor": f"about {d['title'] or 'it'}", "positive": d["text"],
         "negative_1": TINY_CORPUS[(i + 2) % len(TINY_CORPUS)]["text"],
         "negative_2": TINY_CORPUS[(i + 4) % len(TINY_CORPUS)]["text"]}
        for i, d in enumerate(TINY_CORPUS)
    ]  # fmt: skip
    path = tmp_path / "triplets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    triplets = dataset_import_training(team=team, name="triplets", path=path).version
    run = training_run_create(
        team=team, base_model=tiny_registered_model, train_version=triplets,
        eval_version=tiny_version, eval_split="test", enqueue=False,
        options={"loss": "lambdaloss", "batch_size": 2, "max_steps": 3, "logging_steps": 1,
                 "save_steps": 2},
    )  # fmt: skip
    run = run_sync(run)
    assert run.status == "succeeded", (run.human_error, run.log_tail[-2000:])
    model = run.result_model
    assert model.is_reranker and model.parent == tiny_registered_model
    assert run.result["role"] == "reranker" and run.result["negatives_per_row"] == 2
    assert len([p for p in run.log if "loss" in p]) == 3
    # Evaluated by reranking the split's most recent first stage (the BM25 one).
    assert run.evaluation.method == "rerank" and run.evaluation.first_stage == bm25
    assert run.evaluation.model == model
