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


def test_start_and_list_evaluations_over_the_api(
    team, member, viewer, outsider, other_team, tiny_registered_model, tiny_version,
    django_capture_on_commit_callbacks, monkeypatch,
):  # fmt: skip
    from django.test import Client

    from apps.runs.models import Evaluation

    sent = []
    monkeypatch.setattr("workers.tasks.evaluation.evaluate.apply_async",
                        lambda *a, **k: sent.append(k))  # fmt: skip
    client = Client(enforce_csrf_checks=True)
    _, raw = api_token_create(team=team, user=member, name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}", "content_type": "application/json"}
    body = {"dataset_version": tiny_version.pk, "split": "test", "model": tiny_registered_model.pk}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/evaluations", body, **auth)
    assert response.status_code == 202, response.content
    created = Evaluation.objects.get()
    assert response["Location"] == f"/api/v1/evaluations/{created.pk}" and len(sent) == 1
    bm25 = client.post("/api/v1/evaluations", {**body, "method": "bm25", "model": None}, **auth)
    assert bm25.status_code == 202 and bm25.json()["method"] == "bm25"
    bad = client.post("/api/v1/evaluations", {**body, "split": "nope"}, **auth)
    assert bad.status_code == 400 and "no split" in bad.json()["error"]
    broken = client.post("/api/v1/evaluations", "{oops", **auth)
    assert broken.status_code == 400 and "line 1" in broken.json()["error"]
    listed = client.get("/api/v1/evaluations", {"dataset_version": tiny_version.pk}, **auth)
    assert {e["id"] for e in listed.json()["evaluations"]} == set(
        Evaluation.objects.values_list("pk", flat=True)
    )
    _, read_only = api_token_create(team=team, user=viewer, name="ro")
    denied = client.post(
        "/api/v1/evaluations",
        body,
        HTTP_AUTHORIZATION=f"Bearer {read_only}",
        content_type="application/json",
    )
    assert denied.status_code == 403
    _, foreign = api_token_create(team=other_team, user=outsider, name="theirs")
    theirs = client.post(
        "/api/v1/evaluations",
        body,
        HTTP_AUTHORIZATION=f"Bearer {foreign}",
        content_type="application/json",
    )
    assert theirs.status_code == 404
    listed = client.get("/api/v1/evaluations", HTTP_AUTHORIZATION=f"Bearer {foreign}")
    assert listed.json()["evaluations"] == []
