"""Fine-tuning (workers/ml/training/, losses.py) on the tiny random BERT.

Every run is a handful of steps at batch 4; what is checked is the plumbing (steps, saved
folders, adapters, checkpoints, resume, cancel, the child's protocol) and the Starbucks loss
against a hand computation, not model quality.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, TINY_CORPUS, TINY_QRELS, TINY_QUERIES
from workers.common.configs.training import ConfigError, TrainConfig
from workers.common.estimate import estimate
from workers.ml.training.data import DataError, read_rows
from workers.ml.training.trainer import last_checkpoint, train
from workers.tasks.supervisor import ChildFailed, supervise

ROWS = [
    {
        "anchor": f"what about {doc['title'] or 'the moon'}",
        "positive": doc["text"],
        "negatives": [
            TINY_CORPUS[(i + 3) % len(TINY_CORPUS)]["text"],
            TINY_CORPUS[(i + 5) % len(TINY_CORPUS)]["text"],
        ],
    }
    for i, doc in enumerate(TINY_CORPUS)
]
EVAL = {
    "corpus": {d["_id"]: {"title": d["title"], "text": d["text"]} for d in TINY_CORPUS},
    "queries": {q["_id"]: q["text"] for q in TINY_QUERIES},
    "qrels": {qid: {doc: rel} for qid, doc, rel in TINY_QRELS["test"]},
}
FAST = {"batch_size": 4, "max_seq_length": 32, "logging_steps": 1, "save_steps": 2}


def child_command(spec: Path) -> list[str]:
    return [sys.executable, "-m", "workers.ml.training.child", str(spec)]


def run_child(spec: dict, **kwargs) -> dict:
    """The training child under the worker's supervisor, as production runs it."""
    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps(spec), encoding="utf-8")
    return supervise(
        child_command(out / "job.json"), log_path=out / "train.log", cwd=REPO,
        label="The training process", **kwargs,
    )  # fmt: skip


def _config(model: Path, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({"base_model_path": str(model), **FAST, **overrides})


def _encode(path: str | Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_numpy=True)


# --- the child run, started first so its start-up overlaps the in-process tests ------------


@pytest.fixture(scope="module", autouse=True)
def background_child(tiny_model_path, tmp_path_factory):
    """A real child-process run through the worker's supervisor, on a thread.

    A fresh interpreter spends 10-20 s importing torch and sentence-transformers; started here,
    that overlaps the tests below and ``test_child_process_run`` only collects the outcome.
    """
    out = tmp_path_factory.mktemp("child-run")
    rows_path = out / "train.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    spec = {
        "config": {"base_model_path": str(tiny_model_path), **FAST, "max_steps": 2},
        "rows": str(rows_path),
        "output_dir": str(out / "run"),
    }
    state: dict = {"events": [], "stop": False}

    def run() -> None:
        try:
            state["result"] = run_child(
                spec,
                on_event=state["events"].append,
                should_stop=lambda: state["stop"],
                poll_s=0.2,
                grace_s=10,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        except Exception as exc:  # noqa: BLE001 - reported by the test
            state["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    state["thread"] = thread
    # Every trainer.train() starts with a full gc.collect() (accelerate's free_memory), ~0.5 s
    # over the heap of torch + transformers + pytest; frozen objects are not scanned again.
    import sentence_transformers  # noqa: F401 - imported now so that its objects are frozen
    import torch

    gc.freeze()
    # One thread: the tiny model's matmuls gain nothing from two, the child uses the other core,
    # and on a busy 2-core machine OpenMP's spinning threads made the file twice as slow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield state
    torch.set_num_threads(threads)
    gc.unfreeze()
    state["stop"] = True  # only matters when the collecting test did not run
    thread.join(timeout=60)


# --- configuration -------------------------------------------------------------------------


def test_modules_import_without_the_heavy_libraries():
    code = (
        "import json, sys, workers.ml.losses; "
        "from workers.ml.training import card, child, data, trainer; "
        "import workers.common.estimate, workers.common.configs.training; "
        "print(json.dumps([m for m in ('torch', 'transformers', 'sentence_transformers', "
        "'peft', 'datasets', 'django') if m in sys.modules]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_config_round_trips_through_json(tiny_model_path):
    config = _config(
        tiny_model_path,
        method="lora",
        loss="starbucks",
        starbucks_pairs=[[1, 32], [2, 64]],
        matryoshka_dims=[64, 32],
        lora_target_modules=["query", "value"],
    )
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert TrainConfig.from_dict({"base_model_path": "x"}).effective_learning_rate == 2e-5
    assert again.effective_learning_rate == 1e-4  # LoRA default


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"colour": "red"}, "colour"),
        ({"base_model_path": ""}, "base_model_path"),
        ({"loss": "triplet"}, "loss"),
        ({"method": "qlora"}, "method"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"bf16": True, "fp16": True}, "fp16"),
        ({"loss": "gist"}, "guide_model_path"),
        ({"loss": "gist", "guide_model_path": "/g", "num_negatives": 2}, "num_negatives"),
        ({"matryoshka_dims": [64, 64]}, "matryoshka_dims"),
        ({"starbucks_pairs": [[2, 64], [1, 32]]}, "starbucks_pairs"),
        ({"starbucks_pairs": [[1]]}, "starbucks_pairs"),
        ({"lora_target_modules": "attention"}, "lora_target_modules"),
        ({"pooling": "weighted"}, "pooling"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"base_model_path": "/m", **changes})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_config_missing_base_model_is_named():
    with pytest.raises(ConfigError, match=r"^base_model_path: required"):
        TrainConfig.from_dict({"loss": "mnrl"})


