from django.urls import path

from apps.runs import api

urlpatterns = [
    path("evaluations", api.evaluations, name="api-evaluations"),
    path("evaluations/<int:pk>", api.evaluation_detail, name="api-evaluation"),
    path("compare", api.comparison_detail, name="api-compare"),
]
