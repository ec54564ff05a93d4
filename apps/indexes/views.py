from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.responses import delete_response, htmx_fragment, job_cancel_response
from apps.indexes.charts import tradeoff_charts
from apps.indexes.console import ConsoleError, console_search, filters_parse
from apps.indexes.forms import IndexBuildForm
from apps.indexes.selectors import (
    INDEX_SORTS,
    deployment_events,
    deployment_get,
    deployment_list,
    deployment_serving,
    index_build_get,
    index_build_list,
    index_siblings,
    search_health,
    trained_by,
)
from apps.indexes.services import (
    DeploymentConflict,
    IndexBuildError,
    deployment_deploy,
    deployment_undeploy,
    index_build_create,
    index_build_delete,
)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@login_required
def search_status(request):
    health = search_health()
    template = (
        "indexes/search.html#badge"
        if htmx_fragment(request, "search-badge")
        else "indexes/search.html"
    )
    return render(request, template, {"health": health})


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def index_list(request):
    from apps.core.listing import Filter, list_page
    from apps.core.models import JobStatus
    from apps.indexes.models import IndexType
    from apps.registry.selectors import embedding_model_list

    models = embedding_model_list(team=request.team).filter(index_builds__isnull=False)
    listing = list_page(
        request=request,
        rows=index_build_list(team=request.team),
        name="build",
        search=("model__name", "dataset_version__dataset__name"),
        search_label="Search model or data",
        sorts=INDEX_SORTS,
        filters=[
            Filter("status", "status", JobStatus.choices),
            Filter("type", "type", IndexType.choices, field="index_type"),
            Filter("model", "model", models.values_list("pk", "name").distinct(),
                   field="model_id"),
        ],
    )  # fmt: skip
    context = {"listing": listing, "builds": listing.page}
    if listing.partial:
        return render(request, "indexes/list.html#listing", context)
    health = search_health()
    deployments = list(deployment_list(team=request.team))
    for d in deployments:
        d.serving = deployment_serving(deployment=d, health=health)
    context.update(
        deployments=deployments,
        events=deployment_events(team=request.team)[:20],
        health=health,
        can_write=can_write(user=request.user, team=request.team),
    )
    return render(request, "indexes/list.html", context)


@require_http_methods(["GET", "POST"])
@team_required(Role.MEMBER)
def index_new(request):
    form = IndexBuildForm(request.POST or None, team=request.team, initial=request.GET.dict())
    error = None
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            build = index_build_create(
                team=request.team,
                model=d["model"],
                dataset_version=d["dataset_version"],
                index_type=d["index_type"],
                params=form.params(),
                precision=d["precision"],
                created_by=request.user,
            )
        except IndexBuildError as exc:
            error = str(exc)
        else:
            return redirect("indexes:detail", pk=build.pk)
    return render(request, "indexes/new.html", {"form": form, "error": error})


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def index_detail(request, pk: int):
    build = index_build_get(user=request.user, pk=pk)
    context = _detail_context(request, build)
    if htmx_fragment(request, "index-status"):
        return render(request, "indexes/detail.html#status", context)
    return render(request, "indexes/detail.html", context)


def _detail_context(request, build) -> dict:
    siblings = index_siblings(build=build) if build.status == "succeeded" else []
    return {
        "build": build,
        "can_write": can_write(user=request.user, team=build.team),
        "charts": tradeoff_charts(builds=siblings, current=build.pk) if siblings else [],
        "siblings": siblings,
        "deployments": list(build.deployments.all()),
        "trained_by": trained_by(model=build.model),
    }


@require_POST
@team_required()
def index_cancel(request, pk: int):
    return job_cancel_response(
        request,
        job=index_build_get(user=request.user, pk=pk, role=Role.MEMBER),
        partial="indexes/detail.html#status",
        context=lambda job: _detail_context(request, job),
        url=reverse("indexes:detail", args=[pk]),
    )


@require_POST
@team_required()
def index_deploy(request, pk: int):
    build = index_build_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        deployment = deployment_deploy(
            team=build.team, name=request.POST.get("name", ""), index=build, user=request.user
        )
    except IndexBuildError as exc:
        messages.error(request, str(exc))
        return redirect("indexes:detail", pk=pk)
    messages.success(request, f"{deployment.name} now serves index #{build.pk}.")
    if build.team_id != request.team.pk:  # deployment pages show the session's team
        return redirect("indexes:detail", pk=pk)
    return redirect("indexes:deployment", name=deployment.name)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def deployment_detail(request, name: str):
    deployment = deployment_get(team=request.team, name=name)
    context = {
        "deployment": deployment,
        "serving": deployment_serving(deployment=deployment, health=search_health()),
        "can_write": can_write(user=request.user, team=request.team),
    }
    if htmx_fragment(request, "serving"):
        return render(request, "indexes/deployment.html#serving", context)
    context["events"] = deployment_events(team=request.team, name=name)[:100]
    from apps.indexes.calibrations import calibration_state

    context["calibration"] = calibration_state(deployment=deployment)
    from apps.registry.selectors import embedding_model_list

    context["rerankers"] = embedding_model_list(team=request.team, role="reranker")
    # A model upgrade starts from here: any other embedding model of the team.
    context["upgrade_models"] = embedding_model_list(team=request.team, role="embedding").exclude(
        pk=deployment.index.model_id
    )
    context["upgrades"] = deployment.upgrades.select_related("new_model", "new_index")[:20]
    context["others"] = (
        index_build_list(team=request.team)
        .filter(status="succeeded")
        .exclude(pk=deployment.index_id)[:100]
    )
    return render(request, "indexes/deployment.html", context)


