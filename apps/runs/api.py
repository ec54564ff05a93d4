from __future__ import annotations

from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET

from apps.accounts.api import token_required
from apps.runs import compare
from apps.runs.models import Evaluation


def evaluation_payload(evaluation: Evaluation) -> dict:
    return {
        "id": evaluation.pk,
        "status": evaluation.status,
        "stage": evaluation.stage,
        "progress": {"done": evaluation.progress_done, "total": evaluation.progress_total},
        "method": evaluation.method,
        "model": {"id": evaluation.model_id, "name": evaluation.model.name}
        if evaluation.model_id
        else None,
        "dataset_version": evaluation.dataset_version_id,
        "split": evaluation.split,
        "metrics": evaluation.metrics,
        "error": evaluation.human_error or None,
        "created_at": evaluation.created_at.isoformat(),
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }


@require_GET
@token_required
def evaluation_detail(request, pk: int):
    # A token sees its own team only; another team's evaluation is a 404 like a missing one.
    evaluation = Evaluation.objects.select_related("model").filter(team=request.team, pk=pk).first()
    if evaluation is None:
        raise Http404
    return JsonResponse(evaluation_payload(evaluation))


@require_GET
@token_required
def comparison_detail(request):
    """GET /api/v1/compare?e=1&e=2&baseline=1: metrics, deltas, p-values and intervals.

    Any evaluation of another team in the request is a 404, as on the pages; a comparison that
    cannot be made (different dataset versions or splits, unfinished runs) is a 400.
    """
    try:
        evaluations, baseline = compare.comparison_evaluations_get(
            pks=request.GET.getlist("e"), baseline=request.GET.get("baseline"), team=request.team
        )
        comparison = compare.comparison_build(evaluations=evaluations, baseline=baseline)
    except compare.ComparisonError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(compare.comparison_payload(comparison))
