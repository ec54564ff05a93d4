"""Token authentication for the JSON API (the full REST API arrives with the index issue)."""

from __future__ import annotations

from functools import wraps

from django.http import JsonResponse

from apps.accounts.selectors import api_token_authenticate, membership_get


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


def error(message: str, status: int = 400, problems: list[str] | None = None) -> JsonResponse:
    """The API's one error shape: ``{"error": ..., "problems": ["FILE:LINE: reason", ...]}``."""
    return JsonResponse({"error": message, "problems": problems or []}, status=status)


def not_found() -> JsonResponse:
    # Another team's object answers exactly like a missing one.
    return error("not found", status=404)


def forbidden_below(request, role: str) -> JsonResponse | None:
    """403 unless the token's user holds ``role`` or above in the token's team."""
    membership = membership_get(user=request.api_token.user, team=request.team)
    if membership is None or not membership.allows(role):
        return error(f"this needs the {role} role in {request.team}", status=403)
    return None


class BadRequest(Exception):
    """Raised by the body helpers below; ``response`` is the JSON error to return."""

    def __init__(self, response: JsonResponse) -> None:
        super().__init__(response.content)
        self.response = response


def json_object(request) -> dict:
    """The request body as a JSON object, or BadRequest naming the line and the reason."""
    import json

    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError as exc:
        raise BadRequest(error(f"request body: line {exc.lineno}: {exc.msg}")) from None
    if not isinstance(body, dict):
        raise BadRequest(error("request body must be a JSON object"))
    return body


def team_object(queryset, body: dict, key: str, *, what: str):
    """``queryset``'s row whose pk is ``body[key]`` (the caller scopes it to the team), else a
    404 BadRequest: another team's object reads exactly like a missing one."""
    value = body.get(key)
    found = queryset.filter(pk=int(value)).first() if str(value or "").isdigit() else None
    if found is None:
        raise BadRequest(error(f"{key}: no such {what} in your team", status=404))
    return found
