from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.decorators import team_required
from apps.accounts.models import Role
from apps.accounts.selectors import can_write
from apps.core.models import JobStatus
from apps.core.responses import delete_response, htmx_fragment, job_cancel_response
from apps.datasets.models import DatasetVersion
from apps.datasets.selectors import dataset_version_get, query_get
from apps.runs import compare, exports
from apps.runs.charts import scatter_chart
from apps.runs.forms import EvaluationForm
from apps.runs.models import Evaluation
from apps.runs.selectors import (
    EVALUATION_SORTS,
    evaluation_get,
    evaluation_list,
    evaluation_same,
)
from apps.runs.services import (
    EvaluationError,
    evaluation_create,
    evaluation_delete,
    evaluation_rerun,
)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def evaluation_index(request):
    from apps.core.listing import Filter, list_page
    from apps.registry.selectors import embedding_model_list

    versions = DatasetVersion.objects.filter(dataset__team=request.team).select_related("dataset")
    listing = list_page(
        request=request,
        rows=evaluation_list(team=request.team),
        name="evaluation",
        search=("model__name", "dataset_version__dataset__name"),
        search_label="Search model or data",
        sorts=EVALUATION_SORTS,
        filters=[
            Filter("method", "method", Evaluation.Method.choices),
            Filter("model", "model", embedding_model_list(team=request.team)
                   .values_list("pk", "name"), field="model_id"),
            Filter("version", "data", [(v.pk, str(v)) for v in
                                       versions.order_by("dataset__name", "number")],
                   field="dataset_version_id"),
            Filter("status", "status", JobStatus.choices),
        ],
    )  # fmt: skip
    context = {"listing": listing, "evaluations": listing.page}
    if listing.partial:
        return render(request, "runs/list.html#listing", context)
    return render(request, "runs/list.html", context)


@require_POST
@team_required()
def evaluation_start(request, version_pk: int):
    version = dataset_version_get(user=request.user, pk=version_pk, role=Role.MEMBER)
    form = EvaluationForm(request.POST, team=version.dataset.team, version=version)
    if not form.is_valid():
        problems = "; ".join(
            " ".join(errors) if name == "__all__" else f"{name}: {' '.join(errors)}"
            for name, errors in form.errors.items()
        )
        messages.error(request, problems or "Choose a model and a split.")
        return redirect("datasets:version", pk=version.pk)
    same = evaluation_same(version=version, model=form.cleaned_data["model"], config=form.config)
    if same is not None:
        # The same model, data and settings give the same figures: show them, do not queue a
        # copy (delete it first to run it again).
        messages.info(
            request,
            f"Evaluation #{same.pk} already ran with the same model, data and settings: here "
            "it is. To run it again, delete it first.",
        )
        return redirect("runs:evaluation", pk=same.pk)
    try:
        evaluation = evaluation_create(
            team=version.dataset.team,
            model=form.cleaned_data["model"],
            method=form.config.method,
            dataset_version=version,
            split=form.config.split,
            precision=form.config.precision,
            fusion=form.config.fusion_settings(),
            first_stage=form.cleaned_data.get("first_stage"),
            created_by=request.user,
        )
    except EvaluationError as exc:
        messages.error(request, str(exc))
        return redirect("datasets:version", pk=version.pk)
    return redirect("runs:evaluation", pk=evaluation.pk)


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def evaluation_detail(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk)
    context = {
        "evaluation": evaluation,
        "can_write": can_write(user=request.user, team=evaluation.team),
    }
    if not htmx_fragment(request, "evaluation-status"):
        from apps.registry.selectors import embedding_model_list

        # "Rerank these" offers the team's rerankers on any first stage.
        context["rerankers"] = embedding_model_list(team=evaluation.team, role="reranker")
    if htmx_fragment(request, "evaluation-status"):
        # The fragment of a finished job carries no hx-trigger, so polling stops by itself.
        return render(request, "runs/evaluation.html#status", context)
    return render(request, "runs/evaluation.html", context)


