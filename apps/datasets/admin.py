from django.contrib import admin

from apps.datasets.models import (
    CurationJob,
    Dataset,
    DatasetVersion,
    Document,
    IngestJob,
    Query,
    TrainingRow,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Versions and their rows are immutable: the admin shows them and never edits them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        # Moving an object to another team would leave the first team's runs pointing at it.
        fields = list(super().get_readonly_fields(request, obj))
        return fields + ["team"] if obj is not None else fields

    list_display = ["name", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "description"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ["dataset", "number", "document_count", "query_count", "created_at"]
    list_filter = ["dataset__team"]
    search_fields = ["dataset__name", "content_hash"]


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ["doc_id", "title", "version"]
    search_fields = ["doc_id", "title"]
    list_select_related = ["version__dataset"]
    show_full_result_count = False


@admin.register(Query)
class QueryAdmin(ReadOnlyAdmin):
    list_display = ["query_id", "text", "version"]
    search_fields = ["query_id", "text"]
    list_select_related = ["version__dataset"]


@admin.register(IngestJob)
class IngestJobAdmin(ReadOnlyAdmin):
    list_display = ["pk", "team", "dataset_name", "status", "created_at"]
    list_filter = ["team", "status"]


@admin.register(TrainingRow)
class TrainingRowAdmin(ReadOnlyAdmin):
    list_display = ["row", "anchor", "version"]
    search_fields = ["anchor", "positive"]
    list_select_related = ["version__dataset"]
    show_full_result_count = False


@admin.register(CurationJob)
class CurationJobAdmin(ReadOnlyAdmin):
    list_display = ["pk", "kind", "team", "source", "status", "review", "created_at"]
    list_filter = ["team", "kind", "status"]
    list_select_related = ["source__dataset", "team"]
