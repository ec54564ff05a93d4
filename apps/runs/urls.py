from django.urls import path

from apps.runs import views

app_name = "runs"
urlpatterns = [
    path("evaluations/", views.evaluation_index, name="evaluations"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation"),
    path("evaluations/<int:pk>/cancel/", views.evaluation_cancel, name="evaluation_cancel"),
    path("evaluations/<int:pk>/run.trec", views.evaluation_run_file, name="evaluation_run_file"),
    path("evaluate/<int:version_pk>/", views.evaluation_start, name="evaluation_start"),
]
