from apps.core.commands import InputError, JsonCommand
from apps.registry.services import (
    HubImportError,
    ModelRegistrationError,
    embedding_model_register,
    hub_import_create,
)


class Command(JsonCommand):
    help = (
        "Register a base model from a local folder (sentence-transformers or transformers "
        "layout), with --package from an installed package that ships one, or with --hub "
        "ORG/NAME [--revision REV] from the Hugging Face Hub (a download job). Prints JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default="")
        parser.add_argument("--package", default="")
        parser.add_argument("--hub", default="", help="a Hub repo id, ORG/NAME")
        parser.add_argument("--revision", default="", help="with --hub: branch, tag or sha")
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", default="", help="required unless --hub")
        parser.add_argument("--sync", action="store_true", help="with --hub: download here")
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args, path, package, hub, revision, team, name, sync, timeout, **options):
        if hub:
            if path or package:
                raise InputError("--hub: give a Hub repo, or a folder, or a package; not two.")
            return self.from_hub(team=team, repo_id=hub, revision=revision, name=name, sync=sync,
                                 timeout=timeout)  # fmt: skip
        if not name:
            raise InputError("--name is required for a folder or a package.")
        try:
            model = embedding_model_register(
                team=self.get_team(team), name=name, path=path, package=package
            )
        except ModelRegistrationError as exc:
            raise InputError(str(exc)) from exc
        self.emit(
            {
                "model": model.pk,
                "dimension": model.dimension,
                "max_seq_length": model.max_seq_length,
                "pooling": model.pooling,
                "normalize": model.normalize,
                "parameters": model.parameters,
            }
        )

    def from_hub(self, *, team, repo_id, revision, name, sync, timeout) -> None:
        from workers.tasks.hub import hub_import

        try:
            job = hub_import_create(team=self.get_team(team), kind="model", repo_id=repo_id,
                                    revision=revision, name=name, enqueue=not sync)  # fmt: skip
        except HubImportError as exc:
            raise InputError(str(exc)) from exc
        self.run_job(job=job, task=hub_import, sync=sync, timeout=timeout, key="hub_import",
                     payload=lambda j: {"hub_import": j.pk, "status": j.status,
                                        "model": j.result_model_id, "repo": j.repo_id,
                                        "sha": j.sha})  # fmt: skip
