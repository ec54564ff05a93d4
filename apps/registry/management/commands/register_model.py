from apps.core.commands import InputError, JsonCommand
from apps.registry.services import ModelRegistrationError, embedding_model_register


class Command(JsonCommand):
    help = (
        "Register a base model from a local folder (sentence-transformers or transformers "
        "layout) or, with --package, from an installed package that ships one. Prints JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default="")
        parser.add_argument("--package", default="")
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", required=True)

    def handle(self, *args, path, package, team, name, **options):
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
