from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render


def team_required(role: str = "viewer"):
    """The view needs a current team, with at least ``role`` in it for writes."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.team is None:
                return render(request, "accounts/no_team.html", status=403)
            if not request.membership.allows(role):
                # Django's 403 handler renders templates/403.html with this as its reason.
                raise PermissionDenied(f"This needs the {role} role in {request.team}")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
