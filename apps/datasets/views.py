from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.decorators import team_required
from apps.datasets.selectors import dataset_get, dataset_list, dataset_version_get
from apps.runs.forms import EvaluationForm
from apps.runs.selectors import evaluation_list


@require_GET
@team_required()
def dataset_index(request):
    return render(request, "datasets/list.html", {"datasets": dataset_list(team=request.team)})


@require_GET
@team_required()
def dataset_detail(request, pk: int):
    dataset = dataset_get(user=request.user, pk=pk)
    return render(
        request,
        "datasets/detail.html",
        {"dataset": dataset, "versions": dataset.versions.order_by("-number")},
    )


@require_GET
@team_required()
def version_detail(request, pk: int):
    version = dataset_version_get(user=request.user, pk=pk)
    return render(
        request,
        "datasets/version.html",
        {
            "version": version,
            "dataset": version.dataset,
            "form": EvaluationForm(team=version.dataset.team, version=version),
            "evaluations": evaluation_list(team=version.dataset.team).filter(
                dataset_version=version
            ),
            "sample_documents": version.documents.order_by("pk")[:5],
        },
    )
