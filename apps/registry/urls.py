from django.urls import path

from apps.registry import merge_views, views

app_name = "registry"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("register/", views.model_register, name="register"),
    path("hub/", views.hub_import_start, name="hub_import_start"),
    path("hub/<int:pk>/", views.hub_import_detail, name="hub_import"),
    path("hub/<int:pk>/cancel/", views.hub_import_cancel, name="hub_import_cancel"),
    path("<int:pk>/publish/", views.hub_publish_start, name="hub_publish_start"),
    path("publishes/<int:pk>/", views.hub_publish_detail, name="hub_publish"),
    path("publishes/<int:pk>/cancel/", views.hub_publish_cancel, name="hub_publish_cancel"),
    path("<int:pk>/", views.model_detail, name="detail"),
    path("<int:pk>/distill/", views.model_distill, name="distill"),
    path("<int:pk>/delete/", views.model_delete, name="delete"),
    path("<int:pk>/rename/", views.model_rename, name="rename"),
    path("distillations/<int:pk>/", views.distillation_detail, name="distillation"),
    path("distillations/<int:pk>/cancel/", views.distillation_cancel, name="distillation_cancel"),
    path("<int:pk>/optimize/", views.model_optimize, name="optimize"),
    path("optimizations/<int:pk>/", views.optimization_detail, name="optimization"),
    path("optimizations/<int:pk>/cancel/", views.optimization_cancel, name="optimization_cancel"),
    path("merge/", merge_views.merge_new, name="merge_new"),
    path("merges/<int:pk>/", merge_views.merge_detail, name="merge"),
    path("merges/<int:pk>/cancel/", merge_views.merge_cancel, name="merge_cancel"),
]
