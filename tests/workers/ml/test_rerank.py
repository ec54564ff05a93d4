"""Rerankers: training a cross-encoder (bce, lambdaloss) from the tiny BERT's weights, reranking
arithmetic, and a rerank evaluation that keeps the first stage's order reproducing its
metrics exactly."""

from __future__ import annotations

import random

import pytest

from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES
from tests.workers.ml.test_train import FAST, ROWS
from workers.common.configs.training import ConfigError, TrainConfig
from workers.common.inspect import inspect_model_folder
from workers.ml.evaluate import evaluate_rerank
from workers.ml.fusion import ranked
from workers.ml.metrics import compute_metrics, read_trec_run, write_trec_run
from workers.ml.rerank import rerank_list, rerank_run
from workers.ml.training.data import DataError, reranker_columns
from workers.ml.training.trainer import last_checkpoint, train

CORPUS = [(d["_id"], d["title"], d["text"]) for d in TINY_CORPUS]
QUERIES = [(q["_id"], q["text"]) for q in TINY_QUERIES]
QRELS: dict[str, dict[str, int]] = {}
for _q, _d, _r in TINY_QRELS["test"]:
    QRELS.setdefault(_q, {})[_d] = _r


def config(tmp_model, **options) -> TrainConfig:
    return TrainConfig.from_dict({**FAST, "base_model_path": str(tmp_model), **options})


# --- arithmetic ----------------------------------------------------------------------------


def test_rerank_list_reorders_the_head_and_keeps_the_tail_below():
    first = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1, "e": 0.05}
    out = rerank_list(first, [0.1, 0.5, 0.3], k_prime=3)
    assert ranked(out) == ["b", "c", "a", "d", "e"]
    assert out["b"] == 0.5 and out["d"] < out["a"] and out["e"] < out["d"]


def test_rerank_ties_keep_the_first_stage_order():
    first = {"x": 3.0, "y": 2.0, "z": 1.0}
    assert ranked(rerank_list(first, [0.5, 0.5, 0.5], k_prime=3)) == ["x", "y", "z"]
    # First-stage ties are broken by document id, as everywhere in EmbedHub.
    assert ranked(rerank_list({"b": 1.0, "a": 1.0}, [0.2, 0.1], k_prime=2)) == ["a", "b"]


def test_rerank_list_refuses_a_wrong_number_of_scores():
    with pytest.raises(ValueError, match="2 scores for the 3 documents"):
        rerank_list({"a": 3.0, "b": 2.0, "c": 1.0}, [0.1, 0.2], k_prime=3)


def test_rerank_run_scores_only_the_top_k_prime():
    seen: list[int] = []

    def scorer(query, documents):
        seen.append(len(documents))
        return list(range(len(documents)))  # reverses the head

    first = {"q1": {f"d{i}": 10.0 - i for i in range(8)}, "q2": {}}
    docs = {f"d{i}": f"text {i}" for i in range(8)}
    run, timings = rerank_run(first_stage=first, queries={"q1": "a", "q2": "b"},
                              documents=docs, scorer=scorer, k_prime=5)  # fmt: skip
    assert seen == [5, 0]
    assert ranked(run["q1"]) == ["d4", "d3", "d2", "d1", "d0", "d5", "d6", "d7"]
    assert run["q2"] == {}
    assert timings["pairs"] == 5 and timings["ms_per_query"] >= 0


def test_a_reranker_that_keeps_the_order_reproduces_the_first_stage_exactly(tmp_path):
    rng = random.Random(7)
    first = {
        qid: {doc_id: rng.random() for doc_id, _, _ in rng.sample(CORPUS, min(8, len(CORPUS)))}
        for qid, _ in QUERIES
    }
    # Through a run file, as the worker reads it.
    write_trec_run(run=first, path=tmp_path / "run.trec", tag="first")
    first = read_trec_run(tmp_path / "run.trec")
    expected, expected_per_query = compute_metrics(qrels=QRELS, run=first)
    texts = {doc_id: (title + " " + text).strip() for doc_id, title, text in CORPUS}
    order = {qid: ranked(docs) for qid, docs in first.items()}
    query_of = {text: qid for qid, text in QUERIES}

    def keeps_order(query, documents):
        ids = order[query_of[query]][: len(documents)]
        assert [texts[i] for i in ids] == documents
        return [1.0 / (1 + i) for i in range(len(documents))]

    for k_prime in (5, 100):
        out = evaluate_rerank(reranker_path="", corpus=CORPUS, queries=QUERIES, qrels=QRELS,
                              first_stage=first, k_prime=k_prime, scorer=keeps_order)  # fmt: skip
        assert out.metrics == expected
        assert out.per_query == expected_per_query


