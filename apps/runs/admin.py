from django.contrib import admin

from apps.runs.models import Evaluation


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["pk", "team", "model", "dataset_version", "split", "status", "created_at"]
    list_filter = ["team", "status"]
    search_fields = ["model__name", "dataset_version__dataset__name"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request):
        return False