def test_rows_are_checked_and_negatives_evened_out(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"anchor": "a", "positive": "p"})
        + "\n\n"
        + json.dumps({"anchor": "b", "positive": ""})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"^line 2: 'positive' must be a non-empty string"):
        read_rows(path)
    with pytest.raises(DataError, match="row 1: 'negatives'"):
        read_rows([{"anchor": "a", "positive": "p", "negatives": "n"}])
    rows = read_rows([{"anchor": "a", "positive": "p", "negative": "n"}])
    assert rows[0]["negatives"] == ["n"]

    from workers.ml.training.data import columns as _columns

    rows = [
        {"anchor": "a", "positive": "p", "negatives": ["n1", "n2"]},
        {"anchor": "b", "positive": "q", "negatives": ["m1"]},
    ]
    columns, k, dropped = _columns(TrainConfig(base_model_path="m", query_prefix="query: "), rows)
    assert (k, dropped) == (1, 0) and list(columns) == ["anchor", "positive", "negative_1"]
    assert columns["anchor"] == ["query: a", "query: b"]
    config = TrainConfig(base_model_path="m", num_negatives=2, document_prefix="d: ")
    columns, k, dropped = _columns(config, rows)
    assert (k, dropped) == (2, 1) and columns["negative_2"] == ["d: n2"]
    # A mined set: 19 rows of 5 negatives and one of 2 trains with 5 (the short row is
    # dropped and counted), not with the 2 the shortest row has.
    five = [f"n{j}" for j in range(5)]
    mined = [{"anchor": f"a{i}", "positive": "p", "negatives": five} for i in range(19)]
    mined.append({"anchor": "z", "positive": "p", "negatives": ["x", "y"]})
    columns, k, dropped = _columns(TrainConfig(base_model_path="m"), mined)
    assert (k, dropped) == (5, 1) and len(columns["negative_5"]) == 19


# --- estimates -----------------------------------------------------------------------------


