from apps.core.commands import InputError, JsonCommand
from apps.core.models import JobStatus
from apps.datasets.models import DatasetVersion
from apps.indexes.services import IndexBuildError, index_build_create
from apps.registry.models import EmbeddingModel
from workers.common.configs.encoding import PRECISION_HELP, PRECISIONS
from workers.common.configs.indexing import (
    INDEX_TYPES,
    IndexParams,
    ParamsError,
    parse_params,
)


def _value(text: str):
    """Numbers as numbers (the page's form gives them typed); anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Command(JsonCommand):
    help = (
        "Build a faiss index of a model's embeddings of a dataset version, then measure it. "
        "Parameters as on the page: --param hnsw_m=32 --param ef_search=64 --param dim=256 "
        f"(any of {', '.join(IndexParams.model_fields)}). "
        "Without --sync the job goes to the index queue and this waits for it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, required=True)
        parser.add_argument("--dataset-version", type=int, required=True)
        parser.add_argument("--type", choices=INDEX_TYPES, required=True, dest="index_type")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--split", help="queries to measure on (default: test if present)")
        parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, model, dataset_version, index_type, param, split, precision, sync,
               timeout, **o):  # fmt: skip
        v = DatasetVersion.objects.filter(pk=dataset_version).select_related("dataset").first()
        if v is None:
            raise InputError(f"--dataset-version: no dataset version {dataset_version}")
        m = EmbeddingModel.objects.filter(pk=model).first()
        if m is None:
            raise InputError(f"--model: no model {model}")
        params = {}
        for item in param:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InputError(f"--param: {item!r} is not KEY=VALUE")
            if value.strip():  # KEY= leaves the parameter on its default
                params[key.strip()] = _value(value.strip())
        try:
            params = parse_params(params).given()
        except ParamsError as exc:
            raise InputError(*(f"--param {line}" for line in exc.problems)) from None
        try:
            build = index_build_create(
                team=v.dataset.team,
                model=m,
                dataset_version=v,
                index_type=index_type,
                params=params,
                split=split,
                precision=precision,
                enqueue=not sync,
            )
        except IndexBuildError as exc:
            raise InputError(str(exc)) from exc
        if sync:
            from workers.tasks.indexing import build_index

            build_index.run(build.pk)
        else:
            self.wait_for_job(job=build, key="index", timeout=timeout, extra={"metrics": {}})
        build.refresh_from_db()
        payload = {
            "index": build.pk,
            "status": build.status,
            "type": build.index_type,
            "spec": build.spec,
            "precision": build.precision_used,
            "path": build.path,
            "metrics": build.metrics,
            "seconds": build.duration_seconds,
        }
        if build.status != JobStatus.SUCCEEDED:
            payload["error"] = build.human_error
            self.emit(payload)
            raise SystemExit(1)
        self.emit(payload)
