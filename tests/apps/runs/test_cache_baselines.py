"""The embedding cache (a second evaluation of the same corpus does not encode it), the BM25
baseline, and the base-model baseline of a derived model."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create
from workers.tasks.evaluation import evaluation_execute
from workers.tasks.runtime import job_claim, job_run


def run(evaluation: Evaluation) -> Evaluation:
    job = job_claim(model=Evaluation, pk=evaluation.pk)
    job_run(job=job, work=lambda report: evaluation_execute(evaluation=job, report=report))
    job.refresh_from_db()
    assert job.status == "succeeded", job.human_error
    return job


def test_second_evaluation_reads_the_cache_and_never_loads_the_model(
    team, tiny_registered_model, tiny_version, monkeypatch
):
    first = run(
        evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
    )
    assert not first.cache_hit and len(first.embedding_key) == 64
    assert "encode_documents_s" in first.timings

    def no_encoder(**kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr("workers.ml.evaluate.load_encoder", no_encoder)
    second = run(
        evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
    )
    assert second.cache_hit and second.embedding_key == first.embedding_key
    assert second.metrics == pytest.approx(first.metrics, abs=1e-6)
    assert "encode_documents_s" not in second.timings


def test_a_different_max_length_is_a_different_cache_entry(
    team, tiny_registered_model, tiny_version
):
    first = run(
        evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
    )
    other = evaluation_create(
        team=team,
        model=tiny_registered_model,
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )
    Evaluation.objects.filter(pk=other.pk).update(max_seq_length=16)
    other = run(Evaluation.objects.get(pk=other.pk))
    assert not other.cache_hit and other.embedding_key != first.embedding_key


def test_bm25_baseline_from_the_page(client, member, tiny_version):
    client.force_login(member)
    response = client.post(
        reverse("runs:evaluation_start", args=[tiny_version.pk]),
        {"method": "bm25", "split": "test"},
    )
    evaluation = Evaluation.objects.get()
    assert response.url == reverse("runs:evaluation", args=[evaluation.pk])
    assert evaluation.method == "bm25" and evaluation.model is None
    evaluation = run(evaluation)
    # q2 "programming language for reliable software" shares terms with d4 (grade 2) first.
    assert evaluation.metrics["ndcg@10"] > 0.5
    assert evaluation.metrics["recall@100"] == pytest.approx(1.0)
    page = client.get(reverse("runs:evaluation", args=[evaluation.pk])).content.decode()
    assert "BM25 (bm25s)" in page


def test_dense_needs_a_model(client, member, tiny_version):
    client.force_login(member)
    client.post(reverse("runs:evaluation_start", args=[tiny_version.pk]), {"split": "test"})
    assert not Evaluation.objects.exists()


def test_base_model_baseline_button(client, member, team, tiny_registered_model, tiny_version):
    child = EmbeddingModel.objects.create(
        team=team,
        name="tiny-tuned",
        path=tiny_registered_model.path,
        layout=tiny_registered_model.layout,
        dimension=tiny_registered_model.dimension,
        max_seq_length=tiny_registered_model.max_seq_length,
        pooling=tiny_registered_model.pooling,
        normalize=tiny_registered_model.normalize,
        parent=tiny_registered_model,
    )
    evaluation = run(
        evaluation_create(
            team=team, model=child, dataset_version=tiny_version, split="test", enqueue=False
        )
    )
    client.force_login(member)
    page = client.get(reverse("runs:evaluation", args=[evaluation.pk])).content.decode()
    assert 'id="baseline-base"' in page and 'id="baseline-bm25"' in page
    client.post(
        reverse("runs:evaluation_start", args=[tiny_version.pk]),
        {"model": tiny_registered_model.pk, "split": "test"},
    )
    base = Evaluation.objects.exclude(pk=evaluation.pk).get()
    assert base.model == tiny_registered_model


def test_evaluation_stores_and_shows_sweep_and_diagnostics(
    client, member, team, tiny_registered_model, tiny_version
):
    evaluation = run(
        evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
    )
    full = max(r["dim"] for r in evaluation.sweep)
    exact = next(r for r in evaluation.sweep if r["dim"] == full and r["precision"] == "float32")
    # The full-size float32 row is the evaluation itself.
    assert exact["ndcg@10"] == pytest.approx(evaluation.metrics["ndcg@10"], abs=1e-9)
    assert {r["precision"] for r in evaluation.sweep} == {
        "float32",
        "int8",
        "binary",
        "binary_rescore",
    }
    d = evaluation.diagnostics
    assert d["alignment_pairs"] == 4 and 0 < d["effective_rank"] <= d["effective_rank_max"]
    assert "sweep_s" in evaluation.timings
    client.force_login(member)
    page = client.get(reverse("runs:evaluation", args=[evaluation.pk])).content.decode()
    assert 'id="sweep-table"' in page and 'id="sweep-chart"' in page
    assert 'id="diagnostics"' in page and "Effective rank" in page and "<circle" in page
    bm25 = run(
        evaluation_create(
            team=team,
            model=None,
            method="bm25",
            dataset_version=tiny_version,
            split="test",
            enqueue=False,
        )
    )
    assert bm25.sweep == [] and bm25.diagnostics == {}
