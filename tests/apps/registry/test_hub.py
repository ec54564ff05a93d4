"""Models and datasets in by name from the Hugging Face Hub, against a local server that answers
as the Hub does (tests/support/hub.py, through HF_ENDPOINT): a revision pin, gated and private
repos, remote code refused before the weights, the allow-list, bad names, and datasets in BEIR's
and mteb's layouts through the upload's validation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.registry.models import EmbeddingModel, HubImport
from tests.conftest import write_beir
from tests.support.hub import LocalHub
from workers.tasks.hub import hub_folder, hub_import

pytestmark = pytest.mark.django_db


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    server = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # The suite runs offline for everything else; this server is on 127.0.0.1.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


def model_files(tiny_model_path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(tiny_model_path)): p.read_bytes()
        for p in sorted(tiny_model_path.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def start(client, *, kind="model", repo_id, revision="", name=""):
    return client.post("/models/hub/", {"kind": kind, "repo_id": repo_id, "revision": revision,
                                        "name": name})  # fmt: skip


def test_a_model_is_registered_from_the_hub_at_the_pinned_revision(
    client, member, outsider, hub, tiny_model_path, monkeypatch
):
    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    files = model_files(tiny_model_path)
    v1 = hub.add("model", "acme/tiny", {**files, "README.md": b"version one"}, revision="v1")
    main = hub.add("model", "acme/tiny", {**files, "README.md": b"version two"})
    assert v1 != main
    client.force_login(member)
    page = client.get("/models/").content.decode()
    assert 'id="hub-form"' in page and 'name="repo_id"' in page
    response = start(client, repo_id="acme/tiny", revision="v1", name="tiny-hub")
    job = HubImport.objects.get()
    assert response["Location"] == f"/models/hub/{job.pk}/"
    assert (job.kind, job.repo_id, job.revision, job.name) == ("model", "acme/tiny", "v1",
                                                                "tiny-hub")  # fmt: skip
    hub_import.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.human_error
    assert job.sha == v1  # the tag, resolved to its commit, not main's
    model = job.result_model
    assert model.source == EmbeddingModel.Source.HUB and model.source_ref == f"acme/tiny@{v1}"
    assert model.dimension == 64 and model.role == "embedding"
    folder = Path(model.path)
    assert (
        folder == hub_folder(job) / "repo" and (folder / "README.md").read_bytes() == b"version one"
    )
    pinned = {**files, "README.md": b"version one"}
    assert job.progress_done == job.progress_total == sum(len(b) for b in pinned.values())
    # Every file was fetched at the commit, never at the moving name.
    fetched = [r for r in hub.requests if "/resolve/" in r]
    assert fetched and all(f"/resolve/{v1}/" in r for r in fetched)
    page = client.get(f"/models/hub/{job.pk}/").content.decode()
    assert f"<code>{v1}</code>" in page and f"/models/{model.pk}/" in page
    # The API says the same, and another team sees nothing.
    from apps.accounts.services import api_token_create

    token = api_token_create(user=member, team=job.team, name="t")[1]
    body = client.get(f"/api/v1/hub-imports/{job.pk}", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert body["sha"] == v1 and body["model"] == model.pk and str(folder) not in json.dumps(body)
    models = client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").json()["models"]
    assert any(m["source_ref"] == f"acme/tiny@{v1}" for m in models)
    client.force_login(outsider)
    assert client.get(f"/models/hub/{job.pk}/").status_code == 404


def test_gated_and_private_repos_need_a_token(client, member, hub, tiny_model_path, monkeypatch):
    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    hub.add("model", "meta/gated", model_files(tiny_model_path), gated=True)
    hub.add("model", "acme/secret", model_files(tiny_model_path), private=True)
    client.force_login(member)
    start(client, repo_id="meta/gated")
    start(client, repo_id="acme/secret")
    gated, private = HubImport.objects.order_by("pk")
    for job in (gated, private):
        hub_import.run(job.pk)
        job.refresh_from_db()
        assert job.status == "failed" and job.result_model is None
    assert gated.human_error == (
        "meta/gated is gated: set a Hub token of an account that accepted its terms (the team "
        "page, or HF_TOKEN on the workers)."
    )
    assert private.human_error.startswith("acme/secret was not found on the Hub, or it is private")
    assert not EmbeddingModel.objects.exists() and not hub_folder(gated).joinpath("repo").exists()
    # With a token that has access, the gated repo comes in.
    hub.tokens.add("hf_good")
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    start(client, repo_id="meta/gated", name="gated-ok")
    job = HubImport.objects.order_by("-pk").first()
    hub_import.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.human_error


def test_remote_code_is_refused_before_any_weight_is_fetched(
    client, member, hub, tiny_model_path, monkeypatch, settings
):
    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    files = model_files(tiny_model_path)
    config = json.loads(files["config.json"])
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    files["config.json"] = json.dumps(config).encode()
    files["modeling_evil.py"] = b"import os; os.system('echo pwned')"
    hub.add("model", "evil/model", files)
    client.force_login(member)
    start(client, repo_id="evil/model")
    job = HubImport.objects.get()
    hub_import.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.human_error.startswith("evil/model needs trust_remote_code (its config.json maps")
    assert "HUB_TRUST_REMOTE_CODE" in job.human_error
    assert not any("model.safetensors" in r or ".py" in r for r in hub.requests if "GET" in r)
    assert not EmbeddingModel.objects.exists()


def test_names_and_the_allow_list_are_checked_before_anything_is_queued(
    client, member, viewer, settings
):
    from apps.accounts.services import api_token_create

    client.force_login(member)
    for repo_id in ("../../etc/passwd", "acme", "acme/../x", "-x/y", ""):
        start(client, repo_id=repo_id)
    start(client, repo_id="acme/tiny", revision="../main")
    assert not HubImport.objects.exists()
    settings.HUB_ALLOWED_ORGS = ["BAAI", "sentence-transformers"]
    team = member.memberships.first().team
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=member, team=team, name='t')[1]}"}
    r = client.post("/api/v1/hub-imports", {"kind": "model", "repo_id": "evil/model"},
                    content_type="application/json", **auth)  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"].startswith("repo_id: evil/model: evil is not on this server's list")
    odd = {"kind": "model", "repo_id": "acme/x", "revision": "a..b"}
    r = client.post("/api/v1/hub-imports", odd, content_type="application/json", **auth)
    assert r.status_code == 400
    client.force_login(viewer)
    assert start(client, repo_id="BAAI/bge-small-en-v1.5").status_code == 403
    assert not HubImport.objects.exists()


def test_a_beir_dataset_and_an_mteb_parquet_one_import_through_the_upload_checks(
    client, member, hub, tmp_path, monkeypatch
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES

    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    sha = hub.add_folder("dataset", "BeIR/tiny", write_beir(tmp_path / "beir"))
    # mteb's newer layout: parquet shards per table, qrels under default/.
    mteb = tmp_path / "mteb"
    for name, rows in (("corpus", TINY_CORPUS), ("queries", TINY_QUERIES)):
        (mteb / name).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), mteb / name / "test-00000-of-00001.parquet")
    (mteb / "default").mkdir()
    for split, rows in TINY_QRELS.items():
        table = [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in rows]
        pq.write_table(pa.Table.from_pylist(table), mteb / "default" / f"{split}-0.parquet")
    hub.add_folder("dataset", "mteb/tiny", mteb)
    bad = write_beir(tmp_path / "bad", qrels={"test": [("q1", "nope", 1)]})
    hub.add_folder("dataset", "acme/bad", bad)

    client.force_login(member)
    assert 'id="hub-repo-dataset"' in client.get("/datasets/").content.decode()
    for repo in ("BeIR/tiny", "mteb/tiny", "acme/bad"):
        start(client, kind="dataset", repo_id=repo, name=repo.split("/")[0])
    beir, parquet, broken = HubImport.objects.order_by("pk")
    for job in (beir, parquet, broken):
        hub_import.run(job.pk)
        job.refresh_from_db()
    assert beir.status == "succeeded", beir.human_error
    version = beir.result_version
    assert version.source == f"hub:BeIR/tiny@{sha}" and version.document_count == len(TINY_CORPUS)
    assert parquet.status == "succeeded", parquet.human_error
    mirrored = parquet.result_version
    assert (mirrored.document_count, mirrored.query_count) == (len(TINY_CORPUS), len(TINY_QUERIES))
    assert mirrored.qrels_counts == version.qrels_counts
    assert broken.status == "failed" and broken.result_version is None
    assert broken.human_error == "acme/bad: qrels/test.tsv:2: unknown document id 'nope'"
    from apps.datasets.models import Dataset

    assert not Dataset.objects.filter(name="acme").exists()  # nothing half-written


def test_the_commands_take_a_hub_repo(member, team, hub, tiny_model_path, tmp_path):
    hub.add("model", "acme/tiny", model_files(tiny_model_path))
    hub.add_folder("dataset", "BeIR/tiny", write_beir(tmp_path / "beir"))
    out = io.StringIO()
    call_command("register_model", "--hub", "acme/tiny", "--team", team.slug, "--sync",
                 stdout=out)  # fmt: skip
    made = json.loads(out.getvalue().strip().splitlines()[-1])
    assert (
        made["status"] == "succeeded"
        and EmbeddingModel.objects.get(pk=made["model"]).name == "tiny"
    )
    out = io.StringIO()
    call_command("import_dataset", "--hub", "BeIR/tiny", "--team", team.slug, "--sync",
                 stdout=out)  # fmt: skip
    imported = json.loads(out.getvalue().strip().splitlines()[-1])
    assert imported["status"] == "succeeded" and imported["version"]


def test_a_fine_tune_is_published_with_its_card_as_one_commit(
    client, member, outsider, team, hub, tiny_registered_model, tiny_version, monkeypatch
):
    from apps.accounts.services import api_token_create
    from apps.registry.models import HubPublish
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from workers.tasks.hub import hub_publish

    monkeypatch.setattr(hub_publish, "apply_async", lambda *a, **k: None)
    tuned = EmbeddingModel.objects.get(pk=tiny_registered_model.pk)
    tuned.pk, tuned.name = None, "tiny-tuned"
    tuned.kind, tuned.parent = EmbeddingModel.Kind.FINETUNED, tiny_registered_model
    tuned.save()
    done = evaluation_create(team=team, model=tuned, dataset_version=tiny_version, split="test",
                             enqueue=False)  # fmt: skip
    Evaluation.objects.filter(pk=done.pk).update(
        status="succeeded", metrics={"ndcg@10": 0.61234, "mrr@10": 0.5, "recall@100": 0.9}
    )
    client.force_login(member)
    page = client.get(f"/models/{tuned.pk}/").content.decode()
    assert 'id="publish-form"' in page and "| 0.6123 | 0.5000 | 0.9000 |" in page
    # A base model is someone else's: not offered, refused if asked.
    assert (
        'id="publish-form"'
        not in client.get(f"/models/{tiny_registered_model.pk}/").content.decode()
    )
    client.post(f"/models/{tiny_registered_model.pk}/publish/", {"repo_id": "me/base"})
    assert not HubPublish.objects.exists()

    client.post(f"/models/{tuned.pk}/publish/", {"repo_id": "acme/tiny-tuned", "private": "on"})
    job = HubPublish.objects.get()
    hub_publish.run(job.pk)  # no token on the workers
    job.refresh_from_db()
    assert job.status == "failed" and "the team's own Hub token" in job.human_error
    # The workers' HF_TOKEN is the operator's: a team never publishes under it.
    monkeypatch.setenv("HF_TOKEN", "hf_operator")
    hub.tokens.update({"hf_operator", "hf_write"})
    client.post(f"/models/{tuned.pk}/publish/", {"repo_id": "acme/tiny-tuned", "private": "on"})
    job = HubPublish.objects.order_by("-pk").first()
    hub_publish.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and "the team's own Hub token" in job.human_error
    from apps.accounts.services import team_hub_token_set

    team_hub_token_set(team=team, token="hf_write", user=member)
    # A repo someone else made is never pushed into.
    hub.add("model", "acme/theirs", {"README.md": b"theirs"})
    client.post(f"/models/{tuned.pk}/publish/", {"repo_id": "acme/theirs"})
    job = HubPublish.objects.order_by("-pk").first()
    hub_publish.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and "exists already and this team did not publish it" in (
        job.human_error
    )
    assert hub.repos[("model", "acme/theirs")].commits[hub.repos[("model", "acme/theirs")].refs[
        "main"]] == {"README.md": b"theirs"}  # fmt: skip
    client.post(f"/models/{tuned.pk}/publish/", {"repo_id": "acme/tiny-tuned", "private": "on"})
    job = HubPublish.objects.order_by("-pk").first()
    hub_publish.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", (job.human_error, hub.requests[-6:])
    repo = hub.repos[("model", "acme/tiny-tuned")]
    assert repo.private and repo.refs["main"] == job.sha
    pushed = repo.commits[job.sha]
    folder = Path(tuned.path)
    assert pushed["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    card = pushed["README.md"].decode()
    assert card == job.result["card"] and card.startswith(
        "---\nlibrary_name: sentence-transformers"
    )
    assert "# tiny-tuned" in card and "from base model **tiny**" in card
    assert "| 0.6123 | 0.5000 | 0.9000 |" in card and str(folder) not in card
    page = client.get(f"/models/publishes/{job.pk}/").content.decode()
    assert f"<code>{job.sha}</code>" in page and f"{hub.url}/acme/tiny-tuned" in page
    assert job.private is True  # as the Hub says, read back after the push
    # The team's own repo takes a second push (a new commit on top).
    client.post(f"/models/{tuned.pk}/publish/", {"repo_id": "acme/tiny-tuned", "private": "on"})
    again = HubPublish.objects.order_by("-pk").first()
    hub_publish.run(again.pk)
    again.refresh_from_db()
    assert again.status == "succeeded", again.human_error
    # The published model comes back in by name, identical.
    hub_import.apply_async = lambda *a, **k: None
    start(client, repo_id="acme/tiny-tuned", name="round-trip")
    back = HubImport.objects.get()
    hub_import.run(back.pk)
    back.refresh_from_db()
    assert back.status == "succeeded", back.human_error
    assert (Path(back.result_model.path) / "model.safetensors").read_bytes() == pushed[
        "model.safetensors"
    ]
    # The API: another team sees nothing.
    token = api_token_create(user=member, team=team, name="t")[1]
    url = f"/api/v1/models/{tuned.pk}/publish"
    r = client.post(url, {"repo_id": "acme/again"}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.status_code == 202 and r["Location"].startswith("/api/v1/hub-publishes/")
    other = api_token_create(user=outsider, team=outsider.memberships.first().team, name="o")[1]
    r = client.post(url, {"repo_id": "evil/steal"}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {other}")  # fmt: skip
    assert r.status_code == 404
    r = client.get(f"/api/v1/hub-publishes/{job.pk}", HTTP_AUTHORIZATION=f"Bearer {other}")
    assert r.status_code == 404


def test_a_team_keeps_its_own_hub_token_encrypted_and_its_jobs_use_it(
    client, owner, member, team, hub, tiny_model_path, monkeypatch, settings
):
    from apps.accounts.models import Team

    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    hub.add("model", "meta/gated", model_files(tiny_model_path), gated=True)
    hub.tokens.add("hf_team_secret")
    client.force_login(member)
    assert client.post("/accounts/team/hub-token/", {"hub_token": "x"}).status_code == 403
    client.force_login(owner)
    client.post("/accounts/team/hub-token/", {"hub_token": "hf_team_secret"})
    stored = Team.objects.get(pk=team.pk)
    assert stored.hub_token and "hf_team_secret" not in stored.hub_token  # encrypted
    page = client.get("/accounts/team/").content.decode()
    assert "hf_team_secret" not in page and 'id="hub-token-remove"' in page
    start(client, repo_id="meta/gated", name="gated-by-team")
    job = HubImport.objects.get()
    hub_import.run(job.pk)  # no HF_TOKEN in the environment: the team's token opens it
    job.refresh_from_db()
    assert job.status == "succeeded", job.human_error
    # Under another server key the stored token cannot be read: the job says what to do.
    settings.SECRETS_KEY = "another key"
    start(client, repo_id="meta/gated", name="gated-again")
    job = HubImport.objects.order_by("-pk").first()
    hub_import.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.human_error.startswith("The team's Hub token can no longer be read")
    client.post("/accounts/team/hub-token/", {"remove": "1"})
    assert Team.objects.get(pk=team.pk).hub_token == ""


def test_workers_that_run_offline_say_so_instead_of_failing_obscurely(client, member, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    client.force_login(member)
    start(client, repo_id="acme/tiny")
    job = HubImport.objects.get()
    hub_import.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.human_error.startswith("The workers run offline (HF_HUB_OFFLINE")


def test_a_finished_job_whose_model_was_deleted_still_opens(client, member, team,
                                                            tiny_registered_model):  # fmt: skip
    from apps.registry.models import DistillJob, MergeJob, OptimizeJob

    distill = DistillJob.objects.create(team=team, source=tiny_registered_model, status="succeeded",
                                        result={"dimension": 64})  # fmt: skip
    optimize = OptimizeJob.objects.create(
        team=team, source=tiny_registered_model, status="succeeded", result={"backend": "onnx"}
    )
    merge = MergeJob.objects.create(team=team, method="soup", status="succeeded",
                                    params={"models": [tiny_registered_model.pk]})  # fmt: skip
    client.force_login(member)
    for url in (f"/models/distillations/{distill.pk}/", f"/models/optimizations/{optimize.pk}/",
                f"/models/merges/{merge.pk}/"):  # fmt: skip
        page = client.get(url)
        assert page.status_code == 200, url
        assert "a model since deleted" in page.content.decode(), url


def test_a_repo_over_the_size_cap_is_refused_before_any_file_and_nothing_is_left(
    client,
    member,
    hub,
    tiny_model_path,
    tmp_path,
    monkeypatch,
    settings,
    django_capture_on_commit_callbacks,
):
    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    hub.add("model", "acme/big", model_files(tiny_model_path))
    hub.add_folder("dataset", "BeIR/tiny", write_beir(tmp_path / "beir"))
    hub.add_folder(
        "dataset", "acme/bad", write_beir(tmp_path / "bad", qrels={"test": [("q1", "nope", 1)]})
    )
    client.force_login(member)
    settings.HUB_MAX_BYTES = 1000
    start(client, repo_id="acme/big")
    big = HubImport.objects.get()
    hub_import.run(big.pk)
    big.refresh_from_db()
    assert big.status == "failed" and "more than this server takes" in big.human_error
    assert not any("/resolve/" in r for r in hub.requests)
    settings.HUB_MAX_BYTES = 10**9
    # A dataset's files go once its rows are in; a refused one leaves nothing either.
    for repo in ("BeIR/tiny", "acme/bad"):
        start(client, kind="dataset", repo_id=repo, name=repo.replace("/", "-"))
    for job in HubImport.objects.filter(kind="dataset"):
        hub_import.run(job.pk)
        job.refresh_from_db()
        assert not hub_folder(job).exists(), job.status
    # A Hub model's download goes with the model.
    start(client, repo_id="acme/big", name="big-ok")
    ok = HubImport.objects.get(name="big-ok")
    hub_import.run(ok.pk)
    ok.refresh_from_db()
    folder = Path(ok.result_model.path)
    assert folder.is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/models/{ok.result_model.pk}/delete/")
    assert not EmbeddingModel.objects.filter(pk=ok.result_model_id).exists()
    assert not folder.exists()


def test_a_training_set_repo_imports_as_a_training_version(client, member, hub, tmp_path,
                                                          monkeypatch):  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    rows = [{"anchor": f"question {i}", "positive": f"answer {i}", "negative": f"other {i}"}
            for i in range(6)]  # fmt: skip
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    hub.add("dataset", "acme/pairs", {"train.jsonl": jsonl, "README.md": b"pairs"})
    shards = tmp_path / "shards" / "data"
    shards.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:3]), shards / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), shards / "train-00001-of-00002.parquet")
    hub.add_folder("dataset", "acme/pairs-parquet", tmp_path / "shards")
    client.force_login(member)
    for repo in ("acme/pairs", "acme/pairs-parquet"):
        start(client, kind="dataset", repo_id=repo, name=repo.replace("/", "-"))
    for job in HubImport.objects.order_by("pk"):
        hub_import.run(job.pk)
        job.refresh_from_db()
        assert job.status == "succeeded", job.human_error
        version = job.result_version
        assert version.kind == "training" and version.training_count == 6
        assert version.training_roles["anchor"] == "anchor"
        assert [r.anchor for r in version.training_rows.order_by("row")][:2] == [
            "question 0",
            "question 1",
        ]


def test_with_artifacts_in_a_bucket_a_hub_model_is_uploaded_before_it_is_registered(
    client, member, hub, tiny_model_path, monkeypatch, s3_env, tmp_path
):
    """Another host (an empty folder) gets the Hub model's exact files from the bucket."""
    import shutil

    from workers.common.store import Store, store

    monkeypatch.setattr(hub_import, "apply_async", lambda *a, **k: None)
    files = model_files(tiny_model_path)
    hub.add("model", "acme/tiny", files)
    client.force_login(member)
    start(client, repo_id="acme/tiny", name="tiny-hub")
    job = HubImport.objects.get()
    hub_import.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.human_error
    here = store()
    folder = Path(job.result_model.path)
    key = here.key_of(folder)
    assert key is not None and set(here.manifest(key)["files"]) == set(files)
    other = Store(bucket=here.bucket, prefix=here.prefix, local_root=tmp_path / "host-b",
                  endpoint_url=here.endpoint_url)  # fmt: skip
    fetched = other.ensure(other.local_root / key)
    assert {str(p.relative_to(fetched)): p.read_bytes()
            for p in fetched.rglob("*") if p.is_file()} == files  # fmt: skip
    shutil.rmtree(fetched)
