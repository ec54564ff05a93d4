import tempfile
from pathlib import Path

from django.conf import settings

from apps.core.commands import InputError, JsonCommand
from apps.datasets.archives import (
    ArchiveError,
    beir_roots,
    extract_archive,
    extracted_files,
    is_archive,
    roots_problem,
)
from apps.datasets.beir import BeirError
from apps.datasets.services import dataset_import_beir


class Command(JsonCommand):
    help = (
        "Import a BEIR folder, or a .zip / .tar.gz holding one, as a new (or reused, if "
        "identical) dataset version; or, with --hub ORG/NAME [--revision REV], a dataset repo "
        "of the Hugging Face Hub (a download job, the same validation). Prints JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default="")
        parser.add_argument("--hub", default="", help="a Hub dataset repo id, ORG/NAME")
        parser.add_argument("--revision", default="", help="with --hub: branch, tag or sha")
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", default="", help="required unless --hub")
        parser.add_argument("--sync", action="store_true", help="with --hub: download here")
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args, path, hub, revision, team, name, sync, timeout, **options):
        team = self.get_team(team)
        if hub:
            if path:
                raise InputError("--hub: give a Hub repo or a path, not both.")
            return self.from_hub(team=team, repo_id=hub, revision=revision, name=name, sync=sync,
                                 timeout=timeout)  # fmt: skip
        if not path or not name:
            raise InputError("Give a PATH and --name (or --hub ORG/NAME).")
        with tempfile.TemporaryDirectory(prefix="embedhub-import-") as tmp:
            folder = Path(path)
            if folder.is_file() and is_archive(folder.name):
                try:
                    extracted = extract_archive(
                        folder,
                        Path(tmp),
                        max_bytes=settings.DATASET_ARCHIVE_MAX_BYTES,
                        max_ratio=settings.DATASET_ARCHIVE_MAX_RATIO,
                    )
                except ArchiveError as exc:
                    raise InputError(str(exc)) from exc
                roots = beir_roots(extracted_files(extracted))
                if problem := roots_problem(roots):
                    raise InputError(f"{path}: {problem}")
                folder = extracted / roots[0]
            try:
                result = dataset_import_beir(team=team, name=name, path=folder)
            except BeirError as exc:
                raise InputError(*exc.problems) from exc
        v = result.version
        self.emit(
            {
                "dataset": v.dataset_id,
                "version": v.pk,
                "number": v.number,
                "created": result.created,
                "documents": v.document_count,
                "queries": v.query_count,
                "qrels": v.qrels_counts,
                "warnings": v.warnings,
            }
        )

    def from_hub(self, *, team, repo_id, revision, name, sync, timeout) -> None:
        from apps.registry.services import HubImportError, hub_import_create
        from workers.tasks.hub import hub_import

        try:
            job = hub_import_create(team=team, kind="dataset", repo_id=repo_id,
                                    revision=revision, name=name, enqueue=not sync)  # fmt: skip
        except HubImportError as exc:
            raise InputError(str(exc)) from exc
        self.run_job(job=job, task=hub_import, sync=sync, timeout=timeout, key="hub_import",
                     payload=lambda j: {"hub_import": j.pk, "status": j.status,
                                        "version": j.result_version_id, "repo": j.repo_id,
                                        "sha": j.sha})  # fmt: skip
