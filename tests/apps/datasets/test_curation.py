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
    from apps.runs.services import evaluation_create, evaluation_execute
    from workers.tasks.curation import common

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

    def counting(encoder, texts, *, stage, report, prefix=""):
        stages.append(stage)
        return real(encoder, texts, stage=stage, report=report, prefix=prefix)

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
