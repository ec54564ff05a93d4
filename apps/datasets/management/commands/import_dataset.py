from apps.core.commands import InputError, JsonCommand
from apps.datasets.beir import BeirError
from apps.datasets.services import dataset_import_beir


class Command(JsonCommand):
    help = "Import a BEIR folder as a new (or reused, if identical) dataset version. Prints JSON."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", required=True)

    def handle(self, *args, path, team, name, **options):
        try:
            result = dataset_import_beir(team=self.get_team(team), name=name, path=path)
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
