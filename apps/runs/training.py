"""Fine-tuning runs, the web's side: create (validated config + estimate) and resume.

A run is queued on the ``gpu`` queue; what happens to it there (the training child under the
worker's supervisor, the registered result, the evaluation) is :mod:`workers.tasks.training`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from pydantic import ValidationError

from apps.accounts.models import Team
from apps.core.models import JobStatus
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs.models import TrainingRun
from workers.common.configs.training import ConfigError, TrainConfig, TrainOptions, problems
from workers.common.estimate import estimate
from workers.common.store import artifact_delete


class TrainingError(ValueError):
    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def _options(raw: TrainOptions | dict | None) -> TrainOptions:
    """The user's options, typed; TrainingError naming every bad or unknown field."""
    if isinstance(raw, TrainOptions):
        return raw
    if raw is not None and not isinstance(raw, dict):
        raise TrainingError("options: must be a JSON object", problems=["options: not an object"])
    # An empty text box means "the default", as a missing field does.
    cleaned = {k: v for k, v in (raw or {}).items() if v != ""}
    try:
        return TrainOptions.model_validate(cleaned)
    except ValidationError as exc:
        found = problems(exc)
        raise TrainingError("; ".join(found), problems=found) from None


def _check_team(team: Team, *objects) -> None:
    for obj in objects:
        if obj is not None and obj.team_id != team.pk:
            raise TrainingError("The model and the data must belong to your team.")


def _config(
    *,
    base_model: EmbeddingModel,
    options: TrainOptions | dict | None,
    guide_model: EmbeddingModel | None,
) -> TrainConfig:
    """The run's config: the options over the base model's registered encoding settings.

    Folders come only from registered models (checked to be the team's by the caller): the
    options are typed and cannot name a path (``base_model_path`` in them is an unknown
    field)."""
    chosen = _options(options)
    from apps.registry.services import embedding_model_require_role

    if base_model.is_sparse and not chosen.sparse:
        raise TrainingError(
            f"base_model: {base_model.name} is a sparse model (SPLADE): train it further with "
            "the splade loss"
        )
    if not chosen.reranker and base_model.is_reranker:
        raise TrainingError(
            f"base_model: {base_model.name} is a reranker: train it further with a reranker "
            "loss (bce or lambdaloss)"
        )
    if chosen.sparse and not base_model.is_sparse:
        # A new SPLADE starts from an embedding model's transformer (with an MLM head).
        embedding_model_require_role(
            model=base_model, role="embedding", field="base_model", error=TrainingError
        )
    elif not chosen.reranker and not chosen.sparse:
        embedding_model_require_role(
            model=base_model, role="embedding", field="base_model", error=TrainingError
        )
    if guide_model is not None:
        embedding_model_require_role(
            model=guide_model, role="embedding", field="guide_model", error=TrainingError
        )
    try:
        registered = base_model.encoder_settings()
        return TrainConfig.resolve(
            chosen,
            base_model_path=registered.pop("path"),
            **registered,
            guide_model_path=guide_model.path if guide_model is not None else None,
        )
    except ConfigError as exc:
        if exc.field == "guide_model_path":
            raise TrainingError("guide_model: the gist loss needs a guide model") from None
        raise TrainingError(str(exc)) from None


def training_run_preview(
    *,
    team: Team,
    base_model: EmbeddingModel,
    train_version: DatasetVersion,
    options: TrainOptions | dict | None = None,
    guide_model: EmbeddingModel | None = None,
) -> dict:
    """What a run would be, without making it: its config (no server folder) and estimate."""
    _check_team(team, base_model, train_version.dataset, guide_model)
    config = _config(base_model=base_model, options=options, guide_model=guide_model)
    figures = estimate(
        config, train_version.training_count, num_negatives=_negatives(config, train_version)
    )
    return {
        "config": {k: v for k, v in config.to_dict().items() if not k.endswith("_path")},
        "estimate": figures,
        "time": training_time_estimate(
            team=team, base_model=base_model, config=config, estimate=figures
        ),
    }


def training_time_estimate(*, team: Team, base_model: EmbeddingModel, config, estimate: dict):
    """How long a run would take, from the team's own measured runs: the closest earlier run
    (the same base model first, then the same method) gives seconds per step, scaled by the
    texts per step and their length. None when the team has no measured run to scale from."""
    done = TrainingRun.objects.filter(team=team, status=JobStatus.SUCCEEDED).order_by("-pk")[:50]
    best, best_score = None, -1
    for run in done:
        seconds, steps = run.result.get("train_seconds"), run.result.get("steps")
        texts = (run.estimate or {}).get("texts_per_step")
        if not seconds or not steps or not texts:
            continue
        score = 2 * (run.base_model_id == base_model.pk) + (
            run.config.get("method") == config.method
        )
        if score > best_score:
            best, best_score = run, score
    if best is None:
        return None
    per_step = best.result["train_seconds"] / best.result["steps"]
    # Work per step grows with the texts in it and their length (activations dominate).
    scale = (estimate["texts_per_step"] * config.max_seq_length) / (
        best.estimate["texts_per_step"] * max(1, best.config.get("max_seq_length") or 1)
    )
    return {
        "seconds": per_step * scale * estimate["total_steps"],
        "seconds_per_step": per_step * scale,
        "from_run": best,
        "same_model": best.base_model_id == base_model.pk,
    }