def test_estimate_counts_parameters_steps_and_memory(tiny_model_path, tmp_path):
    from workers.common.inspect import inspect_model_folder

    full = estimate(_config(tiny_model_path, epochs=2.0), 30)
    assert full["parameters"] == inspect_model_folder(tiny_model_path).parameters
    assert full["trainable_parameters"] == full["parameters"]
    assert (full["steps_per_epoch"], full["total_steps"], full["warmup_steps"]) == (8, 16, 2)
    b = full["bytes"]
    assert b["optimizer"] == 2 * b["gradients"] == 2 * b["weights"]
    assert b["total"] > b["weights"] + b["activations"] and full["total_gib"] > 0

    lora = estimate(_config(tiny_model_path, method="lora", max_steps=5), 30)
    # query/key/value (64 -> 64) in 2 layers at r=8: 2 * 3 * 8 * (64 + 64).
    assert lora["trainable_parameters"] == 6144 and lora["total_steps"] == 5
    assert lora["bytes"]["optimizer"] < full["bytes"]["optimizer"]

    bigger = estimate(_config(tiny_model_path, batch_size=16), 30, num_negatives=3)
    assert bigger["bytes"]["activations"] > 4 * full["bytes"]["activations"]
    saved = estimate(_config(tiny_model_path, gradient_checkpointing=True), 30)
    assert saved["bytes"]["activations"] < full["bytes"]["activations"]
    short = estimate(_config(tiny_model_path), 30, query_tokens=8, document_tokens=16)
    assert short["bytes"]["activations"] < full["bytes"]["activations"]

    # BERT-base shape from config.json alone (no weights in the folder).
    base = tmp_path / "bert-base"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
                "vocab_size": 30522,
                "max_position_embeddings": 512,
            }
        )
    )
    est = estimate(
        TrainConfig(base_model_path=str(base), max_seq_length=256, batch_size=32),
        100_000,
        num_negatives=1,
    )
    assert 105e6 < est["parameters"] < 115e6  # bert-base-uncased has 109.5M
    assert 3 < est["total_gib"] < 40 and est["total_steps"] == 3125


# --- training, every loss ------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, method",
    [
        ("mnrl", "full"),
        ("mnrl", "lora"),
        ("cached_mnrl", "full"),
        ("gist", "lora"),
        ("matryoshka", "full"),
        ("matryoshka2d", "lora"),
        ("starbucks", "full"),
        ("starbucks", "lora"),
    ],
)
def test_each_loss_trains_and_saves_a_loadable_model(tiny_model_path, tmp_path, loss, method):
    extra = {"guide_model_path": str(tiny_model_path)} if loss == "gist" else {}
    if loss == "cached_mnrl":
        extra["mini_batch_size"] = 2
    # No checkpoint (save_steps > max_steps): checkpoints have their own test.
    config = _config(tiny_model_path, loss=loss, method=method, max_steps=2, save_steps=10, **extra)
    events: list[dict] = []
    result = train(config=config, rows=ROWS, output_dir=tmp_path, on_log=events.append)

    assert result["steps"] == 2 and not result["stopped"]
    assert np.isfinite(result["train_loss"])
    assert result["negatives_per_row"] == (1 if loss == "gist" else 2)
    assert [e["step"] for e in events if e["kind"] == "train"] == [1, 2]
    assert events[0] == {"kind": "begin", "step": 0, "total_steps": 2}
    model_dir = Path(result["model_dir"])
    assert model_dir == tmp_path / "model" and (model_dir / "README.md").is_file()
    vectors = _encode(model_dir, ["red planet", "hot drink"])
    assert vectors.shape == (2, 64) and np.isfinite(vectors).all()
    if method == "lora":
        assert 0 < result["trainable_parameters"] < result["total_parameters"]
        adapter = Path(result["adapter_dir"])
        assert (adapter / "adapter_config.json").is_file()
        assert (adapter / "adapter_model.safetensors").is_file()
        assert (model_dir / "model.safetensors").is_file()  # merged: a plain full model
        assert not (model_dir / "adapter_config.json").exists()
    else:
        assert result["trainable_parameters"] == result["total_parameters"]
        assert result["adapter_dir"] is None
    if loss in ("matryoshka", "matryoshka2d"):
        assert result["matryoshka_dims"] == [64, 32]
    if loss == "starbucks":
        assert result["starbucks_pairs"] == [[1, 32], [2, 64]]
    card = (model_dir / "README.md").read_text()
    assert str(tiny_model_path) in card and f'"loss": "{loss}"' in card


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16"}, "bf16"), ({"avx2"}, "fp32")])
def test_bf16_trains_on_a_cpu_that_has_it(tiny_model_path, tmp_path, monkeypatch, flags,
                                          expected):  # fmt: skip
    from workers.ml import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    config = _config(tiny_model_path, max_steps=2, save_steps=10, bf16=True)
    result = train(config=config, rows=ROWS, output_dir=tmp_path)
    assert result["device"] == "cpu" and result["precision"] == expected
    assert result["steps"] == 2 and np.isfinite(result["train_loss"])
    vectors = _encode(Path(result["model_dir"]), ["red planet", "hot drink"])
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()  # saved in fp32


