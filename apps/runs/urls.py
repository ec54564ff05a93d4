from django.urls import path

from apps.runs import training_views, views

app_name = "runs"
urlpatterns = [
    path("evaluations/", views.evaluation_index, name="evaluations"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation"),
    path("evaluations/<int:pk>/cancel/", views.evaluation_cancel, name="evaluation_cancel"),
    path("evaluations/<int:pk>/delete/", views.evaluation_delete_view, name="evaluation_delete"),
    path("evaluations/<int:pk>/rerun/", views.evaluation_rerun_view, name="evaluation_rerun"),
    path("evaluations/delete/", views.evaluation_delete_selected, name="evaluations_delete"),
    path("evaluations/<int:pk>/run.trec", views.evaluation_run_file, name="evaluation_run_file"),
    path("evaluations/<int:pk>/mteb.json", views.evaluation_mteb, name="evaluation_mteb"),
    path("evaluate/<int:version_pk>/", views.evaluation_start, name="evaluation_start"),
    path("compare/", views.comparison_detail, name="compare"),
    path("compare/export.csv", views.comparison_csv, name="compare_csv"),
    path("compare/queries/", views.comparison_queries, name="compare_queries"),
    path("leaderboard/<int:version_pk>/", views.leaderboard, name="leaderboard"),
    path("leaderboard/<int:version_pk>/export.csv", views.leaderboard_csv, name="leaderboard_csv"),
    path("training/", training_views.training_index, name="training_runs"),
    path("training/new/", training_views.training_new, name="training_new"),
    path("training/<int:pk>/", training_views.training_detail, name="training"),
    path("training/<int:pk>/cancel/", training_views.training_cancel, name="training_cancel"),
    path("training/<int:pk>/resume/", training_views.training_resume, name="training_resume"),
    path("training/<int:pk>/delete/", training_views.training_delete, name="training_delete"),
    path("training/delete/", training_views.training_delete_selected, name="trainings_delete"),
    path("training/<int:pk>/model.zip", training_views.training_model_zip, name="training_zip"),
]
