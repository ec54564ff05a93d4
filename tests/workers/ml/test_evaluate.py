"""evaluate_dense end to end on the tiny model and a hand-written collection."""

from __future__ import annotations

from pathlib import Path

import pytest

import workers.ml.evaluate as evaluate_module
from tests.support.tiny_model import build_tiny_model
from workers.ml.evaluate import STAGES, EncoderSpec, EvalOutput, evaluate_dense
from workers.ml.metrics import METRICS

CORPUS = [
    ("d1", "Cats", "Cats are small domesticated carnivorous mammals."),
    ("d2", "Dogs", "Dogs were the first species to be domesticated."),
    ("d3", "Python", "Python is a programming language that lets you work quickly."),
    ("d4", "Rust", "Rust is a language empowering everyone to build reliable software."),
    ("d5", "Coffee", "Coffee is a brewed drink prepared from roasted coffee beans."),
    ("d6", "Tea", "Tea is an aromatic beverage prepared by pouring hot water over leaves."),
    ("d7", "", "The moon orbits the earth roughly once every twenty seven days."),
    ("d8", "Mars", "Mars is the fourth planet from the sun and is red and dusty."),
]
QUERIES = [
    ("q1", "which animals were domesticated first"),
    ("q2", "programming language for reliable software"),
    ("q3", "hot drink made from leaves"),
    ("q4", "red planet"),
]
QRELS = {"q1": {"d2": 1}, "q2": {"d4": 2, "d3": 1}, "q3": {"d6": 1}, "q4": {"d8": 1}}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sentences = [f"{title} {text}" for _, title, text in CORPUS] + [q for _, q in QUERIES]
    return build_tiny_model(tmp_path_factory.mktemp("eval") / "model", sentences=sentences)


def spec(path: Path, **overrides: object) -> EncoderSpec:
    values: dict = {
        "path": str(path),
        "layout": "sentence-transformers",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 64,
        "device": "cpu",
    }
    return EncoderSpec(**{**values, **overrides})


def test_evaluate_dense_reports_stages_and_scores(model_path: Path) -> None:
    reports: list[tuple[str, int, int]] = []
    out = evaluate_dense(
        model=spec(model_path),
        corpus=CORPUS,
        queries=QUERIES,
        qrels=QRELS,
        top_k=5,
        batch_size=4,
        on_progress=lambda stage, done, total: reports.append((stage, done, total)),
    )
    assert isinstance(out, EvalOutput)
    assert tuple(dict.fromkeys(stage for stage, _, _ in reports)) == STAGES
    assert ("encoding documents", 8, 8) in reports and ("encoding queries", 4, 4) in reports
    assert list(out.metrics) == list(METRICS)
    assert all(0.0 <= v <= 1.0 for v in out.metrics.values())
    assert set(out.per_query) == set(QRELS)
    assert all(0.0 <= v <= 1.0 for values in out.per_query.values() for v in values.values())
    assert set(out.run) == {q for q, _ in QUERIES}
    assert all(len(docs) == 5 for docs in out.run.values())
    assert all(set(docs) <= {d for d, _, _ in CORPUS} for docs in out.run.values())
    assert (out.documents, out.queries) == (8, 4)
    assert set(out.timings) == {
        "load_s",
        "encode_documents_s",
        "encode_queries_s",
        "search_s",
        "metrics_s",
    }
    assert all(v >= 0 for v in out.timings.values())


def test_prefixes_are_prepended_and_top_k_is_clipped(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real = evaluate_module.encode_texts

    def spy(**kwargs):
        seen.append(kwargs["texts"])
        return real(**kwargs)

    monkeypatch.setattr(evaluate_module, "encode_texts", spy)
    out = evaluate_dense(
        model=spec(model_path, query_prefix="query: ", document_prefix="passage: "),
        corpus=CORPUS[:3],
        queries=QUERIES[:2],
        qrels=QRELS,
        top_k=100,
    )
    assert seen[0][0] == "passage: Cats Cats are small domesticated carnivorous mammals."
    assert seen[1] == ["query: which animals were domesticated first", f"query: {QUERIES[1][1]}"]
    assert all(len(docs) == 3 for docs in out.run.values())
    # q3 and q4 are judged but not evaluated: they count as 0, not as absent
    assert out.per_query["q3"]["ndcg@10"] == 0.0 and set(out.per_query) == set(QRELS)


def test_a_cancel_stops_the_evaluation_and_frees_the_model(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[str] = []
    monkeypatch.setattr(evaluate_module, "free_memory", freed.append)

    class Cancelled(Exception):
        pass

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "encoding documents" and done > 0:
            raise Cancelled

    with pytest.raises(Cancelled):
        evaluate_dense(
            model=spec(model_path),
            corpus=CORPUS,
            queries=QUERIES,
            qrels=QRELS,
            on_progress=on_progress,
        )
    assert freed == ["cpu"]
