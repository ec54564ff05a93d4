"""Token authentication for the JSON API (the full REST API arrives with the index issue)."""

from __future__ import annotations

from functools import wraps

from django.http import JsonResponse

from apps.accounts.selectors import api_token_authenticate


def token_required(view):
    """``Authorization: Bearer <token>``; sets ``request.api_token`` and ``request.team``."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, raw = header.partition(" ")
        token = api_token_authenticate(raw=raw.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            response = JsonResponse({"error": "a valid API token is required"}, status=401)
            response["WWW-Authenticate"] = "Bearer"
            return response
        request.api_token, request.team = token, token.team
        return view(request, *args, **kwargs)

    return wrapped
