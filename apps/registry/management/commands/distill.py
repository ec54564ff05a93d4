from pydantic import ValidationError

from apps.core.commands import InputError, JsonCommand
from apps.registry.models import EmbeddingModel
from apps.registry.services import DistillError, distill_job_create
from workers.common.configs.distill import DistillConfig
from workers.common.configs.problems import config_problems

FIELDS = DistillConfig.model_fields


def _pca(text: str) -> int | str:
    return "none" if text.strip().lower() == "none" else int(text)


class Command(JsonCommand):
    help = (
        "Distill a static (Model2Vec) model from a registered model: registered with the source "
        "as parent, its speed measured against the source, both evaluated on one version. "
        "Without --sync the job goes to the worker and this waits for it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, required=True)
        pca = FIELDS["pca_dims"]
        helptext = f"{pca.description}; default {pca.default} (at most the model's)"
        parser.add_argument("--pca-dims", type=_pca, help=helptext)
        for name in ("vocabulary_version", "vocabulary_size", "evaluate_version"):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                                help=FIELDS[name].description)  # fmt: skip
        parser.add_argument("--split", help=FIELDS["split"].description)
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, model, sync, timeout, **options):
        source = EmbeddingModel.objects.filter(pk=model).select_related("team").first()
        if source is None:
            raise InputError(f"--model: no model {model}")
        # Only what was given: a default left alone may adapt (pca_dims to a small model).
        values = {name: options[name] for name in FIELDS if options.get(name) is not None}
        if values.get("pca_dims") == "none":
            values["pca_dims"] = None
        try:
            config = DistillConfig(**values)
        except ValidationError as exc:
            raise InputError(
                *(f"--{f.replace('_', '-')}: {why}" for f, why in config_problems(exc))
            ) from None
        try:
            job = distill_job_create(team=source.team, source=source, config=config,
                                     enqueue=not sync)  # fmt: skip
        except DistillError as exc:
            raise InputError(str(exc)) from exc
        from workers.tasks.distill import distill

        self.run_job(job=job, task=distill, sync=sync, timeout=timeout, key="distillation",
                     payload=lambda j: {"distillation": j.pk, "status": j.status,
                                        "model": j.result_model_id, "result": j.result,
                                        "seconds": j.duration_seconds})  # fmt: skip
