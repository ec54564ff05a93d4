"""Hybrid evaluation (dense + BM25, fused): the command, the API and the pages; the result is an
ordinary evaluation whose figures equal a bare script's fusion of the same two lists."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import call_command

from apps.runs.models import Evaluation
from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES

pytestmark = pytest.mark.django_db


def run(*args) -> dict:
    out = io.StringIO()
    call_command("evaluate", *args, stdout=out)
    return json.loads(out.getvalue())


def bare_rrf_ndcg(model_path: str, k: int = 60, depth: int = 100) -> dict[str, float]:
    """The same fusion by hand: sentence-transformers + numpy for the dense list, bm25s as
    documented for BM25, RRF written out, nDCG@10 by pytrec_eval (no EmbedHub code)."""
    import bm25s
    import pytrec_eval
    from sentence_transformers import SentenceTransformer

    docs = [(d["_id"], (d["title"] + " " + d["text"]).strip()) for d in TINY_CORPUS]
    judged = {q for q, _, _ in TINY_QRELS["test"]}
    queries = [(q["_id"], q["text"]) for q in TINY_QUERIES if q["_id"] in judged]
    model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    dv = model.encode([t for _, t in docs], normalize_embeddings=True)
    qv = model.encode([t for _, t in queries], normalize_embeddings=True)
    scores = qv @ dv.T
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([t for _, t in docs], stopwords="en", show_progress=False),
        show_progress=False,
    )
    idx, sc = retriever.retrieve(
        bm25s.tokenize([t for _, t in queries], stopwords="en", show_progress=False),
        k=len(docs),
        show_progress=False,
    )
    run = {}
    for row, (qid, _) in enumerate(queries):
        dense = sorted((-float(scores[row, j]), docs[j][0]) for j in range(len(docs)))[:depth]
        lexical = sorted(
            (-float(s), docs[int(j)][0]) for s, j in zip(sc[row], idx[row], strict=True) if s > 0
        )
        fused: dict[str, float] = {}
        for listing in (dense, lexical):
            for rank, (_, doc) in enumerate(listing[:depth], start=1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
        run[qid] = fused
    qrels = {}
    for q, d, rel in TINY_QRELS["test"]:
        qrels.setdefault(q, {})[d] = rel
    out = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return {q: v["ndcg_cut_10"] for q, v in out.items()}


def test_hybrid_rrf_equals_a_bare_scripts_fusion(tiny_registered_model, tiny_version):
    done = run(
        "--method",
        "hybrid",
        "--model",
        str(tiny_registered_model.pk),
        "--dataset-version",
        str(tiny_version.pk),
        "--split",
        "test",
        "--sync",
    )
    assert done["status"] == "succeeded", done
    assert done["fusion"]["fusion"] == "rrf" and done["fusion"]["rrf_k"] == 60
    evaluation = Evaluation.objects.get(pk=done["evaluation"])
    assert evaluation.method == "hybrid" and evaluation.label.endswith("+ BM25 (RRF)")
    expected = bare_rrf_ndcg(tiny_registered_model.path)
    got = {
        r.query.query_id: r.metrics["ndcg@10"] for r in evaluation.results.select_related("query")
    }
    assert set(got) == set(expected)
    for qid, value in expected.items():
        assert got[qid] == pytest.approx(value, abs=1e-9)
    assert evaluation.metrics["ndcg@10"] == pytest.approx(
        np.mean(list(expected.values())), abs=1e-9
    )
    assert evaluation.fusion_result["weight"] == 0.5
    assert "dense_encode_documents_s" in evaluation.timings or evaluation.cache_hit


def test_weighted_fusion_tunes_its_weight_on_another_split(
    tiny_registered_model, tiny_version, client, member
):
    done = run(
        "--method",
        "hybrid",
        "--model",
        str(tiny_registered_model.pk),
        "--dataset-version",
        str(tiny_version.pk),
        "--fusion",
        "weighted",
        "--normalization",
        "zscore",
        "--tune-split",
        "train",
        "--sync",
    )
    assert done["status"] == "succeeded", done
    result = done["fusion_result"]
    assert result["tuned"]["split"] == "train" and len(result["tuned"]["curve"]) == 21
    best = max(v for _, v in result["tuned"]["curve"])
    assert dict(map(tuple, result["tuned"]["curve"]))[result["weight"]] == best
    client.force_login(member)
    page = client.get(f"/runs/evaluations/{done['evaluation']}/").content.decode()
    assert 'id="fusion"' in page and "chosen by nDCG@10 on split train" in page
    # An ordinary evaluation: it is on the leaderboard and compares with the dense one.
    dense = run(
        "--model",
        str(tiny_registered_model.pk),
        "--dataset-version",
        str(tiny_version.pk),
        "--sync",
    )
    r = client.get(f"/runs/compare/?e={dense['evaluation']}&e={done['evaluation']}")
    assert r.status_code == 200 and "+ BM25 (weighted)" in r.content.decode()


def test_bad_fusion_settings_are_named(tiny_registered_model, tiny_version, capsys):
    base = [
        "--method",
        "hybrid",
        "--model",
        str(tiny_registered_model.pk),
        "--dataset-version",
        str(tiny_version.pk),
        "--sync",
    ]

    def refused(*args) -> str:
        with pytest.raises(SystemExit) as exited:
            run(*base, *args)
        assert exited.value.code == 2
        return capsys.readouterr().err

    assert "--tune-split: only a weighted fusion" in refused("--tune-split", "train")
    assert "--tune-split: tune on another split" in refused(
        "--fusion", "weighted", "--tune-split", "test"
    )
    assert "--rrf-k: Input should be greater than or equal to 1" in refused("--rrf-k", "0")
    assert "--dense-weight: Input should be less than or equal to 1" in refused(
        "--dense-weight", "1.5"
    )
    assert "tune_split: " in refused("--fusion", "weighted", "--tune-split", "nope")
    with pytest.raises(SystemExit):
        run("--method", "hybrid", "--dataset-version", str(tiny_version.pk), "--sync")
    assert not Evaluation.objects.exists()


def test_the_api_and_the_page_start_a_hybrid(
    client, team, member, outsider, other_team, tiny_registered_model, tiny_version
):
    from apps.accounts.services import api_token_create

    def auth(user, t):
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=t, name='t')[1]}"}

    body = {
        "method": "hybrid",
        "model": tiny_registered_model.pk,
        "split": "test",
        "dataset_version": tiny_version.pk,
        "fusion": "weighted",
        "dense_weight": 0.7,
    }
    r = client.post(
        "/api/v1/evaluations", body, content_type="application/json", **auth(member, team)
    )
    assert r.status_code == 202, r.content
    out = r.json()
    assert out["method"] == "hybrid" and out["fusion"]["dense_weight"] == 0.7
    r = client.post(
        "/api/v1/evaluations", body, content_type="application/json", **auth(outsider, other_team)
    )
    assert r.status_code == 404
    r = client.post(
        "/api/v1/evaluations",
        {**body, "normalization": "l2"},
        content_type="application/json",
        **auth(member, team),
    )
    assert r.status_code == 422 and "normalization" in json.dumps(r.json())
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["EvaluationIn"]
    assert {"fusion", "rrf_k", "normalization", "dense_weight", "tune_split", "candidates"} <= set(
        schema["properties"]
    )
    # A dense evaluation's settings record no fusion.
    r = client.post(
        "/api/v1/evaluations",
        {**body, "method": "dense"},
        content_type="application/json",
        **auth(member, team),
    )
    assert r.status_code == 202 and r.json()["fusion"] is None
    client.force_login(member)
    page = client.get(f"/datasets/versions/{tiny_version.pk}/").content.decode()
    assert 'id="hybrid-settings"' in page and 'name="tune_split"' in page
    r = client.post(
        f"/runs/evaluate/{tiny_version.pk}/",
        {
            "method": "hybrid",
            "model": tiny_registered_model.pk,
            "split": "test",
            "precision": "auto",
            "fusion": "rrf",
            "rrf_k": "30",
        },
    )
    assert r.status_code == 302
    made = Evaluation.objects.filter(method="hybrid", fusion__rrf_k=30).get()
    assert made.fusion["fusion"] == "rrf" and made.fusion["candidates"] == 100
