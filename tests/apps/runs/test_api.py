import pytest

from apps.accounts.services import api_token_create, api_token_revoke

pytestmark = pytest.mark.django_db


def test_token_reads_its_team_evaluation_and_nothing_else(
    client, team, owner, outsider, other_team, evaluation
):
    url = f"/api/v1/evaluations/{evaluation.pk}"
    assert client.get(url).status_code == 401
    assert client.get(url, HTTP_AUTHORIZATION="Bearer ehk_wrong").status_code == 401

    token, raw = api_token_create(team=team, user=owner, name="ci")
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["split"]) == (evaluation.pk, "pending", "test")

    _, foreign = api_token_create(team=other_team, user=outsider, name="theirs")
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {foreign}").status_code == 404

    api_token_revoke(token=token)
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
