"""The section of the site a page belongs to: the nav marks it and every page's breadcrumb
starts with it (pages add their own trail in ``{% block breadcrumbs %}``)."""

from __future__ import annotations

from django.urls import reverse

# namespace → (label, list url); the runs and indexes namespaces hold two sections each.
_SECTIONS = {
    "datasets": ("Datasets", "datasets:list"),
    "registry": ("Models", "registry:list"),
    "runs": ("Evaluations", "runs:evaluations"),
    "indexes": ("Indexes", "indexes:list"),
    "accounts": ("Team", "accounts:team"),
}


def section(request) -> dict:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return {"section": None}
    namespace, name = match.namespace, match.url_name or ""
    if namespace == "runs" and name.startswith("training"):
        label, url = "Training", "runs:training_runs"
    elif namespace == "indexes" and name in {"console", "search_status"}:
        label, url = "Search", "indexes:console"
    elif namespace == "core" and name == "jobs":
        label, url = "Jobs", "core:jobs"
    elif namespace == "accounts" and name != "team":
        return {"section": None}  # login and password pages stand alone
    elif namespace in _SECTIONS:
        label, url = _SECTIONS[namespace]
    else:
        return {"section": None}
    return {"section": {"label": label, "url": reverse(url), "name": url}}
