"""Personas (owner, member, viewer, outsider) tried on every object URL."""

from __future__ import annotations

import hashlib

import pytest
from django.urls import reverse

from apps.accounts.models import ApiToken
from apps.accounts.selectors import api_token_authenticate
from apps.accounts.services import api_token_create, api_token_revoke
from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(team, tiny_registered_model, tiny_version):
    evaluation = evaluation_create(
        team=team,
        model=tiny_registered_model,
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )
    return {"model": tiny_registered_model, "version": tiny_version, "evaluation": evaluation}


def read_urls(o):
    return [
        reverse("registry:detail", args=[o["model"].pk]),
        reverse("datasets:detail", args=[o["version"].dataset_id]),
        reverse("datasets:version", args=[o["version"].pk]),
        reverse("runs:evaluation", args=[o["evaluation"].pk]),
    ]


def write_urls(o):
    return [
        reverse("runs:evaluation_start", args=[o["version"].pk]),
        reverse("runs:evaluation_cancel", args=[o["evaluation"].pk]),
    ]


def test_outsider_gets_404_on_every_object_url(client, outsider, objects):
    client.force_login(outsider)
    for url in read_urls(objects):
        assert client.get(url).status_code == 404, url
    for url in write_urls(objects):
        assert client.post(url, {"model": objects["model"].pk, "split": "test"}).status_code == 404
    assert Evaluation.objects.count() == 1


def test_lists_show_only_the_current_team(client, outsider, objects):
    client.force_login(outsider)
    for name in ("core:home", "registry:list", "datasets:list", "runs:evaluations"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        assert "tiny" not in response.content.decode(), name


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
def test_team_members_can_read(client, request, persona, objects):
    client.force_login(request.getfixturevalue(persona))
    for url in read_urls(objects):
        assert client.get(url).status_code == 200, url


def test_viewer_cannot_start_or_cancel(client, viewer, objects):
    client.force_login(viewer)
    for url in write_urls(objects):
        assert client.post(url, {"model": objects["model"].pk, "split": "test"}).status_code == 403
    assert Evaluation.objects.count() == 1


def test_member_starts_an_evaluation_from_the_page(client, member, objects):
    client.force_login(member)
    url = reverse("runs:evaluation_start", args=[objects["version"].pk])
    response = client.post(url, {"model": objects["model"].pk, "split": "test"})
    latest = Evaluation.objects.order_by("-pk").first()
    assert response.status_code == 302 and response["Location"] == reverse(
        "runs:evaluation", args=[latest.pk]
    )
    assert latest.status == "pending" and latest.created_by == member


def test_anonymous_is_sent_to_login(client, objects):
    for url in read_urls(objects):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_api_tokens_are_stored_hashed(team, owner):
    token, raw = api_token_create(team=team, user=owner, name="ci")
    assert raw.startswith("ehk_") and raw not in token.key_hash
    assert ApiToken.objects.get().key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert api_token_authenticate(raw=raw).team == team
    assert api_token_authenticate(raw=raw + "x") is None
    api_token_revoke(token=token)
    assert api_token_authenticate(raw=raw) is None


def test_token_page_shows_the_secret_once(client, owner, team):
    client.force_login(owner)
    client.post(reverse("accounts:token_create"), {"name": "laptop"})
    first = client.get(reverse("accounts:team")).content.decode()
    assert "ehk_" in first and "laptop" in first
    second = client.get(reverse("accounts:team")).content.decode()
    assert 'id="new-token"' not in second


def test_team_admin_adds_a_member_and_member_cannot(client, owner, member, team):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("newbie")
    client.force_login(member)
    assert (
        client.post(
            reverse("accounts:member_add"), {"username": "newbie", "role": "viewer"}
        ).status_code
        == 403
    )
    client.force_login(owner)
    client.post(reverse("accounts:member_add"), {"username": "newbie", "role": "viewer"})
    assert team.memberships.filter(user__username="newbie", role="viewer").exists()


def test_role_is_checked_in_the_objects_team_not_the_sessions(client, team, other_team, objects):
    """Viewer in the selected team, member in the object's team: may evaluate there."""
    from tests.factories import MembershipFactory, UserFactory

    user = UserFactory(username="two-hats")
    MembershipFactory(team=other_team, user=user, role="viewer")
    MembershipFactory(team=team, user=user, role="member")
    client.force_login(user)
    session = client.session
    session["team_id"] = other_team.pk
    session.save()
    url = reverse("runs:evaluation_start", args=[objects["version"].pk])
    response = client.post(url, {"model": objects["model"].pk, "split": "test"})
    assert response.status_code == 302 and Evaluation.objects.count() == 2
    page = client.get(reverse("datasets:version", args=[objects["version"].pk])).content.decode()
    assert 'id="evaluate-form"' in page


def test_token_stops_working_when_its_owner_leaves_the_team(team, member):
    from apps.accounts.models import Membership

    _, raw = api_token_create(team=team, user=member, name="laptop")
    assert api_token_authenticate(raw=raw) is not None
    Membership.objects.filter(team=team, user=member).delete()
    assert api_token_authenticate(raw=raw) is None


def test_team_keeps_an_admin(team, owner):
    from apps.accounts.services import membership_set

    with pytest.raises(ValueError, match="at least one admin"):
        membership_set(team=team, user=owner, role="member")


def test_team_switch_ignores_foreign_redirects(client, owner, team):
    response = client.post(
        reverse("accounts:team_switch"), {"team": team.pk, "next": "https://evil.example/"}
    )
    assert response.status_code == 302 and "evil" not in response["Location"]


def test_run_file_is_404_for_outsiders_and_when_missing(client, owner, outsider, objects):
    url = reverse("runs:evaluation_run_file", args=[objects["evaluation"].pk])
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.force_login(owner)
    assert client.get(url).status_code == 404  # no run file yet
