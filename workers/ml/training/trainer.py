"""The run itself: sentence-transformers' ``SentenceTransformerTrainer`` on a checked config.

:func:`train` writes checkpoints (model or adapter, optimizer, scheduler, RNG, data position) in
``output_dir/checkpoints``, resumable; the final model in sentence-transformers format in
``output_dir/model`` with a generated ``README.md`` (:mod:`workers.ml.training.card`); for LoRA
the PEFT adapter in ``output_dir/adapter``.

torch, transformers, peft and sentence-transformers are imported inside the functions that need
them, so importing this module is cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from workers.common.atomic import atomic_write
from workers.common.checkpoints import CHECKPOINTS, last_checkpoint  # noqa: F401 (re-exported)
from workers.common.configs.training import POOLINGS, ConfigError, TrainConfig
from workers.common.estimate import lora_targets
from workers.ml.losses import default_dims, default_starbucks_pairs
from workers.ml.precision import bf16_supported
from workers.ml.training.card import model_card
from workers.ml.training.data import columns as train_columns
from workers.ml.training.data import eval_sets, read_rows, reranker_columns

MODEL = "model"
ADAPTER = "adapter"
EVAL_NAME = "ir"
TRAINER_EVAL_KEYS = ("runtime", "samples_per_second", "steps_per_second")
STEP_EVENT_S = 1.0  # the most often a "step" event is sent


# --- checkpoints ---------------------------------------------------------------------------


def _count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# --- the run -------------------------------------------------------------------------------


def train(
    *,
    config: TrainConfig,
    rows: Iterable[dict[str, Any]] | str | Path,
    output_dir: str | Path,
    eval_data: dict[str, Any] | None = None,
    resume_from: str | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``config.base_model_path`` on ``rows``; see the module docstring for layouts.

    ``resume_from``: a checkpoint folder, or ``"latest"`` for the newest one under
    ``output_dir/checkpoints`` (none there: start from scratch). A resumed run restores the
    model/adapter, optimizer, scheduler, RNG state and data position, and ends at the same total
    number of steps as an uninterrupted one.

    ``on_log(event)`` receives dicts with a ``kind``: ``"begin"`` (step: 0, or the step resumed
    from; total_steps) once the model is loaded and the first step is about to run; ``"train"``
    (step, total_steps, epoch, loss, learning_rate, grad_norm, samples_per_s: training rows per
    second since the previous log) every ``logging_steps``; ``"eval"`` (step, total_steps, epoch,
    metrics) every ``eval_steps`` when ``eval_data`` is given; ``"checkpoint"`` (step, path)
    after each checkpoint is written.

    ``should_stop()`` is called after every optimizer step; True stops the trainer cleanly (no
    final model is written, ``result["stopped"]`` is True, the checkpoints stay for a resume).

    Returns steps, epochs, train_loss (mean over the steps this call ran), final_loss (last
    logged), trainable/total parameters, model_dir, adapter_dir (LoRA), metrics (the final
    evaluation when eval data was given: cosine_ndcg@10, cosine_mrr@10, cosine_recall@k, …),
    log_history (the trainer's), and the resolved setup (rows, negatives_per_row, learning_rate,
    precision, device, matryoshka_dims / starbucks_pairs / lora_target_modules).
    """
    from workers.common.store import artifact_ensure

    # With a bucket: the base (and guide) model fetched to this host first.
    artifact_ensure(config.base_model_path)
    if config.guide_model_path:
        artifact_ensure(config.guide_model_path)
    data = read_rows(rows)
    columns, k, dropped = train_columns(config, data)
    reranker, sparse = config.reranker, config.sparse
    # A reranker's quality is a rerank evaluation after the run (it has no embeddings for the
    # retrieval evaluator), a sparse model's a sparse evaluation; their curve is the loss.
    evaluation = eval_sets(config, eval_data) if eval_data and not (reranker or sparse) else None
    if resume_from == "latest":
        resume_from = last_checkpoint(output_dir)
    elif resume_from is not None and not Path(resume_from).is_dir():
        raise FileNotFoundError(f"{resume_from}: no such checkpoint folder")

    import torch
    from datasets import Dataset
    from transformers import set_seed

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / CHECKPOINTS
    device = _device(config)
    cuda = device.startswith("cuda")
    set_seed(config.seed)
    if reranker:
        model = _load_reranker(config, device)
        loss, resolved = _build_reranker_loss(config, model, k)
        train_data = reranker_columns(config.loss, columns, k)
    elif sparse:
        model = _load_sparse(config, device)
        loss, resolved = _build_sparse_loss(config, model)
        train_data = columns
    else:
        model = _load_model(config, device)
        loss, resolved = _build_loss(config, model, device)
        train_data = columns
    trainable, total = _count_parameters(model)

    evaluator = None
    if evaluation is not None:
        from sentence_transformers.sentence_transformer.evaluation import (
            InformationRetrievalEvaluator,
        )

        queries, corpus, relevant = evaluation
        evaluator = InformationRetrievalEvaluator(
            queries=queries,
            corpus=corpus,
            relevant_docs=relevant,
            name=EVAL_NAME,
            batch_size=config.batch_size,
            show_progress_bar=False,
            write_csv=False,
        )
    args = _training_args(
        config,
        output_dir=str(checkpoint_dir),
        device=device,
        evaluate_every=config.eval_steps if evaluator is not None else None,
        # bce: a row is its positive and k negative pairs, so a step still takes batch_size rows.
        pairs_per_row=k + 1 if config.loss == "bce" else 1,
    )
    progress = _progress_callback(
        batch_size=config.batch_size,
        on_log=on_log,
        should_stop=should_stop,
        checkpoint_dir=checkpoint_dir,
    )
    trainer = _trainer_class(reranker=reranker, sparse=sparse)(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(train_data),
        loss=loss,
        evaluator=evaluator,
        callbacks=[progress],
    )
    _quiet(trainer)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    state = trainer.state
    history = [dict(entry) for entry in state.log_history]
    train_losses = [e["loss"] for e in history if "loss" in e]

    result: dict[str, Any] = {
        "steps": state.global_step,
        "total_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0.0), 4),
        "train_loss": float(output.training_loss),
        "final_loss": float(train_losses[-1]) if train_losses else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "model_dir": None,
        "adapter_dir": None,
        "checkpoint_dir": str(checkpoint_dir),
        "resumed_from": resume_from,
        "stopped": bool(progress.stopped),
        "metrics": {},
        "log_history": history,
        "rows": len(columns["anchor"]),
        "rows_dropped": dropped,
        "negatives_per_row": k,
        "learning_rate": config.effective_learning_rate,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "device": device,
        "train_seconds": round(seconds, 3),
        "role": "reranker" if reranker else "sparse" if sparse else "embedding",
        **resolved,
    }
    if config.method == "lora":
        result["lora_target_modules"] = lora_targets(config)
    if progress.stopped:
        return result

    if evaluator is not None:
        model.eval()
        with torch.no_grad():
            raw = evaluator(model)
        result["metrics"] = {
            k.removeprefix(EVAL_NAME + "_"): float(v)
            for k, v in raw.items()
            if isinstance(v, (int, float))
        }

    import shutil

    model_dir = out / MODEL
    # A previous attempt's files must not mix in (a stale adapter_config.json would make a
    # merged folder load as base + adapter).
    for stale in (model_dir, out / ADAPTER):
        if stale.exists():
            shutil.rmtree(stale)
    if config.method == "lora":
        adapter_dir = out / ADAPTER
        model[0].auto_model.save_pretrained(str(adapter_dir))
        result["adapter_dir"] = str(adapter_dir)
        if config.merge_lora:
            del trainer, loss
            model = _merged(config, adapter_dir, device)
    model.save(str(model_dir), create_model_card=False)
    result["model_dir"] = str(model_dir)
    with atomic_write(model_dir / "README.md", "w") as fh:
        fh.write(model_card(config=config, result=result, data=data))
    if cuda:
        from workers.ml.encode import free_memory

        del model
        free_memory(device)
    return result


