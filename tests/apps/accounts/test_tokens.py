"""Revoking API tokens from the team page: everyone their own (a viewer included), a team
admin anyone's in the team, nobody else another's."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.accounts.models import ApiToken
from apps.accounts.services import api_token_create

pytestmark = pytest.mark.django_db


def api_status(client, raw: str) -> int:
    return client.get("/api/v1/datasets", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code


def revoke(client, token: ApiToken):
    return client.post(reverse("accounts:token_revoke", args=[token.pk]))


def test_a_viewer_revokes_their_own_token_and_the_api_refuses_it(client, team, viewer, settings):
    # conftest sets API_TOKEN_CACHE_S = 0; with the default (5 s) a web process that checked
    # the token in the last 5 s still accepts it that long (see the API tests).
    assert settings.API_TOKEN_CACHE_S == 0
    token, raw = api_token_create(team=team, user=viewer, name="laptop")
    assert api_status(client, raw) == 200
    client.force_login(viewer)
    page = client.get(reverse("accounts:team")).content.decode()
    assert reverse("accounts:token_revoke", args=[token.pk]) in page
    response = revoke(client, token)
    assert response.status_code == 302 and response["Location"] == reverse("accounts:team")
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api_status(client, raw) == 401
    assert "revoked" in client.get(reverse("accounts:team")).content.decode()


@pytest.mark.parametrize("persona", ["viewer", "member"])
def test_nobody_but_an_admin_revokes_another_s_token(client, request, team, owner, persona):
    user = request.getfixturevalue(persona)
    theirs, raw = api_token_create(team=team, user=owner, name="ci")
    client.force_login(user)
    page = client.get(reverse("accounts:team")).content.decode()
    assert "ci" in page and reverse("accounts:token_revoke", args=[theirs.pk]) not in page
    assert revoke(client, theirs).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None and api_status(client, raw) == 200


def test_a_team_admin_revokes_a_member_s_token(client, team, owner, viewer):
    token, raw = api_token_create(team=team, user=viewer, name="laptop")
    client.force_login(owner)
    assert (
        reverse("accounts:token_revoke", args=[token.pk])
        in client.get(reverse("accounts:team")).content.decode()
    )
    assert revoke(client, token).status_code == 302
    assert api_status(client, raw) == 401


def test_another_team_s_token_is_a_404_even_for_an_admin(client, team, owner, other_team, outsider):
    token, raw = api_token_create(team=other_team, user=outsider, name="theirs")
    client.force_login(owner)
    assert revoke(client, token).status_code == 404
    assert api_status(client, raw) == 200