def training_run_create(
    *,
    team: Team,
    base_model: EmbeddingModel,
    train_version: DatasetVersion,
    options: TrainOptions | dict | None = None,
    guide_model: EmbeddingModel | None = None,
    eval_version: DatasetVersion | None = None,
    eval_split: str = "",
    name: str = "",
    created_by=None,
    enqueue: bool = True,
    idempotency_key: str = "",
) -> TrainingRun:
    """Validate, estimate and queue a run (``gpu`` queue) once the transaction commits.

    ``options`` (:class:`TrainOptions`, or its fields as a dict) are what the user set; the
    folders come from ``base_model`` and ``guide_model``, which must be the team's."""
    from workers.tasks.training import train

    _check_team(
        team, base_model, train_version.dataset, eval_version and eval_version.dataset, guide_model
    )
    if base_model.layout == "onnx":
        raise TrainingError(
            f"base_model: {base_model.name} is an optimized (ONNX) variant, which cannot be "
            "trained; fine-tune the model it was made from and optimize the result."
        )
    if train_version.kind != DatasetVersion.Kind.TRAINING or not train_version.training_count:
        raise TrainingError(
            f"{train_version} is not a training set: make pairs from judgements or mine "
            "negatives first (on its version page)."
        )
    if eval_version is not None and eval_split not in eval_version.qrels_counts:
        raise TrainingError(f"{eval_version} has no split {eval_split!r} to evaluate on.")
    config = _config(base_model=base_model, options=options, guide_model=guide_model)

    def create() -> TrainingRun:
        run = TrainingRun.objects.create(
            team=team,
            name=name or f"{base_model.name} on {train_version}",
            base_model=base_model,
            train_version=train_version,
            eval_version=eval_version,
            eval_split=eval_split if eval_version else "",
            config=config.to_dict(),
            estimate=estimate(
                config,
                train_version.training_count,
                num_negatives=_negatives(config, train_version),
            ),
            created_by=created_by,
        )
        # Not the number alone: a run resumes from whatever checkpoints its folder holds, and
        # a database started afresh over kept artifacts hands out the same numbers again.
        run.output_dir = str(
            Path(settings.ARTIFACTS_ROOT) / "runs" / f"{run.pk}-{uuid.uuid4().hex[:8]}"
        )
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


def training_run_delete(*, run: TrainingRun) -> None:
    """Delete a run that is not running, with its checkpoints and logs. A run whose model is
    still registered keeps it: the model's lineage would point nowhere, so delete the model
    first (or keep both)."""

    with transaction.atomic():
        row = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if row.is_active:
            raise TrainingError(f"Run #{row.pk} is {row.status}; cancel it first.")
        if row.result_model_id is not None:
            raise TrainingError(
                f"Run #{row.pk} made the model {row.result_model.name}, which is still "
                "registered; delete the model first if neither is needed."
            )
        folder = Path(row.output_dir) if row.output_dir else None
        row.delete()
        if folder is not None and _inside_artifacts(folder):
            transaction.on_commit(lambda: artifact_delete(folder))


def _inside_artifacts(path: Path) -> bool:
    """Only what EmbedHub wrote is ever removed: never a folder a model was registered from."""
    root = Path(settings.ARTIFACTS_ROOT).resolve()
    try:
        return path.resolve().is_relative_to(root) and path.resolve() != root
    except OSError:
        return False


def _negatives(config: TrainConfig, version: DatasetVersion) -> int:
    """Hard negatives per row the run will use (the preview's texts per step): as set, else
    the trainer's default rule over the set's rows.

    The counts were kept on the version when it was written; the rows (and their negatives'
    texts, megabytes on a mined set) are not read at each preview and start. A version written
    before they were kept is counted by the database over a sample of its rows."""
    from apps.datasets.health import negatives_per_row
    from workers.common.estimate import default_negatives_of

    if config.num_negatives is not None:
        return config.num_negatives
    histogram = version.stats.get("negatives_per_row")
    if histogram is None:
        histogram = negatives_per_row(version, limit=5000)
    k = default_negatives_of(histogram)
    return min(k, 1) if config.loss == "gist" else k
