from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.registry.forms import RegisterModelForm
from apps.registry.selectors import embedding_model_get, embedding_model_list
from apps.registry.services import ModelRegistrationError, embedding_model_register
from apps.runs.models import TrainingRun
from apps.runs.selectors import evaluation_list, precision_check


@require_GET
@team_required()
def model_list(request):
    return render(
        request, "registry/list.html", {"models": embedding_model_list(team=request.team)}
    )


@require_GET
@team_required()
def model_detail(request, pk: int):
    model = embedding_model_get(user=request.user, pk=pk)
    return render(
        request,
        "registry/detail.html",
        {
            "model": model,
            "evaluations": evaluation_list(team=model.team).filter(model=model),
            # Lineage: the run that made this model (fine-tunes) and runs that started from it.
            "made_by": TrainingRun.objects.filter(result_model=model)
            .select_related("train_version__dataset")
            .first(),
            "children": model.children.order_by("name"),
            "precision_check": precision_check(model=model),
        },
    )


@require_http_methods(["GET", "POST"])
@team_required(Role.ADMIN)
def model_register(request):
    # It reads folders of the server, so it is for the site's operators (staff), who also run
    # manage.py register_model; a team admin alone must not probe the server's disk.
    if not request.user.is_staff:
        raise PermissionDenied("Registering a model from the server needs a staff account.")
    form = RegisterModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = embedding_model_register(
                team=request.team,
                name=form.cleaned_data["name"],
                path=form.cleaned_data["path"],
                package=form.cleaned_data["package"],
            )
        except ModelRegistrationError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("registry:detail", pk=model.pk)
    return render(request, "registry/register.html", {"form": form})
