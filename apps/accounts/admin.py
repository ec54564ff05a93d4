from django.contrib import admin

from apps.accounts.models import ApiToken, Membership, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    # The Hub token is ciphertext, set only from the team page (typed in here it would be
    # stored unencrypted and unreadable).
    exclude = ["hub_token"]
    readonly_fields = ["hub_token_set_at", "hub_token_set_by"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "team", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["team"]
    search_fields = ["name", "prefix"]
    # The hash is useless to a person and the secret is not stored.
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]
