from django.urls import path

from apps.datasets import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_index, name="list"),
    path("upload/", views.dataset_upload, name="upload"),
    path("<int:pk>/delete/", views.dataset_delete_view, name="delete"),
    path("ingests/<int:pk>/", views.ingest_detail, name="ingest"),
    path("ingests/<int:pk>/start/", views.ingest_start, name="ingest_start"),
    path("versions/<int:pk>/pairs/", views.version_pairs, name="version_pairs"),
    path("versions/<int:pk>/queries/<int:query_pk>/", views.query_detail, name="query"),
    path("versions/<int:pk>/export/", views.version_export, name="version_export"),
    path("versions/<int:pk>/delete/", views.version_delete_view, name="version_delete"),
    path("versions/<int:pk>/curate/<str:kind>/", views.version_curate, name="version_curate"),
    path("curation/<int:pk>/", views.curation_detail, name="curation"),
    path(
        "curation/<int:pk>/accept/",
        views.curation_review,
        {"decision": "accept"},
        name="curation_accept",
    ),
    path(
        "curation/<int:pk>/discard/",
        views.curation_review,
        {"decision": "discard"},
        name="curation_discard",
    ),
    path("curation/<int:pk>/cancel/", views.curation_cancel, name="curation_cancel"),
    path("<int:pk>/", views.dataset_detail, name="detail"),
    path("versions/<int:pk>/", views.version_detail, name="version"),
]
