from apps.core.commands import InputError, JsonCommand
from apps.indexes.models import Deployment, IndexBuild
from apps.indexes.services import IndexBuildError, deployment_deploy, deployment_undeploy


class Command(JsonCommand):
    help = (
        "Deploy an index under a name (swapping the name's current index), or --undeploy a "
        "name. Prints what the search process answered."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--index", type=int, help="the index build to serve")
        parser.add_argument("--undeploy", action="store_true")

    def handle(self, *args, name, index, undeploy, **options):
        from django.db import transaction

        from apps.indexes.selectors import search_health

        if undeploy:
            deployment = Deployment.objects.filter(name=name).first()
            if deployment is None:
                raise InputError(f"{name}: no such deployment")
            with transaction.atomic():
                deployment_undeploy(deployment=deployment)
            self.emit({"name": name, "undeployed": True})
            return
        build = IndexBuild.objects.filter(pk=index).select_related("team").first()
        if build is None:
            raise InputError(f"--index: no index build {index}")
        try:
            deployment = deployment_deploy(team=build.team, name=name, index=build)
        except IndexBuildError as exc:
            raise InputError(str(exc)) from exc
        health = search_health()
        live = (health.get("deployments") or {}).get(deployment.serving_key)
        self.emit(
            {
                "name": name,
                "index": build.pk,
                "search_up": health.get("up", False),
                "live_index": live["index_id"] if live else None,
                "error": (health.get("errors") or {}).get(deployment.serving_key),
            }
        )
