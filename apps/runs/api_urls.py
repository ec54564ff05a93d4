from django.urls import path

from apps.runs import api

urlpatterns = [
    path("evaluations", api.evaluations, name="api-evaluations"),
    path("evaluations/<int:pk>", api.evaluation_detail, name="api-evaluation"),
    path("compare", api.comparison_detail, name="api-compare"),
    path("training-runs", api.training_runs, name="api-training-runs"),
    path("training-runs/<int:pk>", api.training_run_detail, name="api-training-run"),
    path("training-runs/<int:pk>/cancel", api.training_run_cancel, name="api-training-cancel"),
]
