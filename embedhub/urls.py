from django.contrib import admin
from django.urls import include, path

from embedhub.api import api

urlpatterns = [
    path("", include("apps.core.urls")),
    path("accounts/", include("apps.accounts.urls")),
    path("models/", include("apps.registry.urls")),
    path("datasets/", include("apps.datasets.urls")),
    path("runs/", include("apps.runs.urls")),
    path("indexes/", include("apps.indexes.urls")),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
