import json
from pathlib import Path

from pydantic import ValidationError

from apps.core.commands import InputError, JsonCommand
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs.training import TrainingError, training_run_create
from workers.common.configs.training import TrainOptions, problems

# The file's keys besides the options: the objects a run is made of, named by id.
KEYS = ("base_model", "train_version", "eval_version", "eval_split", "name", "guide_model")


class Command(JsonCommand):
    help = (
        'Fine-tune a registered model. --config FILE.json holds {"base_model": ID, '
        '"train_version": ID, "eval_version": ID?, "eval_split": "test"?, "name": …?, '
        '"guide_model": ID?, "options": {workers.common.configs.training.TrainOptions fields: '
        "method, loss, batch_size, max_steps, …}}. Without "
        "--sync the run goes to a GPU worker and this waits; with --sync it runs here. With "
        "--sync the final evaluation runs here too."
    )

    def add_arguments(self, parser):
        parser.add_argument("--config", required=True, type=Path)
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=48 * 3600)

    def handle(self, *args, config: Path, sync: bool, timeout: float, **options):
        try:
            spec = json.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{config}: no such file") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{config}:{exc.lineno}: {exc.msg}") from None
        if not isinstance(spec, dict):
            raise InputError(f"{config}:1: the config must be a JSON object")
        unknown = sorted(set(spec) - {*KEYS, "options"})
        if unknown:
            where = 'unknown field (a run\'s settings go under "options")'
            raise InputError(*(f"{config}: {key}: {where}" for key in unknown))
        raw = spec.get("options") or {}
        if not isinstance(raw, dict):
            raise InputError(f"{config}: options: must be a JSON object")
        try:
            # An empty string means "the default", as a missing field does.
            run_options = TrainOptions.model_validate({k: v for k, v in raw.items() if v != ""})
        except ValidationError as exc:
            raise InputError(*(f"{config}: options.{p}" for p in problems(exc))) from None
        base = EmbeddingModel.objects.filter(pk=spec.get("base_model")).first()
        if base is None:
            raise InputError(f"{config}: base_model: no model {spec.get('base_model')!r}")
        train = DatasetVersion.objects.filter(pk=spec.get("train_version")).first()
        if train is None:
            raise InputError(f"{config}: train_version: no version {spec.get('train_version')!r}")
        guide = None
        if spec.get("guide_model") is not None:
            guide = EmbeddingModel.objects.filter(pk=spec["guide_model"], team=base.team).first()
            if guide is None:
                raise InputError(
                    f"{config}: guide_model: no model {spec['guide_model']!r} in {base.team}"
                )
        evaluation_version = None
        if spec.get("eval_version") is not None:
            evaluation_version = DatasetVersion.objects.filter(pk=spec["eval_version"]).first()
            if evaluation_version is None:
                raise InputError(f"{config}: eval_version: no version {spec['eval_version']!r}")
        try:
            run = training_run_create(
                team=base.team,
                base_model=base,
                train_version=train,
                eval_version=evaluation_version,
                eval_split=spec.get("eval_split", "test") if evaluation_version else "",
                options=run_options,
                guide_model=guide,
                name=spec.get("name", ""),
                enqueue=not sync,
            )
        except TrainingError as exc:
            raise InputError(f"{config}: {exc}") from None
        if sync:
            from workers.tasks.evaluation import evaluate
            from workers.tasks.training import train as train_task

            train_task.run(run.pk)
            run.refresh_from_db()
            if run.evaluation_id:
                evaluate.run(run.evaluation_id)
        else:
            self.wait_for_job(job=run, key="run", timeout=timeout)
        run.refresh_from_db()
        metrics = {}
        if run.evaluation_id:
            run.evaluation.refresh_from_db()
            metrics = run.evaluation.metrics
        payload = {
            "run": run.pk,
            "status": run.status,
            "model": run.result_model_id,
            "evaluation": run.evaluation_id,
            "metrics": metrics,
            "steps": run.result.get("steps"),
            "seconds": run.duration_seconds,
        }
        if run.status != "succeeded":
            payload["error"] = run.human_error
            self.emit(payload)
            raise SystemExit(1)
        self.emit(payload)
