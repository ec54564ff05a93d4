from django.urls import path

from apps.indexes import calibration_views, upgrade_views, views

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
    path("deployments/<slug:name>/upgrade/", upgrade_views.upgrade_start, name="upgrade_start"),
    path("upgrades/<int:pk>/", upgrade_views.upgrade_detail, name="upgrade"),
    path("upgrades/<int:pk>/cancel/", upgrade_views.upgrade_cancel, name="upgrade_cancel"),
    path("upgrades/<int:pk>/adapter/", upgrade_views.upgrade_adapter, name="upgrade_adapter"),
    path("upgrades/<int:pk>/reembed/", upgrade_views.upgrade_reembed, name="upgrade_reembed"),
    path("upgrades/<int:pk>/cutover/", upgrade_views.upgrade_cutover, name="upgrade_cutover"),
    path("upgrades/<int:pk>/rollback/", upgrade_views.upgrade_rollback, name="upgrade_rollback"),
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
    path("calibrations/<int:pk>/", calibration_views.calibration_by_id, name="calibration_by_id"),
    path(
        "deployments/<slug:name>/calibration/<int:pk>/cancel/",
        calibration_views.calibration_cancel,
        name="calibration_cancel",
    ),
    path("console/", views.console, name="console"),
    path("search-service/", views.search_status, name="search_status"),
]
