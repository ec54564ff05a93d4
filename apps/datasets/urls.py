from django.urls import path

from apps.datasets import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_index, name="list"),
    path("<int:pk>/", views.dataset_detail, name="detail"),
    path("versions/<int:pk>/", views.version_detail, name="version"),
]
