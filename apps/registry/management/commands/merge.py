from pydantic import ValidationError

from apps.core.commands import InputError, JsonCommand
from apps.registry.models import EmbeddingModel
from apps.registry.services import MergeError, merge_job_create
from workers.common.configs.merge import MergeConfig
from workers.common.configs.problems import config_problems

FIELDS = MergeConfig.model_fields


def _numbers(kind):
    def parse(text: str) -> list:  # argparse turns a ValueError into "invalid … value"
        return [kind(p) for p in text.replace(" ", "").split(",") if p]

    parse.__name__ = f"{kind.__name__} list"
    return parse


class Command(JsonCommand):
    help = (
        "Merge registered models of one architecture in weight space (soup, greedy_soup, "
        "linear, slerp, ties, dare, model_stock), optionally searching the weight of two end "
        "points on a dev split: the result is registered as a merged model whose lineage names "
        "every parent, and compared with each parent on the test split. Without --sync the job "
        "goes to the worker and this waits for it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--models", type=_numbers(int), required=True,
                            help=FIELDS["models"].description)  # fmt: skip
        parser.add_argument("--base", type=int, help=FIELDS["base"].description)
        parser.add_argument("--method", help=FIELDS["method"].description)
        parser.add_argument("--weights", type=_numbers(float), help=FIELDS["weights"].description)
        parser.add_argument("--search", action="store_true", default=None,
                            help=FIELDS["search"].description)  # fmt: skip
        parser.add_argument("--grid", type=_numbers(float), help=FIELDS["grid"].description)
        for name in ("density", "scale", "drop_rate"):
            parser.add_argument(f"--{name.replace('_', '-')}", type=float,
                                help=FIELDS[name].description)  # fmt: skip
        parser.add_argument("--seed", type=int, help=FIELDS["seed"].description)
        parser.add_argument("--name", help=FIELDS["name"].description)
        parser.add_argument("--dev-version", dest="evaluate_version", type=int,
                            help=FIELDS["evaluate_version"].description)  # fmt: skip
        parser.add_argument("--dev-split", help=FIELDS["dev_split"].description)
        parser.add_argument("--test-split", help=FIELDS["test_split"].description)
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, sync, timeout, **options):
        first = EmbeddingModel.objects.filter(pk=options["models"][0]).select_related("team")
        first = first.first()
        if first is None:
            raise InputError(f"--models: no model {options['models'][0]}")
        values = {name: options[name] for name in FIELDS if options.get(name) is not None}
        try:
            config = MergeConfig(**values)
        except ValidationError as exc:
            raise InputError(
                *(f"--{f.replace('_', '-')}: {why}" for f, why in config_problems(exc))
            ) from None
        try:
            # Resolved in the first model's team: another team's model reads as missing.
            job = merge_job_create(team=first.team, config=config, enqueue=not sync)
        except MergeError as exc:
            raise InputError(str(exc)) from exc
        from workers.tasks.merge import merge

        self.run_job(job=job, task=merge, sync=sync, timeout=timeout, key="merge",
                     payload=lambda j: {"merge": j.pk, "status": j.status,
                                        "model": j.result_model_id,
                                        "lineage": j.result.get("lineage"),
                                        "search": j.result.get("search"),
                                        "greedy": j.result.get("greedy"),
                                        "dev": j.result.get("dev"),
                                        "evaluations": j.result.get("evaluations"),
                                        "seconds": j.duration_seconds})  # fmt: skip
