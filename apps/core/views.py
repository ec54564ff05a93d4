from __future__ import annotations

from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.decorators import team_required
from apps.datasets.selectors import dataset_list
from apps.registry.selectors import embedding_model_list
from apps.runs.selectors import evaluation_list


@require_GET
@team_required()
def home(request):
    return render(
        request,
        "core/home.html",
        {
            "datasets": dataset_list(team=request.team),
            "models": embedding_model_list(team=request.team),
            "evaluations": evaluation_list(team=request.team)[:10],
        },
    )


@require_GET
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
