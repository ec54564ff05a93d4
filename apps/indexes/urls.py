from django.urls import path

from apps.indexes import calibration_views, views

app_name = "indexes"
urlpatterns = [
    path("", views.index_list, name="list"),
    path("new/", views.index_new, name="new"),
    path("<int:pk>/", views.index_detail, name="detail"),
    path("<int:pk>/cancel/", views.index_cancel, name="cancel"),
    path("<int:pk>/deploy/", views.index_deploy, name="deploy"),
    path("<int:pk>/delete/", views.index_delete, name="delete"),
    path("deployments/<slug:name>/", views.deployment_detail, name="deployment"),
    path("deployments/<slug:name>/swap/", views.deployment_swap, name="swap"),
    path(
        "deployments/<slug:name>/settings/", views.deployment_settings, name="deployment_settings"
    ),
    path(
        "deployments/<slug:name>/undeploy/",
        views.deployment_undeploy_view,
        name="undeploy",
    ),
    path(
        "deployments/<slug:name>/calibration/",
        calibration_views.calibration_new,
        name="calibration_new",
    ),
    path(
        "deployments/<slug:name>/calibration/<int:pk>/",
        calibration_views.calibration_detail,
        name="calibration",
    ),
    path(
        "deployments/<slug:name>/calibration/<int:pk>/cancel/",
        calibration_views.calibration_cancel,
        name="calibration_cancel",
    ),
    path("console/", views.console, name="console"),
    path("search-service/", views.search_status, name="search_status"),
]