def test_unmerged_lora_is_base_plus_adapter_and_matches_the_merge(tiny_model_path, tmp_path):
    from workers.ml.training.trainer import _merged

    config = _config(tiny_model_path, method="lora", merge_lora=False, max_steps=2, seed=3)
    result = train(config=config, rows=ROWS, output_dir=tmp_path)
    model_dir = Path(result["model_dir"])
    assert (model_dir / "adapter_config.json").is_file()
    assert not (model_dir / "model.safetensors").exists()
    texts = ["red planet", "which animals were domesticated first"]
    with_adapter = _encode(model_dir, texts)
    merged = _merged(config, Path(result["adapter_dir"]), "cpu").encode(texts)
    np.testing.assert_allclose(with_adapter, merged, atol=1e-5)
    assert not np.allclose(with_adapter, _encode(tiny_model_path, texts), atol=1e-6)


def test_starbucks_loss_is_the_sum_over_pairs_of_mnrl_on_truncated_layers(tiny_model_path):
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    from workers.ml.losses import build_starbucks_loss

    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    model.eval()  # no dropout: the two computations must see the same network
    anchors = [r["anchor"] for r in ROWS[:4]]
    positives = [r["positive"] for r in ROWS[:4]]
    pairs = [(1, 16), (1, 32), (2, 64)]
    loss = build_starbucks_loss(model, pairs, kl_temperature=0.0)
    features = [model.preprocess(anchors), model.preprocess(positives)]
    value = loss(features, None)
    value.backward()
    layer0 = model[0].auto_model.encoder.layer[0].attention.self.query.weight
    assert layer0.grad is not None and layer0.grad.abs().sum() > 0

    expected = 0.0
    with torch.no_grad():
        outs = []
        for texts in (anchors, positives):
            f = model.preprocess(texts)
            hidden = (
                model[0]
                .auto_model(
                    input_ids=f["input_ids"],
                    attention_mask=f["attention_mask"],
                    output_hidden_states=True,
                )
                .hidden_states
            )
            mask = f["attention_mask"].unsqueeze(-1).float()
            outs.append([(h * mask).sum(1) / mask.sum(1) for h in hidden])
        for layer, dim in pairs:
            a = F.normalize(outs[0][layer][:, :dim], dim=-1)
            p = F.normalize(outs[1][layer][:, :dim], dim=-1)
            expected += F.cross_entropy(20.0 * a @ p.T, torch.arange(4)).item()
    assert value.item() == pytest.approx(expected, rel=1e-4)

    with_kl = build_starbucks_loss(model, pairs)(
        [model.preprocess(anchors), model.preprocess(positives)], None
    )
    assert with_kl.item() > value.item()


def test_starbucks_pairs_beyond_the_model_are_refused(tiny_model_path, tmp_path):
    config = _config(tiny_model_path, loss="starbucks", starbucks_pairs=[[1, 32], [3, 64]])
    with pytest.raises(ConfigError, match=r"^starbucks_pairs: layer 3 > the model's 2 layers"):
        train(config=config, rows=ROWS, output_dir=tmp_path)
    config = _config(tiny_model_path, loss="matryoshka", matryoshka_dims=[128, 64])
    with pytest.raises(ConfigError, match=r"^matryoshka_dims: 128 exceeds"):
        train(config=config, rows=ROWS, output_dir=tmp_path)


# --- stop, checkpoints, resume, evaluation -------------------------------------------------


