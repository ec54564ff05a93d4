from django.contrib import admin

from apps.indexes.models import Calibration, Deployment, DeploymentEvent, IndexBuild


class ReadOnly(admin.ModelAdmin):
    """Index builds, deployments and their log change only through the services (which
    rewrite the search process's manifest and keep the log); the admin looks."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(IndexBuild)
class IndexBuildAdmin(ReadOnly):
    list_display = ["pk", "team", "index_type", "model", "dataset_version", "status", "created_at"]
    list_filter = ["team", "status", "index_type"]
    search_fields = ["model__name", "dataset_version__dataset__name"]


@admin.register(Deployment)
class DeploymentAdmin(ReadOnly):
    list_display = ["name", "team", "index", "deployed_by", "updated_at"]
    list_filter = ["team"]
    search_fields = ["name"]

    def has_delete_permission(self, request, obj=None):
        return False  # undeploy from the page: it tells the search process and logs it


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnly):
    list_display = ["at", "team", "name", "action", "from_number", "to_number", "user"]
    list_filter = ["team", "action"]
    search_fields = ["name"]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Calibration)
class CalibrationAdmin(ReadOnly):
    list_display = ["pk", "team", "deployment", "index", "method", "status", "threshold",
                    "created_at"]  # fmt: skip
    list_filter = ["team", "status", "method"]
    search_fields = ["deployment__name"]
