from apps.core.commands import InputError, JsonCommand
from apps.indexes.models import Deployment, IndexBuild
from apps.indexes.services import IndexBuildError, deployment_deploy, deployment_undeploy
from workers.common.configs.indexing import DeploymentFusion


class Command(JsonCommand):
    help = (
        "Deploy an index under a name (swapping the name's current index), or --undeploy a "
        "name. Prints what the search process answered."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--index", type=int, help="the index build to serve")
        parser.add_argument("--undeploy", action="store_true")
        parser.add_argument("--team", help="the team's slug, when several teams use the name")
        for name, field in DeploymentFusion.model_fields.items():
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(field.default),
                                help=f"search mode hybrid: {field.description}")  # fmt: skip
        parser.add_argument(
            "--rerank-model",
            type=int,
            help="a rerank stage: the id of a reranker of the index's team",
        )
        parser.add_argument(
            "--k-prime", type=int, help="rerank: the first stage's hits it scores (default 50)"
        )
        parser.add_argument("--no-rerank", action="store_true", help="remove the rerank stage")

    def handle(self, *args, name, index, undeploy, team, rerank_model, k_prime, no_rerank,
               **options):  # fmt: skip
        given = {n: options[n] for n in DeploymentFusion.model_fields if options.get(n) is not None}
        from django.db import transaction

        from apps.indexes.selectors import deployment_serving, search_health

        if undeploy:
            found = Deployment.objects.filter(name=name).select_related("team")
            if team:
                found = found.filter(team__slug=team)
            found = list(found)
            if not found:
                raise InputError(f"{name}: no such deployment" + (f" in {team}" if team else ""))
            if len(found) > 1:
                teams = ", ".join(sorted(d.team.slug for d in found))
                raise InputError(f"{name}: deployed by several teams ({teams}); pass --team")
            deployment = found[0]
            with transaction.atomic():
                deployment_undeploy(deployment=deployment)
            self.emit({"name": name, "undeployed": True})
            return
        build = IndexBuild.objects.filter(pk=index).select_related("team").first()
        if build is None:
            raise InputError(f"--index: no index build {index}")
        rerank = None
        if k_prime is not None and rerank_model is None:
            raise InputError("--k-prime: give --rerank-model with it (the reranker to use)")
        if no_rerank:
            rerank = {"model": None}
        elif rerank_model is not None:
            rerank = {"model": rerank_model, **({"k_prime": k_prime} if k_prime else {})}
        try:
            deployment = deployment_deploy(team=build.team, name=name, index=build,
                                           fusion=given or None, rerank=rerank)  # fmt: skip
        except IndexBuildError as exc:
            raise InputError(str(exc)) from exc
        serving = deployment_serving(deployment=deployment, health=search_health())
        live = serving.get("live") if serving["state"] != "live" else serving
        self.emit(
            {
                "name": name,
                "index": build.pk,
                "serving": serving["state"],  # live, loading, refused or down
                "live_index": live["index_id"] if live else None,
                "error": serving.get("error"),
            }
        )
