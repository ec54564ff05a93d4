from pydantic import ValidationError

from apps.core.commands import InputError, JsonCommand
from apps.registry.models import EmbeddingModel
from apps.registry.services import OptimizeError, optimize_job_create
from workers.common.configs.optimize import OptimizeConfig
from workers.common.configs.problems import config_problems

FIELDS = OptimizeConfig.model_fields


class Command(JsonCommand):
    help = (
        "Build an optimized (ONNX Runtime, fp32 or int8) variant of a registered model: checked "
        "against the model's vectors, registered with it as parent, its speed measured and "
        "both evaluated on one version. Without --sync the job goes to the worker and this "
        "waits for it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, required=True)
        parser.add_argument("--backend", help=FIELDS["backend"].description)
        parser.add_argument("--quantize", help=FIELDS["quantize"].description)
        parser.add_argument("--evaluate-version", type=int,
                            help=FIELDS["evaluate_version"].description)  # fmt: skip
        parser.add_argument("--split", help=FIELDS["split"].description)
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, model, sync, timeout, **options):
        source = EmbeddingModel.objects.filter(pk=model).select_related("team").first()
        if source is None:
            raise InputError(f"--model: no model {model}")
        values = {name: options[name] for name in FIELDS if options.get(name) is not None}
        try:
            config = OptimizeConfig(**values)
        except ValidationError as exc:
            raise InputError(
                *(f"--{f.replace('_', '-')}: {why}" for f, why in config_problems(exc))
            ) from None
        try:
            job = optimize_job_create(team=source.team, source=source, config=config,
                                      enqueue=not sync)  # fmt: skip
        except OptimizeError as exc:
            raise InputError(str(exc)) from exc
        from workers.tasks.optimize import optimize

        self.run_job(job=job, task=optimize, sync=sync, timeout=timeout, key="optimization",
                     payload=lambda j: {"optimization": j.pk, "status": j.status,
                                        "model": j.result_model_id, "result": j.result,
                                        "seconds": j.duration_seconds})  # fmt: skip
