from django.urls import path

from apps.registry import views

app_name = "registry"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("register/", views.model_register, name="register"),
    path("<int:pk>/", views.model_detail, name="detail"),
]