@require_POST
@team_required()
def evaluation_cancel(request, pk: int):
    return job_cancel_response(
        request,
        job=evaluation_get(user=request.user, pk=pk, role=Role.MEMBER),
        partial="runs/evaluation.html#status",
        context=lambda job: {"evaluation": job, "can_write": True},
        url=reverse("runs:evaluation", args=[pk]),
    )


@require_GET
@team_required()
def evaluation_run_file(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk)
    from workers.common.store import artifact_inside

    path = artifact_inside(evaluation.run_file, settings.ARTIFACTS_ROOT)
    if path is None or not path.is_file():
        raise Http404("No run file for this evaluation.")
    return FileResponse(
        open(path, "rb"),  # noqa: SIM115 (FileResponse closes it)
        as_attachment=True,
        filename=f"evaluation-{pk}.trec",
        content_type="text/plain",
    )


# --- comparison ----------------------------------------------------------------------------


def _comparison_from(request):
    """The comparison named by ?e=…&e=…&baseline=…; another team's evaluation is a 404."""
    evaluations, baseline = compare.comparison_evaluations_get(
        pks=request.GET.getlist("e"), baseline=request.GET.get("baseline"), user=request.user
    )
    return compare.comparison_build(evaluations=evaluations, baseline=baseline)


def _compare_error(request, exc: compare.ComparisonError):
    return render(request, "runs/compare.html", {"error": str(exc)}, status=400)


@require_GET
@team_required()
def comparison_detail(request):
    try:
        comparison = _comparison_from(request)
    except compare.ComparisonError as exc:
        return _compare_error(request, exc)
    return render(request, "runs/compare.html", {"comparison": comparison})


@require_GET
@team_required()
def comparison_csv(request):
    try:
        comparison = _comparison_from(request)
    except compare.ComparisonError as exc:
        return _compare_error(request, exc)
    pks = "-".join(str(e.pk) for e in comparison.evaluations)
    return _csv(exports.comparison_csv(comparison), f"comparison-{pks}.csv")


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required()
def comparison_queries(request):
    """Per-query drill-down of A (the baseline) against B; ?q= opens one query's top-10s."""
    try:
        a, b = compare.comparison_evaluations_get(
            pks=[request.GET.get("a", ""), request.GET.get("b", "")],
            baseline=request.GET.get("a"),
            user=request.user,
        )[0]
    except compare.ComparisonError as exc:
        return _compare_error(request, exc)
    metric = request.GET.get("metric") or compare.DEFAULT_METRIC
    order = "desc" if request.GET.get("order") == "desc" else "asc"
    try:
        rows = compare.query_deltas(a=a, b=b, metric=metric, order=order)
    except compare.ComparisonError as exc:
        return _compare_error(request, exc)
    context = {"a": a, "b": b, "metric": metric, "order": order, "query": None}
    if request.GET.get("q"):
        query = query_get(version=a.dataset_version, pk=request.GET["q"])
        context["query"] = query
        context["sides"] = compare.query_compare(a=a, b=b, query=query, metric=metric)
        context["row"] = next((r for r in rows if r.pk == query.pk), None)
    if htmx_fragment(request, "query-panel"):
        # A click in the list or on the chart swaps only the side-by-side panel.
        return render(request, "runs/query_compare.html#sides", context)
    base = reverse("runs:compare_queries")
    n = len(rows) or 1
    context.update(
        rows=rows,
        summary={
            "n": len(rows),
            "mean_a": sum(r.a for r in rows) / n,
            "mean_b": sum(r.b for r in rows) / n,
            "delta": compare.signed(sum(r.delta for r in rows) / n),
            "better": sum(1 for r in rows if round(r.delta, 9) > 0),
            "worse": sum(1 for r in rows if round(r.delta, 9) < 0),
            "same": sum(1 for r in rows if round(r.delta, 9) == 0),
        },
        metrics=compare.metric_names([a, b]),
        chart=scatter_chart(
            points=[
                (
                    r.a,
                    r.b,
                    f"{r.query_id}: {r.text[:60]}",
                    f"{base}?{_drill_query(a, b, metric, order)}&q={r.pk}",
                )
                for r in rows
            ],
            x_label=f"A: {a.label} (#{a.pk}) {metric}",
            y_label=f"B: {b.label} (#{b.pk}) {metric}",
        ),
        **_query_table(request, rows),
    )
    return render(request, "runs/query_compare.html", context)


