import typing

from pydantic import ValidationError

from apps.core.commands import InputError, JsonCommand
from apps.core.models import JobStatus
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs.services import EvaluationError, evaluation_create
from workers.common.configs.evaluation import FUSION_FIELDS, EvaluationConfig
from workers.common.configs.problems import config_problems

FIELDS = EvaluationConfig.model_fields


class Command(JsonCommand):
    help = (
        "Evaluate a model on a dataset version's split. Without --sync the job goes to the "
        "worker and this waits for it; with --sync the same task code runs in this process."
    )

    def add_arguments(self, parser):
        # The config's fields, with its defaults and help; the config checks the values.
        parser.add_argument("--model", type=int, help=FIELDS["model"].description)
        parser.add_argument(
            "--method",
            choices=typing.get_args(FIELDS["method"].annotation),
            default=FIELDS["method"].default,
            help=FIELDS["method"].description,
        )
        parser.add_argument("--dataset-version", type=int, required=True)
        parser.add_argument(
            "--split", default=FIELDS["split"].default, help=FIELDS["split"].description
        )
        parser.add_argument(
            "--precision",
            choices=typing.get_args(FIELDS["precision"].annotation),
            default=FIELDS["precision"].default,
            help=FIELDS["precision"].description,
        )
        # Hybrid only; given or not, the config checks them and fusion_settings() keeps them
        # for method hybrid alone.
        for name in FUSION_FIELDS:
            kind = typing.get_args(FIELDS[name].annotation)
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                choices=kind if name in ("fusion", "normalization") else None,
                type={
                    "rrf_k": int,
                    "candidates": int,
                    "dense_weight": float,
                    "lexical_model": int,
                }.get(name, str),  # fmt: skip
                help=FIELDS[name].description,
            )
        parser.add_argument(
            "--first-stage", type=int, help=FIELDS["first_stage"].description + " (its split)"
        )
        parser.add_argument(
            "--k-prime", type=int, default=FIELDS["k_prime"].default,
            help=FIELDS["k_prime"].description,
        )  # fmt: skip
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(
        self, *args, model, method, dataset_version, split, precision, sync, timeout,
        first_stage, k_prime, **options,
    ):  # fmt: skip
        v = DatasetVersion.objects.filter(pk=dataset_version).select_related("dataset").first()
        if v is None:
            raise InputError(f"--dataset-version: no dataset version {dataset_version}")
        fusion = {n: options[n] for n in FUSION_FIELDS if options.get(n) is not None}
        first = None
        if method == "rerank" and first_stage is not None:
            from apps.runs.models import Evaluation

            first = Evaluation.objects.filter(pk=first_stage, team=v.dataset.team).first()
            if first is None:
                raise InputError(
                    f"--first-stage: no evaluation {first_stage} in the version's team"
                )
            split = first.split
        try:
            config = EvaluationConfig(method=method, model=model, split=split, precision=precision,
                                      first_stage=first_stage, k_prime=k_prime,
                                      **fusion)  # fmt: skip
        except ValidationError as exc:
            raise InputError(
                *(f"--{f.replace('_', '-')}: {why}" for f, why in config_problems(exc))
            ) from None
        m = None
        if config.method != "bm25":
            m = EmbeddingModel.objects.filter(pk=config.model).select_related("team").first()
            if m is None:
                raise InputError(f"--model: no model {model}")
        try:
            evaluation = evaluation_create(
                team=v.dataset.team,
                model=m,
                method=config.method,
                dataset_version=v,
                split=config.split,
                precision=config.precision,
                fusion=config.fusion_settings(),
                first_stage=first,
                enqueue=not sync,
            )
        except EvaluationError as exc:
            raise InputError(str(exc)) from exc
        if sync:
            from workers.tasks.evaluation import evaluate

            evaluate.run(evaluation.pk)
        else:
            self.wait_for_job(job=evaluation, key="evaluation", timeout=timeout,
                              extra={"metrics": {}})  # fmt: skip
        evaluation.refresh_from_db()
        payload = {
            "evaluation": evaluation.pk,
            "status": evaluation.status,
            "metrics": evaluation.metrics,
            "precision": evaluation.precision_used,
            **(
                {"fusion": evaluation.fusion, "fusion_result": evaluation.fusion_result}
                if evaluation.fusion
                else {}
            ),  # fmt: skip
            "cache_hit": evaluation.cache_hit,
            "seconds": evaluation.duration_seconds,
        }
        if evaluation.status != JobStatus.SUCCEEDED:
            payload["error"] = evaluation.human_error
            self.emit(payload)
            raise SystemExit(1)
        self.emit(payload)
