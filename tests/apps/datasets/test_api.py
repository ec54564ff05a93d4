from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.accounts.services import api_token_create
from apps.datasets.models import DatasetVersion, Document, IngestJob, TrainingRow
from tests.apps.datasets.test_upload_ingest import zip_folder
from tests.conftest import write_beir
from workers.tasks.ingest import ingest

pytestmark = pytest.mark.django_db

UPLOADS = "/api/v1/datasets/uploads"


@pytest.fixture(autouse=True)
def _ingest_in_process(monkeypatch):
    # The queued task runs here, like the worker would, once the upload's transaction commits.
    monkeypatch.setattr(ingest, "apply_async", lambda args, **kw: ingest(*args))


@pytest.fixture
def api():
    # Real CSRF checks, as for a program posting without a session: the API must not need them.
    return Client(enforce_csrf_checks=True)


def bearer(team, user) -> dict:
    _, raw = api_token_create(team=team, user=user, name="ci")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def post_upload(api, auth, files, name="tiny", **fields):
    return api.post(UPLOADS, {"name": name, "files": files, **fields}, **auth)


def pairs_file(name="pairs.jsonl", rows=None) -> SimpleUploadedFile:
    rows = rows or [
        {"id": 1, "query": "what is tea", "passage": "Tea is a drink.", "negative": "Mars is red."},
        {"id": 2, "query": "red planet", "passage": "Mars is red.", "negative": "Tea."},
    ]
    return SimpleUploadedFile(name, "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_upload_a_beir_zip_run_the_ingest_and_read_the_counts(
    api, team, member, beir_folder, django_capture_on_commit_callbacks
):
    auth = bearer(team, member)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api, auth, [SimpleUploadedFile("tiny.zip", zip_folder(beir_folder))])
    assert response.status_code == 202, response.content
    body = response.json()
    job = IngestJob.objects.get()
    assert response["Location"] == f"http://testserver/api/v1/ingests/{job.pk}"
    assert (body["id"], body["kind"], body["files"]) == (job.pk, "retrieval", ["tiny.zip"])
    assert body["awaiting_confirmation"] is False and "preview" not in body
    assert job.created_by == member

    status = api.get(response["Location"], **auth).json()
    assert (status["status"], status["stage"], status["error"]) == ("succeeded", "done", None)
    assert status["problems"] == [] and status["reused"] is False
    assert set(status["progress"]) == {"done", "total"}
    version = status["version"]
    assert (version["document_count"], version["query_count"]) == (8, 5)
    assert version["qrels_counts"] == {"test": 4, "train": 1}

    detail = api.get(f"/api/v1/dataset-versions/{version['id']}", **auth).json()
    assert detail["dataset"]["name"] == "tiny" and detail["splits"] == ["test", "train"]
    assert (detail["document_count"], detail["parent"], detail["params"]) == (8, None, {})
    assert isinstance(detail["warnings"], list) and isinstance(detail["health"], dict)

    listing = api.get("/api/v1/datasets", **auth).json()["datasets"]
    assert [(d["name"], [v["id"] for v in d["versions"]]) for d in listing] == [
        ("tiny", [version["id"]])
    ]
    dataset = api.get(f"/api/v1/datasets/{version['dataset']}", **auth).json()
    assert dataset["versions"][0]["qrels_counts"] == {"test": 4, "train": 1}


def test_loose_beir_files_with_identical_content_reuse_the_version(
    api, team, member, beir_folder, django_capture_on_commit_callbacks
):
    auth = bearer(team, member)
    with django_capture_on_commit_callbacks(execute=True):
        post_upload(api, auth, [SimpleUploadedFile("tiny.zip", zip_folder(beir_folder))])
    files = [
        SimpleUploadedFile("corpus.jsonl", (beir_folder / "corpus.jsonl").read_bytes()),
        SimpleUploadedFile("queries.jsonl", (beir_folder / "queries.jsonl").read_bytes()),
        SimpleUploadedFile("test.tsv", (beir_folder / "qrels" / "test.tsv").read_bytes()),
        SimpleUploadedFile("train.tsv", (beir_folder / "qrels" / "train.tsv").read_bytes()),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api, auth, files, kind="retrieval")
    assert response.status_code == 202
    status = api.get(response["Location"], **auth).json()
    assert status["status"] == "succeeded" and status["reused"] is True
    assert DatasetVersion.objects.count() == 1


def test_malformed_qrels_fail_with_file_line_reason_and_write_nothing(
    api, team, member, tmp_path, django_capture_on_commit_callbacks
):
    folder = write_beir(tmp_path / "bad", qrels={"test": [("q1", "nope", 1), ("q1", "d1", "x")]})
    auth = bearer(team, member)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api, auth, [SimpleUploadedFile("bad.zip", zip_folder(folder, ""))])
    assert response.status_code == 202
    status = api.get(response["Location"], **auth).json()
    assert status["status"] == "failed" and status["version"] is None
    assert status["problems"] == [
        "qrels/test.tsv:2: unknown document id 'nope'",
        "qrels/test.tsv:3: relevance 'x' is not an integer",
    ]
    assert status["error"].startswith("2 problems, the first: qrels/test.tsv:2")
    assert not DatasetVersion.objects.exists() and not Document.objects.exists()


