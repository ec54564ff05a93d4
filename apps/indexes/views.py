from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from apps.indexes.selectors import search_health


@require_GET
@vary_on_headers("HX-Request")
@login_required
def search_status(request):
    health = search_health()
    template = "indexes/search.html#badge" if request.htmx else "indexes/search.html"
    return render(request, template, {"health": health})
