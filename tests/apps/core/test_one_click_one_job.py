"""One click, one job: a repeated start (double click, retried POST) returns the job already
made; the API honours an ``Idempotency-Key`` header."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.test import Client

from apps.accounts.services import api_token_create
from apps.runs.models import Evaluation
from apps.runs.services import evaluation_create


@pytest.fixture(autouse=True)
def _window(settings):
    settings.JOB_DEDUPE_WINDOW_S = 10


@pytest.fixture
def no_send(monkeypatch):
    monkeypatch.setattr("workers.tasks.evaluation.evaluate.apply_async", lambda *a, **k: None)


@pytest.fixture
def api(team, member, no_send):
    _, raw = api_token_create(team=team, user=member, name="ci")
    client = Client(enforce_csrf_checks=True)

    def post(body: dict, **headers):
        return client.post("/api/v1/evaluations", json.dumps(body),
                           content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {raw}", **headers)  # fmt: skip

    return post


@pytest.mark.django_db
def test_a_double_click_on_evaluate_makes_one_evaluation(
    client, member, tiny_registered_model, tiny_version, no_send
):
    client.force_login(member)
    form = {"method": "dense", "model": tiny_registered_model.pk, "split": "test"}
    first = client.post(f"/runs/evaluate/{tiny_version.pk}/", form)
    second = client.post(f"/runs/evaluate/{tiny_version.pk}/", form)
    assert Evaluation.objects.count() == 1
    assert first["Location"] == second["Location"]
    # Another split is another job.
    client.post(f"/runs/evaluate/{tiny_version.pk}/", {**form, "split": "train"})
    assert Evaluation.objects.count() == 2


@pytest.mark.django_db
def test_two_identical_api_posts_make_one_job_until_it_ends(
    api, tiny_registered_model, tiny_version
):
    body = {"dataset_version": tiny_version.pk, "model": tiny_registered_model.pk}
    a, b = api(body), api(body)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"]
    # Once it has ended, the same start is a new job (re-running is allowed).
    Evaluation.objects.update(status="failed")
    assert api(body).json()["id"] != a.json()["id"]


@pytest.mark.django_db
def test_the_idempotency_key_returns_the_first_job(
    api, settings, tiny_registered_model, tiny_version
):
    settings.JOB_DEDUPE_WINDOW_S = 0  # only the key counts here
    body = {"dataset_version": tiny_version.pk, "model": tiny_registered_model.pk}
    first = api(body, HTTP_IDEMPOTENCY_KEY="k-1")
    Evaluation.objects.update(status="succeeded")  # even after it ended
    again = api(body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    other = api(body, HTTP_IDEMPOTENCY_KEY="k-2")
    assert other.json()["id"] != first.json()["id"]
    misuse = api({**body, "split": "train"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert misuse.status_code == 422 and "Idempotency-Key" in misuse.json()["error"]
    assert Evaluation.objects.count() == 2


@pytest.mark.django_db
def test_other_users_are_not_deduplicated(
    team, member, owner, tiny_registered_model, tiny_version, no_send
):
    made = {
        evaluation_create(
            team=team,
            model=tiny_registered_model,
            dataset_version=tiny_version,
            split="test",
            created_by=user,
        ).pk  # fmt: skip
        for user in (member, owner, member)
    }
    assert len(made) == 2


@pytest.mark.django_db(transaction=True)
def test_simultaneous_starts_make_one_job(team, member, tiny_registered_model, tiny_version,
                                          no_send):  # fmt: skip
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    barrier, made, errors = threading.Barrier(4), [], []

    def start() -> None:
        try:
            barrier.wait()
            made.append(evaluation_create(team=team, model=tiny_registered_model,
                                          dataset_version=tiny_version, split="test",
                                          created_by=member).pk)  # fmt: skip
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(made)) == 1 and Evaluation.objects.count() == 1