def test_stop_then_resume_ends_where_an_uninterrupted_run_ends(tiny_model_path, tmp_path):
    config = _config(tiny_model_path, max_steps=4, eval_steps=2)
    texts = ["red planet", "hot drink made from leaves"]

    calls = []
    stopped = train(
        config=config,
        rows=ROWS,
        output_dir=tmp_path / "run",
        eval_data=EVAL,
        should_stop=lambda: calls.append(1) or len(calls) >= 2,
    )
    assert stopped["stopped"] and stopped["steps"] == 2 and stopped["model_dir"] is None
    assert last_checkpoint(tmp_path / "run").endswith("checkpoint-2")
    # A checkpoint cut short (no trainer_state.json) is not a resume point.
    (tmp_path / "run" / "checkpoints" / "checkpoint-3").mkdir()
    assert last_checkpoint(tmp_path / "run").endswith("checkpoint-2")

    events: list[dict] = []
    resumed = train(
        config=config,
        rows=ROWS,
        output_dir=tmp_path / "run",
        eval_data=EVAL,
        resume_from="latest",
        on_log=events.append,
    )
    assert resumed["steps"] == 4 and resumed["resumed_from"].endswith("checkpoint-2")
    assert events[0] == {"kind": "begin", "step": 2, "total_steps": 4}
    assert [e["step"] for e in events if e["kind"] == "train"] == [3, 4]
    assert [e["step"] for e in events if e["kind"] == "eval"] == [4]
    assert [e["step"] for e in events if e["kind"] == "checkpoint"] == [4]
    [evaluated] = [e for e in events if e["kind"] == "eval"]
    assert 0 <= evaluated["metrics"]["cosine_ndcg@10"] <= 1
    assert 0 <= resumed["metrics"]["cosine_ndcg@10"] <= 1
    assert "## Evaluation" in (Path(resumed["model_dir"]) / "README.md").read_text()

    straight = train(config=config, rows=ROWS, output_dir=tmp_path / "straight", eval_data=EVAL)
    assert straight["steps"] == 4
    np.testing.assert_allclose(
        _encode(resumed["model_dir"], texts), _encode(straight["model_dir"], texts), atol=1e-5
    )


def test_lora_run_resumes_from_an_adapter_checkpoint(tiny_model_path, tmp_path):
    config = _config(tiny_model_path, method="lora", max_steps=2, save_steps=1)
    first = train(config=config, rows=ROWS, output_dir=tmp_path, should_stop=lambda: True)
    assert first["stopped"] and first["steps"] == 1
    checkpoint = Path(last_checkpoint(tmp_path))
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "scheduler.pt").is_file()
    assert not (checkpoint / "model.safetensors").exists()  # the adapter, not the whole model
    resumed = train(config=config, rows=ROWS, output_dir=tmp_path, resume_from=str(checkpoint))
    assert resumed["steps"] == 2 and resumed["resumed_from"] == str(checkpoint)
    assert resumed["trainable_parameters"] == first["trainable_parameters"] == 6144
    assert Path(resumed["adapter_dir"], "adapter_config.json").is_file()


# --- the child process ---------------------------------------------------------------------


