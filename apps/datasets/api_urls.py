from django.urls import path

from apps.datasets import api

urlpatterns = [
    path("datasets", api.datasets, name="api-datasets"),
    path("datasets/uploads", api.upload, name="api-dataset-upload"),
    path("datasets/<int:pk>", api.dataset_detail, name="api-dataset"),
    path("dataset-versions/<int:pk>", api.version_detail, name="api-dataset-version"),
    path("ingests/<int:pk>", api.ingest_detail, name="api-ingest"),
    path("ingests/<int:pk>/start", api.ingest_start, name="api-ingest-start"),
]