QUERY_ROWS = 50


def _query_table(request, rows) -> dict:
    """The per-query table: filtered by ``find`` (id or words of the query) and ``show``
    (changed, better, worse), 50 rows a page (``page``); the chart keeps every query."""
    from django.core.paginator import Paginator

    find = request.GET.get("find", "").strip().lower()
    show = request.GET.get("show", "all")
    picked = rows
    if find:
        picked = [r for r in picked if find in r.query_id.lower() or find in r.text.lower()]
    if show == "changed":
        picked = [r for r in picked if round(r.delta, 9) != 0]
    elif show == "better":
        picked = [r for r in picked if round(r.delta, 9) > 0]
    elif show == "worse":
        picked = [r for r in picked if round(r.delta, 9) < 0]
    else:
        show = "all"
    page = Paginator(picked, QUERY_ROWS).get_page(request.GET.get("page"))
    choices = [("all", "all queries"), ("changed", "changed"), ("better", "B better"),
               ("worse", "B worse")]  # fmt: skip
    return {"table": page, "find": find, "show": show, "show_choices": choices}


def _drill_query(a, b, metric: str, order: str) -> str:
    return urlencode({"a": a.pk, "b": b.pk, "metric": metric, "order": order})


# --- leaderboard and exports ---------------------------------------------------------------


def _leaderboard_from(request, version_pk: int):
    version = dataset_version_get(user=request.user, pk=version_pk)
    return compare.leaderboard_get(
        version=version,
        split=request.GET.get("split", ""),
        model=request.GET.get("model", ""),
        method=request.GET.get("method", ""),
        sort=request.GET.get("sort", compare.DEFAULT_METRIC),
        direction=request.GET.get("dir", "desc"),
    )


@require_GET
@team_required()
def leaderboard(request, version_pk: int):
    board = _leaderboard_from(request, version_pk)
    return render(request, "runs/leaderboard.html", {"board": board})


@require_GET
@team_required()
def leaderboard_csv(request, version_pk: int):
    board = _leaderboard_from(request, version_pk)
    return _csv(exports.leaderboard_csv(board), f"leaderboard-version-{version_pk}.csv")


@require_GET
@team_required()
def evaluation_mteb(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk)
    if evaluation.status != "succeeded":
        raise Http404("This evaluation has no results yet.")
    response = JsonResponse(exports.evaluation_mteb(evaluation), json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="evaluation-{pk}-mteb.json"'
    return response


def _csv(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
@team_required()
def evaluation_rerun_view(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk, role=Role.MEMBER)
    try:
        again = evaluation_rerun(evaluation=evaluation, created_by=request.user)
    except EvaluationError as exc:
        messages.error(request, str(exc))
        return redirect("runs:evaluation", pk=pk)
    messages.info(request, f"Evaluation #{pk} runs again, with the same settings, as #{again.pk}.")
    return redirect("runs:evaluation", pk=again.pk)


@require_POST
@team_required(Role.MEMBER)
def evaluation_delete_selected(request):
    from apps.core.responses import delete_selected_response
    from apps.core.services import objects_delete_many

    pks = [int(v) for v in request.POST.getlist("e") if v.isdigit()]
    deleted, refused = objects_delete_many(
        rows=Evaluation.objects.filter(team=request.team), pks=pks, noun="",
        delete=lambda e: evaluation_delete(evaluation=e), refused=EvaluationError,
    )  # fmt: skip
    return delete_selected_response(
        request, deleted=deleted, refused=refused, noun="evaluation",
        then=reverse("runs:evaluations"),
    )  # fmt: skip


@require_POST
@team_required()
def evaluation_delete_view(request, pk: int):
    evaluation = evaluation_get(user=request.user, pk=pk, role=Role.MEMBER)
    return delete_response(
        request, delete=lambda: evaluation_delete(evaluation=evaluation), refused=EvaluationError,
        done=f"Evaluation #{pk} and its run file are deleted.",
        back=reverse("runs:evaluation", args=[pk]), then=reverse("runs:evaluations"),
    )  # fmt: skip
