"""Fine-tuning runs on the worker (the ``gpu`` queue): the task and its body.

The web validates a run against its typed config (``workers.common.configs.training``) and makes
the row (``apps.runs.training``); here the row's stored config is validated again, the training
data is written for the child, the child runs under the worker's one supervisor
(:func:`workers.tasks.supervisor.supervise`), its events become the row's loss curve and
progress, and the result is registered as a model through ``apps.registry.services`` (with an
evaluation through ``apps.runs.services`` when the run names evaluation data).

The child is ``python -m workers.ml.training.child job.json``; its stderr goes to
``output_dir/train.log`` (the page shows the tail). The row's cancel flag is read every second
and stops the child's whole process group, so the GPU is free at once.

Loading this module imports no ML library: the web imports ``train`` to enqueue it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.datasets.models import DatasetVersion
    from apps.runs.models import TrainingRun
    from workers.tasks.runtime import ProgressReporter

logger = logging.getLogger(__name__)

LOG_SAVE_S = 2.0


@shared_task(
    name="workers.tasks.training.train",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def train(run_id: int) -> None:
    """Run (or resume from its last checkpoint) one TrainingRun row. Idempotent: a row that is
    not pending is left alone; the reaper puts a dead worker's run back to pending."""
    from apps.runs.models import TrainingRun
    from workers.tasks.runtime import job_claim, job_run

    run = job_claim(model=TrainingRun, pk=run_id)
    if run is None:
        return
    job_run(job=run, work=lambda report: training_run_execute(run=run, report=report))


def training_run_execute(*, run: TrainingRun, report: ProgressReporter) -> dict:
    """Run (or resume) the training child, keep the row live, and register the result."""
    from apps.registry.services import embedding_model_register_trained
    from apps.runs.models import TrainingRun
    from apps.runs.training import TrainingError
    from workers.common.atomic import atomic_write
    from workers.common.configs.training import ConfigError, TrainConfig
    from workers.ml.training.trainer import last_checkpoint

    try:
        config = TrainConfig.from_dict(run.config)  # validated again, as the child will
    except ConfigError as exc:
        raise TrainingError(f"Bad training configuration: {exc}") from None
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report("preparing data")
    rows_path = out / "train.jsonl"
    if not rows_path.exists():
        _training_rows(run.train_version, rows_path)
    _fetch_last_checkpoint(out)
    checkpoint = last_checkpoint(out)
    job = {
        "config": config.to_dict(),
        "rows": str(rows_path),
        "eval_data": _eval_data(run, out / "eval.json"),
        "output_dir": str(out),
        "resume_from": str(checkpoint) if checkpoint else None,
    }
    with atomic_write(out / "job.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(job))
    if checkpoint:
        TrainingRun.objects.filter(pk=run.pk).update(resumed_from=str(checkpoint))
    result = _supervise(run=run, report=report, job_path=out / "job.json")
    if result.get("adapter_dir"):
        from workers.common.store import artifact_publish

        artifact_publish(result["adapter_dir"])  # the model folder goes with its registration
    steps = int(result.get("steps") or 0)
    report("registering the model", steps, steps)  # keeps the step count on the page
    model = embedding_model_register_trained(
        team=run.team,
        base=run.base_model,
        # The run's own name (what the user called it), made unique by the run's number.
        name=f"{run.name[:180]} (run {run.pk})",
        source_ref=f"run {run.pk}",
        model_dir=result["model_dir"],
        max_seq_length=config.max_seq_length,
        pooling=config.pooling,
        query_prefix=config.query_prefix,
        document_prefix=config.document_prefix,
    )
    evaluation = None
    if run.eval_version is not None:
        from apps.runs.services import evaluation_create

        if model.is_reranker:
            evaluation = _rerank_evaluation(run=run, reranker=model)
        else:
            # A sparse model is evaluated with its own inverted index (method sparse).
            evaluation = evaluation_create(
                team=run.team,
                model=model,
                dataset_version=run.eval_version,
                split=run.eval_split,
                created_by=run.created_by,
                **({"method": "sparse"} if model.is_sparse else {}),
            )
    return {
        "result": {k: v for k, v in result.items() if k != "log_history"},
        "result_model": model,
        "evaluation": evaluation,
        "stage": "done",
    }


def _rerank_evaluation(*, run: TrainingRun, reranker):
    """A trained reranker is evaluated by reranking the most recent succeeded first-stage
    evaluation (dense, BM25 or hybrid) of the run's evaluation split; with none, not at all
    (the run page says how to start one)."""
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create

    first = (
        Evaluation.objects.filter(
            team=run.team, dataset_version=run.eval_version, split=run.eval_split,
            status="succeeded",
        )
        .exclude(method=Evaluation.Method.RERANK)
        .exclude(run_file="")
        .order_by("-finished_at", "-pk")
        .first()
    )  # fmt: skip
    if first is None:
        return None
    return evaluation_create(
        team=run.team,
        model=reranker,
        method=Evaluation.Method.RERANK,
        dataset_version=run.eval_version,
        split=run.eval_split,
        first_stage=first,
        created_by=run.created_by,
    )


def _training_rows(version: DatasetVersion, path: Path) -> int:
    """Write the version's rows as the child's JSONL input (streamed, not held in memory)."""
    from workers.common.atomic import atomic_write

    n = 0
    # Atomic: a full disk must not leave a short file that a resume would then train on.
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for anchor, positive, negatives in (
            version.training_rows.order_by("row").values_list("anchor", "positive", "negatives")
        ).iterator(chunk_size=2000):
            fh.write(
                json.dumps({"anchor": anchor, "positive": positive, "negatives": negatives}) + "\n"
            )
            n += 1
    return n


def _eval_data(run: TrainingRun, path: Path) -> str | None:
    """Evaluation data for the curve during training, only when a curve was asked for: the
    final figures come from the evaluation row made after the run, and encoding the corpus
    twice at the end would double the wait for nothing."""
    if run.eval_version is None or not run.config.get("eval_steps"):
        return None
    from apps.datasets.selectors import evaluation_inputs
    from workers.common.atomic import atomic_write

    corpus, queries, qrels = evaluation_inputs(version=run.eval_version, split=run.eval_split)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "corpus": {
                        doc_id: (title + " " + text).strip() for doc_id, title, text in corpus
                    },
                    "queries": dict(queries),
                    "qrels": qrels,
                }
            )
        )
    return str(path)


