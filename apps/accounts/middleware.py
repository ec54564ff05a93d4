from __future__ import annotations

from http import HTTPStatus

from django.conf import settings

from apps.accounts.selectors import membership_get, team_list_for_user

SESSION_KEY = "team_id"


class CurrentTeamMiddleware:
    """Sets ``request.team`` and ``request.membership``: the team whose lists the user sees and
    in which new objects are created. Objects of the user's other teams stay reachable by URL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.team = None
        request.membership = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            teams = team_list_for_user(user=user)
            team = teams.filter(pk=request.session.get(SESSION_KEY)).first() or teams.first()
            if team is not None:
                request.team = team
                request.membership = membership_get(user=user, team=team)
        return self.get_response(request)


# Where embedhub/urls.py mounts the REST API.
API_PREFIX = "/api/"


class ApiErrorMiddleware:
    """Under ``/api/`` every error is JSON in the API's one shape, never an HTML page.

    What the API's exception handlers (``embedhub.api``) cannot see ends here: an unknown URL
    (Django's 404 page), a wrong method (ninja's bare 405), a URI over ``API_MAX_URI_LENGTH``
    (414, answered before any work), an exception raised by the token check or the rate
    limit (which run outside ninja's handlers), and any other non-JSON error response, such
    as Django's 400 or 500 pages. Pages elsewhere are untouched.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        from apps.accounts.api import error

        limit = settings.API_MAX_URI_LENGTH
        length = len(request.path) + len(request.META.get("QUERY_STRING", "")) + 1
        if limit and length > limit:
            return error(f"URI too long: {length} characters, the limit is {limit}", 414)
        return _as_json(self.get_response(request))

    def process_exception(self, request, exception):
        if not request.path_info.startswith(API_PREFIX):
            return None
        from apps.accounts.api import exception_response

        return exception_response(request, exception)


# Django's own reasons, lower case like the API's other errors.
_REASONS = {404: "not found", 500: "internal error"}


def _as_json(response):
    if response.status_code < 400 or response.get("Content-Type", "").startswith(
        "application/json"
    ):
        return response
    from apps.accounts.api import error

    status = response.status_code
    try:
        reason = _REASONS.get(status) or HTTPStatus(status).phrase.lower()
    except ValueError:
        reason = "error"
    if status == 405 and response.has_header("Allow"):
        reason = f"method not allowed; this URL allows {response['Allow']}"
    elif status == 414:
        reason = "URI too long"
    out = error(reason, status)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if response.has_header(header):
            out[header] = response[header]
    return out