def test_bad_input_is_a_400_with_problems_and_nothing_stored(api, team, member, settings):
    auth = bearer(team, member)
    missing = api.post(UPLOADS, {"files": [pairs_file()]}, **auth)
    assert missing.status_code == 400
    assert missing.json()["problems"] == ["name: This field is required."]

    no_roles = post_upload(api, auth, [pairs_file(rows=[{"anchor": "a", "text": "b"}])])
    assert no_roles.status_code == 400
    body = no_roles.json()
    assert body["problems"][0].startswith("pairs.jsonl:1: no column for positive")
    assert body["error"] == body["problems"][0]

    wrong_kind = post_upload(api, auth, [pairs_file()], kind="retrieval")
    assert wrong_kind.status_code == 400
    assert wrong_kind.json()["problems"][0].startswith("pairs.jsonl: not a BEIR file")
    two = [pairs_file(), pairs_file("more.jsonl")]
    assert post_upload(api, auth, two, kind="training").status_code == 400
    assert post_upload(api, auth, [pairs_file()], kind="images").status_code == 400
    not_multipart = api.post(UPLOADS, {"name": "x"}, content_type="application/json", **auth)
    assert not_multipart.status_code == 400

    settings.DATASET_UPLOAD_MAX_BYTES = 10
    too_big = post_upload(api, auth, [SimpleUploadedFile("corpus.jsonl", b"x" * 11)])
    assert too_big.status_code == 413
    assert "over the limit of 10" in too_big.json()["error"]
    huge = post_upload(api, auth, [SimpleUploadedFile("corpus.jsonl", b"x" * (2 * 1024**2))])
    assert huge.status_code == 413  # refused by Content-Length, before the body is read
    assert huge.json()["problems"][0].endswith("over the limit of 10")

    assert not IngestJob.objects.exists()
    uploads = Path(settings.ARTIFACTS_ROOT) / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_training_upload_shows_roles_and_waits_for_start(
    api, team, member, viewer, django_capture_on_commit_callbacks
):
    auth = bearer(team, member)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api, auth, [pairs_file()], name="pairs", kind="training")
    assert response.status_code == 202
    body = response.json()
    assert (body["kind"], body["status"], body["awaiting_confirmation"]) == (
        "training",
        "pending",
        True,
    )
    roles = {"anchor": "query", "positive": "passage", "negatives": ["negative"], "score": None}
    assert body["preview"]["roles"] == {**roles, "ignored": ["id"]}
    assert body["preview"]["rows"][0]["anchor"] == "what is tea"
    assert body["start_url"] == f"/api/v1/ingests/{body['id']}/start"
    assert api.get(response["Location"], **auth).json()["preview"] == body["preview"]
    assert not TrainingRow.objects.exists()

    assert api.post(body["start_url"], **bearer(team, viewer)).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        started = api.post(body["start_url"], **auth)
    assert started.status_code == 202
    assert started["Location"] == f"http://testserver/api/v1/ingests/{body['id']}"
    status = api.get(started["Location"], **auth).json()
    assert status["status"] == "succeeded" and "preview" not in status
    assert (status["version"]["kind"], status["version"]["training_count"]) == ("training", 2)
    assert api.post(body["start_url"], **auth).status_code == 409


def test_training_upload_with_confirm_starts_at_once(
    api, team, member, django_capture_on_commit_callbacks
):
    auth = bearer(team, member)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api, auth, [pairs_file("pairs.jsonl")], name="p", confirm="true")
    assert response.status_code == 202 and response.json()["awaiting_confirmation"] is False
    status = api.get(response["Location"], **auth).json()
    assert status["status"] == "succeeded" and status["version"]["training_count"] == 2


def test_no_token_401_viewer_403_other_team_404(
    api, team, member, viewer, other_team, outsider, beir_folder, tiny_version
):
    job_response = post_upload(api, bearer(team, member), [pairs_file()])
    job_id = job_response.json()["id"]
    urls = [
        f"/api/v1/ingests/{job_id}",
        f"/api/v1/datasets/{tiny_version.dataset_id}",
        f"/api/v1/dataset-versions/{tiny_version.pk}",
    ]
    for url in [*urls, "/api/v1/datasets"]:
        assert api.get(url).status_code == 401
    assert post_upload(api, {}, [pairs_file()]).status_code == 401

    viewer_auth = bearer(team, viewer)
    assert post_upload(api, viewer_auth, [pairs_file()]).status_code == 403
    for url in urls:
        assert api.get(url, **viewer_auth).status_code == 200  # viewers read

    foreign = bearer(other_team, outsider)
    for url in urls:
        response = api.get(url, **foreign)
        assert (response.status_code, response.json()["error"]) == (404, "not found")
    assert api.post(f"/api/v1/ingests/{job_id}/start", **foreign).status_code == 404
    assert api.get("/api/v1/datasets", **foreign).json() == {"datasets": []}
    assert api.get("/api/v1/ingests/999999", **viewer_auth).status_code == 404
    assert IngestJob.objects.get().awaiting_confirmation  # the outsider started nothing