def test_child_reports_bad_data_as_an_error_event(tiny_model_path, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "config": {"base_model_path": str(tiny_model_path), **FAST},
                "rows": [ROWS[0], {"anchor": "no positive"}],
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    done = subprocess.run(child_command(spec), capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == ["error"]
    assert events[0]["kind"] == "data"
    assert events[0]["message"] == "Bad training data: row 2: 'positive' must be a non-empty string"
    assert done.stderr.strip().splitlines()[-1] == events[0]["message"]

    with pytest.raises(ChildFailed, match=r"^Bad training configuration: batch_size: ") as caught:
        run_child(
            {
                "config": {"base_model_path": str(tiny_model_path), "batch_size": 0},
                "rows": ROWS,
                "output_dir": str(tmp_path / "out2"),
            }
        )
    assert caught.value.status == 1 and caught.value.event["kind"] == "config"
    assert caught.value.tail.strip().splitlines()[-1] == str(caught.value)


def test_child_stops_on_sigterm_before_training(tiny_model_path, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "config": {"base_model_path": str(tiny_model_path), **FAST},
                "rows": ROWS,
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    process = subprocess.Popen(
        child_command(spec), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=REPO,
    )  # fmt: skip
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert first["event"] == "start" and first["rows"] == len(ROWS)
    process.send_signal(signal.SIGTERM)  # still importing torch: exits at once
    rest = process.stdout.read()
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert [json.loads(line)["event"] for line in rest.splitlines()] == ["stopped"]


def test_child_process_run(background_child):
    """Collects the run started by the ``background_child`` fixture."""
    started = time.monotonic()
    background_child["thread"].join(timeout=240)
    assert not background_child["thread"].is_alive(), "the child run did not finish"
    assert "error" not in background_child, background_child.get("error")
    events = background_child["events"]
    kinds = [(e["event"], e.get("kind")) for e in events]
    assert kinds[0] == ("start", None) and kinds[1] == ("log", "begin")
    assert ("log", "train") in kinds and ("log", "checkpoint") in kinds
    assert kinds[-1] == ("done", None)
    result = background_child["result"]
    assert result == events[-1]["result"] and result["steps"] == 2
    assert _encode(result["model_dir"], ["red planet"]).shape == (1, 64)
    print(f"waited {time.monotonic() - started:.1f} s for the child", file=sys.stderr)


def _sparse_encode(path: str | Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(path), device="cpu", local_files_only=True)
    return model.encode_document(texts, convert_to_tensor=True).to_dense().numpy()


@pytest.mark.parametrize("base", ["dense", "sparse"])
def test_splade_trains_a_sparse_encoder_from_a_plain_model_or_a_sparse_one(
    tiny_model_path, tiny_sparse_path, tmp_path, base
):
    from tests.support.tiny_model import raw_folder
    from workers.common.inspect import inspect_model_folder

    # A plain BERT folder (its MLM head comes new) or a SPLADE folder (trained further).
    start = raw_folder(tiny_model_path) if base == "dense" else tiny_sparse_path
    config = _config(start, loss="splade", max_steps=2, save_steps=10)
    events: list[dict] = []
    result = train(config=config, rows=ROWS, output_dir=tmp_path, on_log=events.append)
    assert result["steps"] == 2 and np.isfinite(result["train_loss"]) and not result["stopped"]
    assert result["role"] == "sparse" and result["document_regularizer_weight"] == 3e-5
    assert [e["step"] for e in events if e["kind"] == "train"] == [1, 2]
    model_dir = Path(result["model_dir"])
    assert inspect_model_folder(model_dir).role == "sparse"  # it registers as a sparse model
    vectors = _sparse_encode(model_dir, ["red planet", "hot drink"])
    assert vectors.shape[0] == 2 and (vectors >= 0).all() and (vectors > 0).any()
    card = (model_dir / "README.md").read_text()
    assert "Fine-tuned sparse model (SPLADE)" in card and "SparseEncoder" in card


def test_a_splade_run_stops_and_resumes_to_the_same_model(tiny_sparse_path, tmp_path):
    config = _config(tiny_sparse_path, loss="splade", max_steps=4)
    texts = ["red planet", "hot drink made from leaves"]
    calls = []
    stopped = train(config=config, rows=ROWS, output_dir=tmp_path / "run",
                    should_stop=lambda: calls.append(1) or len(calls) >= 2)  # fmt: skip
    assert stopped["stopped"] and stopped["steps"] == 2
    resumed = train(config=config, rows=ROWS, output_dir=tmp_path / "run", resume_from="latest")
    assert resumed["steps"] == 4 and resumed["resumed_from"].endswith("checkpoint-2")
    straight = train(config=config, rows=ROWS, output_dir=tmp_path / "straight")
    np.testing.assert_allclose(_sparse_encode(resumed["model_dir"], texts),
                               _sparse_encode(straight["model_dir"], texts), atol=1e-5)  # fmt: skip


def test_splade_with_lora_is_refused_naming_the_method(tiny_sparse_path):
    with pytest.raises(ConfigError, match="method: the splade loss"):
        _config(tiny_sparse_path, loss="splade", method="lora")
