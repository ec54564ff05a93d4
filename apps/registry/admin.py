from django.contrib import admin

from apps.registry.models import EmbeddingModel


@admin.register(EmbeddingModel)
class EmbeddingModelAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        # Moving an object to another team would leave the first team's runs pointing at it.
        fields = list(super().get_readonly_fields(request, obj))
        return fields + ["team"] if obj is not None else fields

    list_display = ["name", "team", "kind", "dimension", "max_seq_length", "pooling", "created_at"]
    list_filter = ["team", "kind", "source"]
    search_fields = ["name", "source_ref"]
    readonly_fields = ["path", "layout", "architecture", "dimension", "parameters", "created_at"]