def _merged(config: TrainConfig, adapter_dir: Path, device: str) -> Any:
    """A fresh base model with the saved adapter merged into its weights."""
    from peft import PeftModel

    from workers.ml.encode import load_encoder

    model = load_encoder(
        path=config.base_model_path,
        layout=config.layout,
        pooling=config.pooling,
        normalize=config.normalize,
        max_seq_length=config.max_seq_length,
        device=device,
    )
    transformer = model[0]
    merged = PeftModel.from_pretrained(transformer.auto_model, str(adapter_dir)).merge_and_unload()
    transformer.model = merged
    return model


# --- building blocks -----------------------------------------------------------------------


def _device(config: TrainConfig) -> str:
    from workers.ml.encode import pick_device

    return pick_device(config.device)


def _load_model(config: TrainConfig, device: str) -> Any:
    from workers.ml.encode import load_encoder

    model = load_encoder(
        path=config.base_model_path,
        layout=config.layout,
        pooling=config.pooling,
        normalize=config.normalize,
        max_seq_length=config.max_seq_length,
        device=device,
    )
    if config.method == "lora":
        from peft import LoraConfig, TaskType

        model.add_adapter(
            LoraConfig(
                task_type=TaskType.FEATURE_EXTRACTION,
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=lora_targets(config),
            )
        )
    return model


