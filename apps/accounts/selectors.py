"""Team-scoped reads. Every object fetch goes through ``team_scoped_get`` so that an object of
a team the user is not in is a 404, indistinguishable from one that does not exist."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import F, Model, QuerySet
from django.http import Http404
from django.utils import timezone

from apps.accounts.models import ApiToken, Membership, Role, Team

M = TypeVar("M", bound=Model)


def team_list_for_user(*, user) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user).order_by("name")


def membership_get(*, user, team: Team) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, team=team).first()


def team_scoped_get(*, queryset: QuerySet[M], user, pk, role: str = Role.VIEWER) -> M:
    """Fetch an object of one of the user's teams, or raise Http404.

    ``role`` is the least role needed, checked in the object's own team (not the session's):
    a member with a lower role gets 403; anyone outside the team gets 404, as for nothing.
    """
    if not user.is_authenticated:
        raise Http404
    try:
        obj = queryset.select_related("team").get(pk=pk, team__memberships__user=user)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404 from None
    membership = membership_get(user=user, team=obj.team)
    if membership is None:
        raise Http404
    if not membership.allows(role):
        raise PermissionDenied(f"This needs the {role} role in {obj.team}.")
    return obj


def can_write(*, user, team: Team) -> bool:
    membership = membership_get(user=user, team=team)
    return membership is not None and membership.allows(Role.MEMBER)


LAST_USED_RESOLUTION = timedelta(seconds=60)


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    if not raw:
        return None
    digest = hashlib.sha256(raw.encode()).hexdigest()
    token = (
        ApiToken.objects.select_related("team", "user")
        .filter(
            key_hash=digest,
            revoked_at__isnull=True,
            user__is_active=True,
            # A member who leaves the team takes the token's access along.
            team__memberships__user=F("user"),
        )
        .first()
    )
    now = timezone.now()
    # At most one write a minute per token: a search API must not write on every query.
    if token is not None and (
        token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION
    ):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def api_token_list(*, team: Team) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(team=team).select_related("user")
