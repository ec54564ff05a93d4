import time

from apps.core.commands import InputError, JsonCommand
from apps.datasets.curation import (
    CurationError,
    curation_accept,
    curation_config,
    curation_create,
)
from apps.datasets.models import CurationJob, DatasetVersion
from apps.registry.models import EmbeddingModel
from workers.common.configs.curation import CONFIGS
from workers.common.configs.encoding import PRECISION_HELP, PRECISIONS


def _parameters() -> str:
    """Each kind's parameters with their defaults, from the kind's config."""
    lines = []
    for kind, config_class in CONFIGS.items():
        fields = config_class.model_fields
        settable = [
            f"{name}={'(required)' if fields[name].is_required() else fields[name].default}"
            for name in config_class.settable()
        ]
        lines.append(f"{kind}: {', '.join(settable) or 'none'}")
    return "; ".join(lines)


class Command(JsonCommand):
    help = (
        "Run a curation job on a dataset version: semdedup, mine, dsir or tokens. Parameters "
        "as the version page and the API take them (--param range_max=100 --param split=train; "
        "an empty value means none where a parameter allows none). Without --sync the job goes "
        "to the worker and this waits; --accept accepts a dedup's result. Parameters and "
        f"defaults: {_parameters()}."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=CurationJob.Kind.values)
        parser.add_argument("--dataset-version", type=int, required=True)
        parser.add_argument("--model", type=int)
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument(
            "--precision",
            choices=PRECISIONS,
            help=f"semdedup and mine (the kinds that encode): {PRECISION_HELP}",
        )
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--accept", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, kind, dataset_version, model, param, precision, sync, accept, timeout,
               **opts):  # fmt: skip
        version = (
            DatasetVersion.objects.filter(pk=dataset_version).select_related("dataset").first()
        )
        if version is None:
            raise InputError(f"--dataset-version: no dataset version {dataset_version}")
        m = None
        if model is not None:
            m = EmbeddingModel.objects.filter(pk=model, team=version.dataset.team).first()
            if m is None:
                raise InputError(f"--model: no model {model} in the version's team")
        params = {}
        for item in param:
            key, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--param: {item!r} is not KEY=VALUE")
            params[key.strip()] = value.strip()
        if precision is not None:
            if "precision" not in CONFIGS[kind].model_fields:
                raise InputError(f"--precision: {kind} encodes nothing")
            params["precision"] = precision
        try:
            config = curation_config(kind=kind, values=params)
        except CurationError as exc:
            raise InputError(f"--param: {exc}") from exc
        try:
            job = curation_create(
                team=version.dataset.team,
                source=version,
                kind=kind,
                params=config,
                model=m,
                enqueue=not sync,
            )
        except CurationError as exc:
            raise InputError(str(exc)) from exc
        started = time.monotonic()
        if sync:
            from workers.tasks.curation import curate

            curate.run(job.pk)
        else:
            self.wait_for_job(job=job, key="job", timeout=timeout)
        job.refresh_from_db()
        if accept and job.review == CurationJob.Review.PENDING:
            curation_accept(job=job)
            job.refresh_from_db()
        payload = {
            "job": job.pk,
            "status": job.status,
            "seconds": round(time.monotonic() - started, 1),
            "version": job.version_id,
            "baseline_version": job.baseline_version_id,
            "result": {k: v for k, v in job.result.items() if k not in ("samples", "examples")},
        }
        if job.status != "succeeded":
            payload["error"] = job.human_error
            self.emit(payload)
            raise SystemExit(1)
        self.emit(payload)