def test_read_trec_run_names_the_bad_line(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 x t\n")
    with pytest.raises(ValueError, match="run.trec, line 2: score is not a number"):
        read_trec_run(path)


# --- training ------------------------------------------------------------------------------


def test_reranker_columns_pairs_and_lists():
    cols = {"anchor": ["q"], "positive": ["p"], "negative_1": ["n1"], "negative_2": ["n2"]}
    assert reranker_columns("bce", cols, 2) == {
        "query": ["q", "q", "q"], "document": ["p", "n1", "n2"], "label": [1.0, 0.0, 0.0],
    }  # fmt: skip
    assert reranker_columns("lambdaloss", cols, 2) == {
        "query": ["q"], "docs": [["p", "n1", "n2"]], "labels": [[1.0, 0.0, 0.0]],
    }  # fmt: skip


def test_reranker_options_are_checked_by_name(tiny_model_path):
    with pytest.raises(ConfigError, match="method: a reranker loss trains the whole"):
        config(tiny_model_path, loss="bce", method="lora")
    with pytest.raises(ConfigError, match="num_negatives: a reranker learns from negatives"):
        config(tiny_model_path, loss="lambdaloss", num_negatives=0)


def test_a_reranker_needs_negatives_in_the_data(tiny_model_path, tmp_path):
    rows = [{"anchor": r["anchor"], "positive": r["positive"]} for r in ROWS]
    with pytest.raises(DataError, match="mine hard negatives"):
        train(config=config(tiny_model_path, loss="bce", max_steps=2), rows=rows,
              output_dir=tmp_path / "out")  # fmt: skip


@pytest.mark.parametrize("loss", ["bce", "lambdaloss"])
def test_a_reranker_trained_from_an_embedding_models_weights_loads_as_a_cross_encoder(
    tiny_model_path, tmp_path, loss
):
    from sentence_transformers import CrossEncoder

    events: list[dict] = []
    result = train(config=config(tiny_model_path, loss=loss, max_steps=4), rows=ROWS,
                   output_dir=tmp_path / "out", on_log=events.append)  # fmt: skip
    assert result["steps"] == 4 and result["role"] == "reranker"
    assert result["negatives_per_row"] == 2 and result["rows"] == len(ROWS)
    assert [e["step"] for e in events if e["kind"] == "train"][-1] == 4
    # The live step counter: a "step" event after the last step whatever logging_steps says.
    assert [e["step"] for e in events if e["kind"] == "step"][-1] == 4
    model = CrossEncoder(result["model_dir"], local_files_only=True)
    scores = model.predict([("what about cats", "Cats purr."), ("cats", "Jupiter")])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    info = inspect_model_folder(result["model_dir"])
    assert info.role == "reranker" and info.dimension == 1
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "Fine-tuned reranker" in card and "CrossEncoder(" in card
    if loss == "bce":
        assert result["pos_weight"] == 2.0


def test_a_reranker_run_resumes_from_its_checkpoint(tiny_model_path, tmp_path):
    out = tmp_path / "out"
    stop_at = {"n": 0}

    def should_stop() -> bool:
        stop_at["n"] += 1
        return stop_at["n"] >= 3

    cfg = config(tiny_model_path, loss="bce", max_steps=6, save_steps=2)
    first = train(config=cfg, rows=ROWS, output_dir=out, should_stop=should_stop)
    assert first["stopped"] and last_checkpoint(out) is not None
    second = train(config=cfg, rows=ROWS, output_dir=out, resume_from="latest")
    assert second["resumed_from"].endswith("checkpoint-2") and second["steps"] == 6
    assert inspect_model_folder(second["model_dir"]).role == "reranker"


def test_training_events_become_log_lines_people_read():
    from workers.ml.training.child import log_line

    assert log_line({"kind": "begin", "step": 4, "total_steps": 10}) == (
        "starting at step 4 of 10 (resumed)"
    )
    line = log_line({"kind": "train", "step": 5, "total_steps": 10, "epoch": 0.5, "loss": 0.51234,
                     "learning_rate": 2e-5, "samples_per_s": 12.34})  # fmt: skip
    assert line == "step 5/10 · epoch 0.5 · loss 0.5123 · lr 2.00e-05 · 12.3 rows/s"
    assert log_line({"kind": "checkpoint", "step": 6}) == "step 6: checkpoint written"
    assert log_line({"kind": "step", "step": 7}) == ""
