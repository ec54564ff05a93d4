from django.contrib import admin

from apps.registry.models import EmbeddingModel


@admin.register(EmbeddingModel)
class EmbeddingModelAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "kind", "dimension", "max_seq_length", "pooling", "created_at"]
    list_filter = ["team", "kind", "source"]
    search_fields = ["name", "source_ref"]
    readonly_fields = ["path", "layout", "architecture", "dimension", "parameters", "created_at"]