def _supervise(*, run: TrainingRun, report: ProgressReporter, job_path: Path) -> dict:
    """The training child under the worker's one supervisor: its log lines become the curve
    and the progress, the row's cancel flag stops it, the log's tail is kept for the page."""
    from apps.runs.models import TrainingRun
    from apps.runs.training import TrainingError
    from workers.tasks.runtime import JobCancelled
    from workers.tasks.supervisor import ChildFailed, ChildStopped, log_tail, supervise

    log_path = Path(run.output_dir) / "train.log"
    curve = list(run.log)
    total = int(run.estimate.get("total_steps") or 0)
    last_save = 0.0

    def save() -> None:
        TrainingRun.objects.filter(pk=run.pk).update(log=curve, log_tail=log_tail(log_path))

    from concurrent.futures import ThreadPoolExecutor

    from workers.common.store import store

    # With a bucket, each checkpoint is uploaded as it is written (beside the run, so reading
    # the child's events never waits on it): a run stopped with its host resumes on another.
    uploads = ThreadPoolExecutor(1, thread_name_prefix="checkpoints") if store() else None

    def on_event(event: dict[str, Any]) -> None:
        nonlocal curve, total
        if uploads is not None and event.get("kind") == "checkpoint" and event.get("path"):
            uploads.submit(_publish_checkpoint, event["path"])
        if event.get("event") == "log":
            curve = merge_point(curve, event)
            total = int(event.get("total_steps") or total)
            if event.get("kind") in ("train", "step"):
                report("training", int(event.get("step") or 0), total)

    def should_stop() -> bool:
        nonlocal last_save
        now = time.monotonic()
        if now - last_save >= LOG_SAVE_S:
            last_save = now
            save()
        return TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists()

    try:
        return supervise(
            [sys.executable, "-m", "workers.ml.training.child", str(job_path)],
            log_path=log_path,
            on_event=on_event,
            should_stop=should_stop,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"},
            label="The training process",
        )
    except ChildStopped:
        raise JobCancelled() from None
    except ChildFailed as exc:
        raise TrainingError(str(exc)) from exc
    finally:
        save()
        if uploads is not None:
            uploads.shutdown(wait=True)


def _publish_checkpoint(path: str) -> None:
    from workers.common.store import artifact_publish

    try:
        artifact_publish(path)
    except Exception:  # noqa: BLE001 (a checkpoint the trainer rotated out meanwhile; logged)
        logger.warning("checkpoint %s not uploaded", path, exc_info=True)


def _fetch_last_checkpoint(out: Path) -> None:
    """With a bucket: the run's newest published checkpoint, when this host lacks it (the run
    started on another host, which stopped), so the resume continues from it."""
    from workers.common.checkpoints import CHECKPOINTS
    from workers.common.store import store

    bucket = store()
    if bucket is None:
        return
    steps = {int(p.name[11:]): p for p in bucket.published_under(out / CHECKPOINTS)
             if p.name.startswith("checkpoint-") and p.name[11:].isdigit()}  # fmt: skip
    if steps:
        bucket.ensure(steps[max(steps)])


def merge_point(curve: list[dict], event: dict[str, Any]) -> list[dict]:
    """One curve across attempts: a training log replaces what a resumed run logged from that
    step on; an evaluation log attaches its metrics to its step's point."""
    step = int(event.get("step") or 0)
    if event.get("kind") == "train":
        point = {
            k: event.get(k)
            for k in ("step", "epoch", "loss", "learning_rate", "samples_per_s")
            if event.get(k) is not None
        }
        return [p for p in curve if p.get("step", -1) < step] + [point]
    if event.get("kind") == "eval":
        metrics = {
            k: v for k, v in (event.get("metrics") or {}).items() if isinstance(v, int | float)
        }
        for p in curve:
            if p.get("step") == step:
                p["eval"] = metrics
                return curve
        return curve + [{"step": step, "epoch": event.get("epoch"), "eval": metrics}]
    return curve
