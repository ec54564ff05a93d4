from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.models import ApiToken, Membership, Role, Team

TOKEN_PREFIX = "ehk_"


@transaction.atomic
def team_create(*, name: str, slug: str = "", owner=None) -> Team:
    team = Team(name=name, slug=slug or slugify(name))
    team.full_clean()
    team.save()
    if owner is not None:
        membership_set(team=team, user=owner, role=Role.ADMIN)
    return team


@transaction.atomic
def membership_set(*, team: Team, user, role: str) -> Membership:
    role = Role(role)
    if role != Role.ADMIN:
        # Lock the admin rows so two demotions at once cannot leave the team without one.
        admins = list(Membership.objects.select_for_update().filter(team=team, role=Role.ADMIN))
        if [m.user_id for m in admins] == [user.pk]:
            raise ValueError("A team keeps at least one admin.")
    membership, _ = Membership.objects.update_or_create(
        team=team, user=user, defaults={"role": role}
    )
    return membership


@transaction.atomic
def membership_add_by_username(*, team: Team, username: str, role: str) -> Membership:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValueError(f"No user named {username!r}.")
    return membership_set(team=team, user=user, role=role)


def api_token_create(*, team: Team, user, name: str) -> tuple[ApiToken, str]:
    """Create a token; returns it with the secret, which is never stored and never shown again."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        team=team,
        user=user,
        name=name,
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        key_hash=hashlib.sha256(raw.encode()).hexdigest(),
    )
    token.full_clean()
    token.save()
    return token, raw


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def team_hub_token_set(*, team: Team, token: str, user) -> Team:
    """Keep the team's Hugging Face Hub token, encrypted; an empty ``token`` removes it."""
    from apps.core.secrets import secret_encrypt

    token = (token or "").strip()
    if token and (len(token) > 500 or any(c.isspace() for c in token)):
        raise ValueError("hub_token: a Hub token is one word of at most 500 characters.")
    team.hub_token = secret_encrypt(token) if token else ""
    team.hub_token_set_at = timezone.now() if token else None
    team.hub_token_set_by = user if token else None
    team.save(update_fields=["hub_token", "hub_token_set_at", "hub_token_set_by"])
    return team


def team_hub_token(*, team: Team) -> str:
    """The team's Hub token in clear, for a worker's request to the Hub; empty if none. Raises
    ValueError (a message for the job's page) when it can no longer be read."""
    from apps.core.secrets import SecretUnreadable, secret_decrypt

    if not team.hub_token:
        return ""
    try:
        return secret_decrypt(team.hub_token)
    except SecretUnreadable as exc:
        raise ValueError(
            f"The team's Hub token can no longer be read ({exc}): a team admin sets it again."
        ) from exc
