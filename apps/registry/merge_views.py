"""The Merge lab's pages: the merge form (from the models list, or a model page with that
model ticked) and a merge job's page (live status, the weight search chart, the merge against
each parent on test)."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.responses import job_cancel_page, job_page
from apps.registry.charts import weight_chart
from apps.registry.forms import MergeForm
from apps.registry.models import EmbeddingModel, MergeJob
from apps.registry.selectors import merge_job_get, merge_summary
from apps.registry.services import MergeError, MergeNotFound, merge_job_create


def _foreign_ids(request) -> bool:
    """Whether the POST names a model that is not the team's (read as missing: a 404)."""
    asked = [*request.POST.getlist("models"), request.POST.get("base") or ""]
    ids = {int(v) for v in asked if v.isdigit()}
    mine = set(EmbeddingModel.objects.filter(team=request.team, pk__in=ids)
               .values_list("pk", flat=True))  # fmt: skip
    return bool(ids - mine)


@require_http_methods(["GET", "POST"])
@team_required()
def merge_new(request):
    team = request.team
    writable = can_write(user=request.user, team=team)
    error = None
    if request.method == "POST":
        if not writable:
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied("Starting a merge needs the member role.")
        if _foreign_ids(request):
            raise Http404("No such model in your team.")
        form = MergeForm(request.POST, team=team)
        if form.is_valid():
            try:
                job = merge_job_create(team=team, config=form.config, created_by=request.user)
            except MergeNotFound as exc:
                raise Http404(str(exc)) from None
            except MergeError as exc:
                error = str(exc)
            else:
                return redirect("registry:merge", pk=job.pk)
    else:
        ticked = [v for v in request.GET.getlist("models") if v.isdigit()]
        form = MergeForm(team=team, initial={"models": ticked} if ticked else None)
    jobs = MergeJob.objects.filter(team=team).select_related("result_model")[:20]
    return render(request, "registry/merge_new.html",
                  {"form": form, "error": error, "jobs": jobs, "can_write": writable})  # fmt: skip


def _context(request, job: MergeJob) -> dict:
    search = job.result.get("search") or {}
    parents = {m.pk: m for m in job.parents.all()}
    return {
        "job": job,
        "parents": [parents[pk] for pk in job.model_ids if pk in parents],
        "summary": merge_summary(job=job),
        "chart": weight_chart(search) if search else None,
        "search": search,
        "can_write": can_write(user=request.user, team=job.team),
    }


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def merge_detail(request, pk: int):
    job = merge_job_get(user=request.user, pk=pk)
    return job_page(request, template="registry/merge.html", target="merge-status",
                    context=_context(request, job))  # fmt: skip


@require_POST
@team_required()
def merge_cancel(request, pk: int):
    job = merge_job_get(user=request.user, pk=pk, role=Role.MEMBER)
    return job_cancel_page(request, job=job, template="registry/merge.html",
                           url=reverse("registry:merge", args=[pk]),
                           context=lambda j: _context(request, j))  # fmt: skip
