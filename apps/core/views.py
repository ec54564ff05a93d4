from __future__ import annotations

from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.core.responses import htmx_fragment
from apps.datasets.selectors import dataset_list
from apps.registry.selectors import embedding_model_list
from apps.runs.selectors import evaluation_list


@require_GET
@team_required()
def home(request):
    from apps.core.selectors import jobs_active, team_steps

    return render(
        request,
        "core/home.html",
        {
            "datasets": dataset_list(team=request.team),
            "models": embedding_model_list(team=request.team),
            "evaluations": evaluation_list(team=request.team)[:10],
            "steps": team_steps(team=request.team),
            "jobs": jobs_active(team=request.team)[:8],
        },
    )


@require_GET
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def jobs(request):
    """Every pending and running job of the team, with its queue and its place in it."""
    from apps.core.selectors import jobs_active

    context = {"jobs": jobs_active(team=request.team)}
    if htmx_fragment(request, "jobs"):
        return render(request, "core/jobs.html#list", context)
    return render(request, "core/jobs.html", context)
