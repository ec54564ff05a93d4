from __future__ import annotations

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
