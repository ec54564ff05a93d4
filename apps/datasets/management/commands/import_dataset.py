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
        "identical) dataset version. Prints JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", required=True)

    def handle(self, *args, path, team, name, **options):
        team = self.get_team(team)
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