@require_POST
@team_required(Role.MEMBER)
def deployment_swap(request, name: str):
    deployment = deployment_get(team=request.team, name=name)
    build = index_build_list(team=request.team).filter(pk=request.POST.get("index") or 0).first()
    if build is None:
        messages.error(request, "index: choose one of your team's built indexes.")
        return redirect("indexes:deployment", name=name)
    try:
        deployment_deploy(team=request.team, name=deployment.name, index=build, user=request.user)
    except IndexBuildError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{name} now serves index #{build.pk}.")
    return redirect("indexes:deployment", name=name)


@require_POST
@team_required(Role.MEMBER)
def deployment_settings(request, name: str):
    """The same index, searched another way: hybrid's fusion and the rerank stage."""
    deployment = deployment_get(team=request.team, name=name)
    post = request.POST
    fields = ("lexical", "rrf_k", "candidates", "dense_weight")
    fusion = {k: post[k] for k in fields if post.get(k)}
    rerank: dict | None = {"model": post.get("rerank_model") or None}
    if post.get("k_prime"):
        rerank["k_prime"] = post["k_prime"]
    current = deployment.rerank
    if (
        current
        and str(current["model"]) == str(rerank["model"])
        and str(current["k_prime"]) == str(rerank.get("k_prime", current["k_prime"]))
    ):
        rerank = None  # unchanged: kept as it was approved (a fusion-only change)
    elif not current and rerank["model"] is None:
        rerank = None
    try:
        deployment_deploy(
            team=request.team, name=deployment.name, index=deployment.index, user=request.user,
            fusion={**deployment.fusion, **fusion}, rerank=rerank,
        )  # fmt: skip
    except DeploymentConflict:
        messages.info(request, "Nothing changed.")
    except IndexBuildError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{name}'s search settings are saved; the search service "
                                  "reloads it in the background.")  # fmt: skip
    return redirect("indexes:deployment", name=name)


@require_POST
@team_required(Role.MEMBER)
def deployment_undeploy_view(request, name: str):
    deployment = deployment_get(team=request.team, name=name)
    deployment_undeploy(deployment=deployment, user=request.user)
    messages.success(request, f"{name} is undeployed.")
    return redirect("indexes:list")


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def console(request):
    """Type a query, see the hits (debounced htmx); ``b`` runs it on a second deployment too."""
    deployments = list(deployment_list(team=request.team))
    names = {d.name: d for d in deployments}
    a = names.get(request.GET.get("d", "")) or (deployments[0] if deployments else None)
    b = names.get(request.GET.get("b", ""))
    q = request.GET.get("q", "").strip()
    try:
        k = min(max(int(request.GET.get("k") or 10), 1), 100)
    except ValueError:
        k = 10
    mode = request.GET.get("mode", "dense")
    mode = mode if mode in ("dense", "bm25", "sparse", "hybrid") else "dense"
    # "rerank" off: the first stage alone (a deployment without a rerank stage ignores it).
    rerank = request.GET.get("rerank", "on") != "off"
    context = {"deployments": deployments, "a": a, "b": b, "q": q, "k": k, "mode": mode,
               "rerank": rerank,
               "modes": [("dense", "dense"), ("bm25", "BM25"), ("sparse", "sparse (SPLADE)"),
                         ("hybrid", "hybrid (RRF)")],
               "filters": request.GET.get("filters", "")}  # fmt: skip
    columns, error = [], None
    if q and a:
        try:
            filters = filters_parse(context["filters"])
        except ConsoleError as exc:
            error = str(exc)
        else:
            for d in (a, b) if b else (a,):
                columns.append({"deployment": d, **console_search(
                    deployment=d, query=q, k=k, filters=filters, mode=mode,
                    rerank=rerank)})  # fmt: skip
    context.update(columns=columns, error=error)
    if htmx_fragment(request, "results"):
        return render(request, "indexes/console.html#results", context)
    return render(request, "indexes/console.html", context)


@require_POST
@team_required(Role.MEMBER)
def index_delete(request, pk: int):
    build = index_build_get(user=request.user, pk=pk, role=Role.MEMBER)
    return delete_response(
        request, delete=lambda: index_build_delete(build=build), refused=IndexBuildError,
        done=f"Index #{pk} and its files are deleted.",
        back=reverse("indexes:detail", args=[pk]), then=reverse("indexes:list"),
    )  # fmt: skip