def _load_reranker(config: TrainConfig, device: str) -> Any:
    """A CrossEncoder with one output: a reranker base trains further; an embedding model's
    (or plain BERT-style) folder gives its transformer's weights and a new, random head."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(
        config.base_model_path,
        num_labels=1,
        max_length=config.max_seq_length,
        device=device,
        local_files_only=True,
    )


def _load_sparse(config: TrainConfig, device: str) -> Any:
    """A SparseEncoder: a sparse model's folder trains further; an embedding model's (or plain
    BERT-style) folder gives its transformer's weights under a masked-language-model head
    (new where the folder has none; BERT ties its output to the word embeddings) and SPLADE's
    max pooling over the vocabulary."""
    from sentence_transformers import SparseEncoder

    from workers.common.inspect import inspect_model_folder

    if inspect_model_folder(config.base_model_path).role == "sparse":
        model = SparseEncoder(config.base_model_path, device=device, local_files_only=True)
    else:
        from sentence_transformers.base.modules.transformer import Transformer
        from sentence_transformers.sparse_encoder.modules import SpladePooling

        mlm = Transformer(config.base_model_path, transformer_task="fill-mask",
                          model_args={"local_files_only": True})  # fmt: skip
        model = SparseEncoder(modules=[mlm, SpladePooling("max")], device=device)
    model.max_seq_length = config.max_seq_length
    return model


def _build_sparse_loss(config: TrainConfig, model: Any) -> tuple[Any, dict[str, Any]]:
    from sentence_transformers.sparse_encoder import losses

    inner = losses.SparseMultipleNegativesRankingLoss(model)
    loss = losses.SpladeLoss(
        model,
        loss=inner,
        document_regularizer_weight=config.document_regularizer_weight,
        query_regularizer_weight=config.query_regularizer_weight,
    )
    return loss, {
        "document_regularizer_weight": config.document_regularizer_weight,
        "query_regularizer_weight": config.query_regularizer_weight,
    }


def _build_reranker_loss(config: TrainConfig, model: Any, k: int) -> tuple[Any, dict[str, Any]]:
    import torch
    from sentence_transformers.cross_encoder import losses

    if config.loss == "bce":
        # One positive per k negatives: weighting the positives by k keeps the two classes'
        # shares of the loss equal (sentence-transformers' own reranker examples do this).
        pos_weight = float(max(k, 1))
        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight)), {
            "pos_weight": pos_weight
        }
    if config.loss == "lambdaloss":
        return losses.LambdaLoss(model), {}
    raise ConfigError("loss", f"{config.loss!r} is not a reranker loss")


def _load_guide(config: TrainConfig, device: str) -> Any:
    from workers.common.inspect import inspect_model_folder
    from workers.ml.encode import load_encoder

    assert config.guide_model_path
    info = inspect_model_folder(config.guide_model_path)
    guide = load_encoder(
        path=info.path,
        layout=info.layout,
        pooling=info.pooling if info.pooling in POOLINGS else "mean",
        normalize=info.normalize,
        max_seq_length=min(info.max_seq_length, config.max_seq_length),
        device=device,
    )
    guide.requires_grad_(False)
    return guide


def _matryoshka_dims(config: TrainConfig, width: int) -> list[int]:
    dims = config.matryoshka_dims or sorted(default_dims(width), reverse=True)
    too_big = [d for d in dims if d > width]
    if too_big:
        raise ConfigError(
            "matryoshka_dims", f"{too_big[0]} exceeds the model's embedding dimension {width}"
        )
    return sorted(dims, reverse=True)


def _build_loss(config: TrainConfig, model: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """The loss module, and what it resolved to (dims, pairs) for the result and the card."""
    from sentence_transformers.sentence_transformer import losses

    width = model.get_embedding_dimension()
    resolved: dict[str, Any] = {}
    if config.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, scale=config.scale)
    elif config.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, scale=config.scale, mini_batch_size=config.mini_batch_size
        )
    elif config.loss == "gist":
        loss = losses.GISTEmbedLoss(
            model, _load_guide(config, device), temperature=config.gist_temperature
        )
    elif config.loss == "matryoshka":
        dims = _matryoshka_dims(config, width)
        resolved["matryoshka_dims"] = dims
        loss = losses.MatryoshkaLoss(
            model, losses.MultipleNegativesRankingLoss(model, scale=config.scale), dims
        )
    elif config.loss == "matryoshka2d":
        dims = _matryoshka_dims(config, width)
        resolved["matryoshka_dims"] = dims
        loss = losses.Matryoshka2dLoss(
            model,
            losses.MultipleNegativesRankingLoss(model, scale=config.scale),
            dims,
            kl_div_weight=config.kl_div_weight,
            kl_temperature=config.kl_temperature,
        )
    elif config.loss == "starbucks":
        from workers.ml.losses import build_starbucks_loss

        layers = model[0].auto_model.config.num_hidden_layers
        pairs = config.starbucks_pairs or default_starbucks_pairs(layers, width)
        try:
            loss = build_starbucks_loss(
                model,
                pairs,
                scale=config.scale,
                kl_div_weight=config.kl_div_weight,
                kl_temperature=config.kl_temperature,
            )
        except ValueError as exc:
            raise ConfigError("starbucks_pairs", str(exc)) from None
        resolved["starbucks_pairs"] = [list(p) for p in loss.pairs]
    else:  # the config's Literal rules this out
        raise ConfigError("loss", f"unknown loss {config.loss!r}")
    return loss, resolved


def _trainer_class(*, reranker: bool = False, sparse: bool = False) -> type:
    """sentence-transformers' trainer (the cross-encoder one for a reranker, the sparse one for
    SPLADE) without its model-card machinery: it renders a card (a jinja template, ~0.7 s) at
    every checkpoint and computes widget examples at start; this module writes its own card
    once, at the end."""
    from sentence_transformers import (
        CrossEncoderTrainer,
        SentenceTransformerTrainer,
        SparseEncoderTrainer,
    )

    base = (
        CrossEncoderTrainer
        if reranker
        else SparseEncoderTrainer
        if sparse
        else SentenceTransformerTrainer
    )

    class Trainer(base):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            pass

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            import os

            import torch
            from transformers.trainer import TRAINING_ARGS_NAME

            output_dir = output_dir if output_dir is not None else self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            self.model.save_pretrained(output_dir, create_model_card=False)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    return Trainer


def _training_args(
    config: TrainConfig,
    *,
    output_dir: str,
    device: str,
    evaluate_every: int | None,
    pairs_per_row: int = 1,
) -> Any:
    from sentence_transformers import (
        CrossEncoderTrainingArguments,
        SentenceTransformerTrainingArguments,
        SparseEncoderTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    arguments = (
        CrossEncoderTrainingArguments
        if config.reranker
        else SparseEncoderTrainingArguments
        if config.sparse
        else SentenceTransformerTrainingArguments
    )
    # No-duplicates batching keeps repeated texts out of in-batch negatives; a reranker has
    # none, and its pairs repeat each query on purpose.
    no_duplicates = config.no_duplicates and not config.reranker

    cuda = str(device).startswith("cuda")
    # transformers 5 renamed gradient_checkpointing (the old name warns).
    names = {f.name for f in fields(SentenceTransformerTrainingArguments)}
    checkpointing = "activation_checkpointing"
    if checkpointing not in names:
        checkpointing = "gradient_checkpointing"
    return arguments(
        output_dir=output_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size * pairs_per_row,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.effective_learning_rate,
        # transformers 5 takes a float in (0, 1) here as the warmup ratio.
        warmup_steps=config.warmup_ratio if config.warmup_ratio > 0 else 0,
        weight_decay=config.weight_decay,
        seed=config.seed,
        # bf16 on a CPU too where it is native (AVX-512 BF16 or AMX): the Trainer autocasts.
        bf16=config.bf16 and bf16_supported("cuda" if cuda else "cpu"),
        fp16=config.fp16 and cuda,
        **{checkpointing: config.gradient_checkpointing},
        batch_sampler=(
            BatchSamplers.NO_DUPLICATES if no_duplicates else BatchSamplers.BATCH_SAMPLER
        ),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=evaluate_every,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )


def _quiet(trainer: Any) -> None:
    """No prints to stdout from the trainer (the child process owns stdout for its protocol)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _progress_callback(
    *,
    batch_size: int,
    on_log: Callable[[dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
    checkpoint_dir: Path,
) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Turns the trainer's logs into plain dicts and stops it when asked."""

        def __init__(self) -> None:
            self.stopped = False
            self.last_time: float | None = None
            self.last_step = 0
            self.last_step_event = 0.0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.last_time, self.last_step = time.perf_counter(), state.global_step
            if on_log is not None:
                on_log({"kind": "begin", "step": state.global_step, "total_steps": state.max_steps})

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            # The step counter between loss points (a loss point comes every logging_steps):
            # at most one event a second, and always the last step.
            now = time.perf_counter()
            last = state.global_step >= state.max_steps
            if on_log is not None and (last or now - self.last_step_event >= STEP_EVENT_S):
                self.last_step_event = now
                on_log({"kind": "step", "step": state.global_step,
                        "total_steps": state.max_steps})  # fmt: skip
            if should_stop is not None and not self.stopped and should_stop():
                self.stopped = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            base = {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "epoch": round(float(state.epoch or 0.0), 4),
            }
            if "loss" in logs:
                now = time.perf_counter()
                steps = state.global_step - self.last_step
                elapsed = now - (self.last_time or now)
                rate = steps * batch_size / elapsed if elapsed > 0 and steps > 0 else None
                self.last_time, self.last_step = now, state.global_step
                event = {
                    "kind": "train",
                    **base,
                    "loss": float(logs["loss"]),
                    "learning_rate": float(logs.get("learning_rate", 0.0)),
                    "grad_norm": _float_or_none(logs.get("grad_norm")),
                    "samples_per_s": None if rate is None else round(rate, 3),
                }
            elif any(k.startswith("eval_") for k in logs):
                event = {"kind": "eval", **base, "metrics": _eval_metrics(logs)}
            else:
                return
            if on_log is not None:
                on_log(event)

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if on_log is not None:
                path = checkpoint_dir / f"checkpoint-{state.global_step}"
                on_log({"kind": "checkpoint", "step": state.global_step, "path": str(path)})

    return Progress()


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _eval_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """The evaluator's metrics without the trainer's and evaluator's prefixes."""
    out = {}
    for key, value in logs.items():
        name = key.removeprefix("eval_").removeprefix(EVAL_NAME + "_")
        if key.startswith("eval_") and name not in TRAINER_EVAL_KEYS:
            number = _float_or_none(value)
            if number is not None:
                out[name] = number
    return out
