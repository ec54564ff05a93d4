"""Fine-tuning runs: create (validated config + estimate), execute (supervise the training child
process), resume, and turn the result into a registered model with lineage and an evaluation.

The child is ``python -m workers.ml.training.child CONFIG.json`` under
:func:`workers.tasks.supervisor.supervise`; it prints JSON lines on stdout (``{"event": "log", …}``,
``{"event": "done", "result": …}``, ``{"event": "error", "message": …}``). Its stderr goes to
``output_dir/train.log`` (the page shows the tail). The worker reads the cancel flag every second
and kills the child's whole process group, so the GPU is free at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Team
from apps.core.models import JobStatus
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets.models import DatasetVersion
from apps.datasets.selectors import evaluation_inputs
from apps.registry.models import EmbeddingModel
from apps.runs.configs import OptionsError, train_options_parse
from apps.runs.models import TrainingRun
from workers.tasks.runtime import JobCancelled, ProgressReporter

LOG_SAVE_S = 2.0


class TrainingError(ValueError):
    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def _config_for(
    *, base_model: EmbeddingModel, options: dict, guide_model: EmbeddingModel | None = None
):
    """A TrainConfig from the user's options over the base model's encoding settings.

    Folders come only from registered models (already checked to be the team's): the options
    are typed and cannot name a path (``base_model_path`` in them is an unknown field)."""
    from workers.ml.training.config import TrainConfig

    try:
        chosen = train_options_parse(options)
    except OptionsError as exc:
        raise TrainingError(str(exc), problems=exc.problems) from None
    merged = {
        "base_model_path": base_model.path,
        "layout": base_model.layout,
        "pooling": base_model.pooling,
        "normalize": base_model.normalize,
        "max_seq_length": base_model.max_seq_length,
        "query_prefix": base_model.query_prefix,
        "document_prefix": base_model.document_prefix,
        **chosen,
        "guide_model_path": guide_model.path if guide_model is not None else None,
    }
    try:
        return TrainConfig.from_dict(merged)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith("guide_model_path:"):
            raise TrainingError("guide_model: the gist loss needs a guide model") from None
        raise TrainingError(str(exc)) from None


def training_run_create(
    *,
    team: Team,
    base_model: EmbeddingModel,
    train_version: DatasetVersion,
    options: dict | None = None,
    guide_model: EmbeddingModel | None = None,
    eval_version: DatasetVersion | None = None,
    eval_split: str = "",
    name: str = "",
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> TrainingRun:
    """Validate, estimate and queue a run (``gpu`` queue) once the transaction commits."""
    from workers.ml.training.estimate import estimate
    from workers.tasks.training import train

    for obj in (
        (base_model, train_version.dataset)
        + ((eval_version.dataset,) if eval_version else ())
        + ((guide_model,) if guide_model else ())
    ):
        if obj.team_id != team.pk:
            raise TrainingError("The model and the data must belong to your team.")
    if train_version.kind != DatasetVersion.Kind.TRAINING or not train_version.training_count:
        raise TrainingError(
            f"{train_version} is not a training set: make pairs from judgements or mine "
            "negatives first (on its version page)."
        )
    if eval_version is not None and eval_split not in eval_version.qrels_counts:
        raise TrainingError(f"{eval_version} has no split {eval_split!r} to evaluate on.")
    config = _config_for(base_model=base_model, options=options or {}, guide_model=guide_model)

    def create() -> TrainingRun:
        run = TrainingRun.objects.create(
            team=team,
            name=name or f"{base_model.name} on {train_version}",
            base_model=base_model,
            train_version=train_version,
            eval_version=eval_version,
            eval_split=eval_split if eval_version else "",
            config=config.to_dict(),
            estimate=estimate(config, train_version.training_count),
            created_by=created_by,
        )
        run.output_dir = str(Path(settings.ARTIFACTS_ROOT) / "runs" / str(run.pk))
        run.save(update_fields=["output_dir"])
        if enqueue:
            job_enqueue(job=run, task=train)
        return run

    run = job_create_once(
        model=TrainingRun,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(
            kind="training",
            base=base_model.pk,
            train=train_version.pk,
            eval=eval_version.pk if eval_version else None,
            split=eval_split if eval_version else "",
            config=config.to_dict(),
            name=name,
        ),
        idempotency_key=idempotency_key,
        create=create,
    )
    return run


def training_run_resume(*, run: TrainingRun) -> TrainingRun:
    """failed or cancelled → pending, from the last checkpoint (the Resume button)."""
    from workers.tasks.training import train

    with transaction.atomic():
        updated = TrainingRun.objects.filter(
            pk=run.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
        ).update(
            status=JobStatus.PENDING,
            cancel_requested=False,
            human_error="",
            finished_at=None,
            stage="waiting to resume",
        )
        if not updated:
            raise TrainingError("Only a failed or cancelled run can be resumed.")
        run.refresh_from_db()
        job_enqueue(job=run, task=train)
    return run


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


def training_run_execute(*, run: TrainingRun, report: ProgressReporter) -> dict:
    """Run (or resume) the training child, keep the row live, and register the result."""
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report("preparing data")
    rows_path = out / "train.jsonl"
    if not rows_path.exists():
        _training_rows(run.train_version, rows_path)
    from workers.ml.training.trainer import last_checkpoint

    checkpoint = last_checkpoint(out)
    job = {
        "config": run.config,
        "rows": str(rows_path),
        "eval_data": _eval_data(run, out / "eval.json"),
        "output_dir": str(out),
        "resume_from": str(checkpoint) if checkpoint else None,
    }
    from workers.common.atomic import atomic_write

    with atomic_write(out / "job.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(job))
    if checkpoint:
        TrainingRun.objects.filter(pk=run.pk).update(resumed_from=str(checkpoint))
    result = _supervise(run=run, report=report, job_path=out / "job.json")
    steps = int(result.get("steps") or 0)
    report("registering the model", steps, steps)  # keeps the step count on the page
    model = _register_result(run=run, result=result)
    evaluation = None
    if run.eval_version is not None:
        from apps.runs.services import evaluation_create

        evaluation = evaluation_create(
            team=run.team,
            model=model,
            dataset_version=run.eval_version,
            split=run.eval_split,
            created_by=run.created_by,
        )
    return {
        "result": {k: v for k, v in result.items() if k != "log_history"},
        "result_model": model,
        "evaluation": evaluation,
        "stage": "done",
    }


def _supervise(*, run: TrainingRun, report: ProgressReporter, job_path: Path) -> dict:
    """The training child under the worker's one supervisor: its log lines become the curve
    and the progress, the row's cancel flag stops it, the log's tail is kept for the page."""
    from workers.tasks.supervisor import ChildFailed, ChildStopped, log_tail, supervise

    log_path = Path(run.output_dir) / "train.log"
    curve = list(run.log)
    total = int(run.estimate.get("total_steps") or 0)
    last_save = 0.0

    def save() -> None:
        TrainingRun.objects.filter(pk=run.pk).update(log=curve, log_tail=log_tail(log_path))

    def on_event(event: dict) -> None:
        nonlocal curve, total
        if event.get("event") == "log":
            curve = _merge_point(curve, event)
            total = int(event.get("total_steps") or total)
            if event.get("kind") == "train":
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


def _merge_point(curve: list[dict], event: dict) -> list[dict]:
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


def _register_result(*, run: TrainingRun, result: dict) -> EmbeddingModel:
    """The fine-tune as a registry model: same encoding settings, lineage to base and run."""
    from workers.common.inspect import ModelFolderError, inspect_model_folder

    base, config = run.base_model, run.config
    try:
        info = inspect_model_folder(result["model_dir"])
    except ModelFolderError:
        # An unmerged LoRA folder holds the adapter and names the base: same shape as the base.
        info = inspect_model_folder(base.path)
    name = f"{base.name}-ft-{run.pk}"
    model, _ = EmbeddingModel.objects.update_or_create(
        team=run.team,
        name=name,
        defaults={
            "kind": EmbeddingModel.Kind.FINETUNED,
            "source": EmbeddingModel.Source.FOLDER,
            "source_ref": f"run {run.pk}",
            "path": str(result["model_dir"]),
            "layout": info.layout,
            "architecture": info.architecture,
            "dimension": info.dimension,
            "max_seq_length": config.get("max_seq_length") or base.max_seq_length,
            "pooling": config.get("pooling") or base.pooling,
            "normalize": base.normalize,
            "query_prefix": config.get("query_prefix", base.query_prefix),
            "document_prefix": config.get("document_prefix", base.document_prefix),
            "parameters": info.parameters,
            "parent": base,
        },
    )
    return model
