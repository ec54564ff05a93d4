from django.contrib.auth import get_user_model
from django.utils.text import slugify

from apps.accounts.models import Team
from apps.accounts.services import membership_set, team_create
from apps.core.commands import InputError, JsonCommand


class Command(JsonCommand):
    help = "Create a team (idempotent) and optionally add a user as its admin. Prints JSON."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug", default="")
        parser.add_argument("--admin", default="", help="Username to make team admin.")

    def handle(self, *args, name, slug, admin, **options):
        slug = slug or slugify(name)
        team = Team.objects.filter(slug=slug).first() or team_create(name=name, slug=slug)
        if admin:
            user = get_user_model().objects.filter(username=admin).first()
            if user is None:
                raise InputError(f"--admin: no user {admin!r}")
            membership_set(team=team, user=user, role="admin")
        self.emit({"team": team.pk, "slug": team.slug})
