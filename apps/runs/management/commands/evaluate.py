from apps.core.commands import InputError, JsonCommand
from apps.core.models import JobStatus
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation
from apps.runs.services import EvaluationError, evaluation_create


class Command(JsonCommand):
    help = (
        "Evaluate a model on a dataset version's split. Without --sync the job goes to the "
        "worker and this waits for it; with --sync the same task code runs in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, help="not needed with --method bm25")
        parser.add_argument("--method", choices=Evaluation.Method.values, default="dense")
        parser.add_argument("--dataset-version", type=int, required=True)
        parser.add_argument("--split", default="test")
        parser.add_argument("--sync", action="store_true")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, model, method, dataset_version, split, sync, timeout, **options):
        v = DatasetVersion.objects.filter(pk=dataset_version).select_related("dataset").first()
        if v is None:
            raise InputError(f"--dataset-version: no dataset version {dataset_version}")
        m = None
        if method == Evaluation.Method.DENSE:
            m = EmbeddingModel.objects.filter(pk=model).select_related("team").first()
            if m is None:
                raise InputError(f"--model: no model {model}")
        try:
            evaluation = evaluation_create(
                team=v.dataset.team,
                model=m,
                method=method,
                dataset_version=v,
                split=split,
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
            "cache_hit": evaluation.cache_hit,
            "seconds": evaluation.duration_seconds,
        }
        if evaluation.status != JobStatus.SUCCEEDED:
            payload["error"] = evaluation.human_error
            self.emit(payload)
            raise SystemExit(1)
        self.emit(payload)
