"""Cleaning up and going on: evaluations, training runs and models can be deleted (what is in
use says by what), another team gets a 404, files EmbedHub wrote go and nothing else; the pages
offer the next step (evaluate, fine-tune, run again with changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation, QueryResult, TrainingRun

pytestmark = pytest.mark.django_db


def test_an_evaluation_is_deleted_with_its_rows_and_run_file(client, member, viewer, outsider,
                                                            evaluation):  # fmt: skip
    from workers.tasks.evaluation import evaluate

    evaluate.run(evaluation.pk)
    evaluation.refresh_from_db()
    run_file = Path(evaluation.run_file)
    assert run_file.exists() and QueryResult.objects.filter(evaluation=evaluation).exists()
    url = f"/runs/evaluations/{evaluation.pk}/delete/"
    client.force_login(outsider)
    assert client.post(url).status_code == 404
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(member)
    page = client.get(f"/runs/evaluations/{evaluation.pk}/").content.decode()
    assert 'id="delete-evaluation"' in page
    r = client.post(url)
    assert r.status_code == 302 and r["Location"] == "/runs/evaluations/"
    assert not Evaluation.objects.filter(pk=evaluation.pk).exists()
    assert not QueryResult.objects.filter(evaluation_id=evaluation.pk).exists()


def test_a_running_evaluation_is_not_deleted(client, member, evaluation):
    Evaluation.objects.filter(pk=evaluation.pk).update(status="running")
    client.force_login(member)
    r = client.post(f"/runs/evaluations/{evaluation.pk}/delete/", follow=True)
    assert "is running; cancel it first" in r.content.decode()
    assert Evaluation.objects.filter(pk=evaluation.pk).exists()


def test_a_model_in_use_says_by_what_and_a_free_one_goes(
    client, member, team, evaluation, tiny_registered_model, django_capture_on_commit_callbacks
):
    django_on_commit = django_capture_on_commit_callbacks
    from apps.registry.services import ModelInUse, embedding_model_delete

    client.force_login(member)
    page = client.get(f"/models/{tiny_registered_model.pk}/").content.decode()
    assert 'id="next-actions"' in page and "Evaluate on tiny v1" in page and "Fine-tune" in page
    with pytest.raises(ModelInUse, match="used by 1 evaluation"):
        embedding_model_delete(model=tiny_registered_model)
    r = client.post(f"/models/{tiny_registered_model.pk}/delete/", follow=True)
    assert "used by 1 evaluation" in r.content.decode()
    # A registered base model's own folder is never removed; a fine-tune's files under
    # ARTIFACTS_ROOT are.
    base_folder = Path(tiny_registered_model.path)
    from django.conf import settings

    made = Path(settings.ARTIFACTS_ROOT) / "models" / "x"
    made.mkdir(parents=True)
    (made / "config.json").write_text("{}")
    fine = EmbeddingModel.objects.create(
        team=team, name="fine", kind="finetuned", source="folder", source_ref="run",
        path=str(made), layout="sentence-transformers", dimension=64, max_seq_length=64,
    )  # fmt: skip
    evaluation.delete()
    with django_on_commit(execute=True):
        r = client.post(f"/models/{fine.pk}/delete/")
    assert r.status_code == 302 and not EmbeddingModel.objects.filter(pk=fine.pk).exists()
    assert not made.exists()
    with django_on_commit(execute=True):
        client.post(f"/models/{tiny_registered_model.pk}/delete/")
    assert not EmbeddingModel.objects.filter(pk=tiny_registered_model.pk).exists()
    assert base_folder.exists()


def test_runs_are_deleted_unless_their_model_lives_and_run_again_fills_the_form(
    client, member, team, tiny_registered_model, tiny_version, django_capture_on_commit_callbacks
):
    from apps.datasets.services import dataset_version_pairs_from_qrels
    from apps.runs.training import TrainingError, training_run_create, training_run_delete

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              options={"batch_size": 2, "learning_rate": 3e-5},
                              name="first", enqueue=False)  # fmt: skip
    client.force_login(member)
    form = client.get(f"/runs/training/new/?from_run={run.pk}").content.decode()
    assert 'value="first (again)"' in form and 'value="3e-05"' in form
    assert f'<option value="{pairs.pk}" selected' in form
    version_page = client.get(f"/datasets/versions/{pairs.pk}/").content.decode()
    assert f"/runs/training/new/?train_version={pairs.pk}" in version_page
    preset = client.get(f"/runs/training/new/?train_version={pairs.pk}").content.decode()
    assert f'<option value="{pairs.pk}" selected' in preset
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    run.refresh_from_db()
    run.result_model = tiny_registered_model
    run.save(update_fields=["result_model"])
    with pytest.raises(TrainingError, match="delete the model first"):
        training_run_delete(run=run)
    TrainingRun.objects.filter(pk=run.pk).update(result_model=None)
    folder = Path(run.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.log").write_text("x")
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(f"/runs/training/{run.pk}/delete/")
    assert r.status_code == 302 and not TrainingRun.objects.filter(pk=run.pk).exists()
    assert not folder.exists()


def test_the_api_deletes_and_scopes(client, team, member, viewer, outsider, other_team,
                                    evaluation, tiny_registered_model):  # fmt: skip
    from apps.accounts.services import api_token_create

    def auth(user, t):
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=t, name='t')[1]}"}

    mine = auth(member, team)
    r = client.delete(f"/api/v1/evaluations/{evaluation.pk}", **mine)
    assert r.status_code == 409 and "cancel it first" in r.json()["error"]  # still queued
    Evaluation.objects.filter(pk=evaluation.pk).update(status="cancelled")
    assert client.delete(f"/api/v1/evaluations/{evaluation.pk}",
                         **auth(outsider, other_team)).status_code == 404  # fmt: skip
    assert client.delete(f"/api/v1/evaluations/{evaluation.pk}",
                         **auth(viewer, team)).status_code == 403  # fmt: skip
    r = client.delete(f"/api/v1/models/{tiny_registered_model.pk}", **mine)
    assert r.status_code == 409 and "used by 1 evaluation" in r.json()["error"]
    assert client.delete(f"/api/v1/evaluations/{evaluation.pk}", **mine).status_code == 204
    assert client.delete(f"/api/v1/models/{tiny_registered_model.pk}", **mine).status_code == 204
    assert client.delete("/api/v1/training-runs/999999", **mine).status_code == 404


def test_resume_says_where_it_starts(client, member, team, tiny_registered_model, tiny_version):
    from apps.datasets.services import dataset_version_pairs_from_qrels
    from apps.runs.training import training_run_create

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version
    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              enqueue=False)  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(status="failed", human_error="boom")
    client.force_login(member)
    page = client.get(f"/runs/training/{run.pk}/").content.decode()
    assert "Start again from step 0 (no checkpoint was saved)" in page
    state = Path(run.output_dir) / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    page = client.get(f"/runs/training/{run.pk}/").content.decode()
    assert "Resume from the checkpoint at step 4" in page and 'id="run-again"' in page


def test_the_preview_counts_the_negatives_the_run_will_use(team, tiny_registered_model, tmp_path):
    import json

    from apps.datasets.services import dataset_import_training
    from apps.runs.training import training_run_preview

    path = tmp_path / "mined.jsonl"
    rows = [{"anchor": f"q{i}", "positive": f"p{i}", **{f"negative_{j}": f"n{i}-{j}"
             for j in range(1, 4)}} for i in range(20)]  # fmt: skip
    rows.append({"anchor": "short", "positive": "p", "negative_1": "only one"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = dataset_import_training(team=team, name="mined", path=path).version
    preview = training_run_preview(team=team, base_model=tiny_registered_model,
                                   train_version=version, options={"batch_size": 8})  # fmt: skip
    # 3 negatives per row (20 of 21 rows have them): 8 × (2 + 3) texts a step, not 8 × 2.
    assert preview["estimate"]["texts_per_step"] == 40


def test_a_model_is_renamed_in_its_team_only(client, member, viewer, team, tiny_registered_model):
    client.force_login(viewer)
    url = f"/models/{tiny_registered_model.pk}/rename/"
    assert client.post(url, {"name": "x"}).status_code == 403
    client.force_login(member)
    EmbeddingModel.objects.create(
        team=team, name="taken", source="folder", source_ref="x", path="/nowhere",
        layout="sentence-transformers", dimension=64, max_seq_length=64,
    )  # fmt: skip
    r = client.post(url, {"name": "taken"}, follow=True)
    assert "already has a model named" in r.content.decode()
    client.post(url, {"name": "  MiniLM (SciFact)  "})
    tiny_registered_model.refresh_from_db()
    assert tiny_registered_model.name == "MiniLM (SciFact)"


def test_the_same_evaluation_again_shows_the_one_that_ran(client, member, tiny_version):
    client.force_login(member)
    url = f"/runs/evaluate/{tiny_version.pk}/"
    client.post(url, {"method": "bm25", "split": "test", "precision": "auto"})
    first = Evaluation.objects.get()
    Evaluation.objects.filter(pk=first.pk).update(status="succeeded")
    r = client.post(url, {"method": "bm25", "split": "test", "precision": "auto"}, follow=True)
    assert Evaluation.objects.count() == 1 and r.redirect_chain[-1][0].endswith(f"/{first.pk}/")
    assert "already ran with the same model, data and settings" in r.content.decode()
    client.post(url, {"method": "bm25", "split": "train", "precision": "auto"})
    assert Evaluation.objects.count() == 2  # another split is another evaluation


def test_a_failed_evaluation_runs_again_with_the_same_settings(
    client, member, viewer, outsider, evaluation, monkeypatch
):
    monkeypatch.setattr("workers.tasks.evaluation.evaluate.apply_async", lambda *a, **k: None)
    Evaluation.objects.filter(pk=evaluation.pk).update(status="failed", human_error="boom")
    url = f"/runs/evaluations/{evaluation.pk}/rerun/"
    client.force_login(outsider)
    assert client.post(url).status_code == 404
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(member)
    page = client.get(f"/runs/evaluations/{evaluation.pk}/").content.decode()
    assert 'id="run-again"' in page and 'id="change-settings"' in page
    response = client.post(url)
    again = Evaluation.objects.exclude(pk=evaluation.pk).get()
    assert response["Location"] == f"/runs/evaluations/{again.pk}/"
    assert (again.model, again.dataset_version, again.split, again.method, again.precision) == (
        evaluation.model, evaluation.dataset_version, evaluation.split, evaluation.method,
        evaluation.precision,
    )  # fmt: skip
    assert again.status == "pending" and Evaluation.objects.get(pk=evaluation.pk).status == "failed"
    # A succeeded one is not run again: its figures would be the same.
    Evaluation.objects.filter(pk=again.pk).update(status="succeeded")
    client.post(f"/runs/evaluations/{again.pk}/rerun/")
    assert Evaluation.objects.count() == 2
    # "Change settings and run" opens the data's form filled in from the evaluation.
    form = client.get(
        f"/datasets/versions/{evaluation.dataset_version_id}/",
        {"method": "dense", "model": evaluation.model_id, "split": "test"},
    ).content.decode()
    chosen = form[form.index('id="id_model"') :].split("</select>")[0]
    assert f'<option value="{evaluation.model_id}" selected>' in chosen


def test_ticked_evaluations_are_deleted_together_and_refusals_are_said(
    client, member, viewer, outsider, team, tiny_registered_model, tiny_version
):
    from apps.runs.services import evaluation_create

    def make(status):
        e = evaluation_create(team=team, model=tiny_registered_model, dataset_version=tiny_version,
                              split="test", enqueue=False)  # fmt: skip
        Evaluation.objects.filter(pk=e.pk).update(status=status)
        return e.pk

    done, failed, running = make("succeeded"), make("failed"), make("running")
    client.force_login(outsider)
    client.post("/runs/evaluations/delete/", {"e": [done]})
    assert Evaluation.objects.filter(pk=done).exists()  # not theirs: nothing happens
    client.force_login(viewer)
    assert client.post("/runs/evaluations/delete/", {"e": [done]}).status_code == 403
    client.force_login(member)
    listing = client.get("/runs/evaluations/").content.decode()
    assert 'id="delete-selected"' in listing and f'aria-label="Select #{failed}"' in listing
    response = client.post(
        "/runs/evaluations/delete/", {"e": [done, failed, running, 999999]}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 204 and response["HX-Redirect"] == "/runs/evaluations/"
    assert list(Evaluation.objects.values_list("pk", flat=True)) == [running]
    said = [str(m) for m in response.wsgi_request._messages]
    assert f"Deleted 2 evaluation(s): #{done}, #{failed}." in said
    assert any(f"#{running} is running; cancel it first" in m for m in said)
    assert "Not deleted: #999999: not found" in said


def test_ticked_runs_are_deleted_together_and_a_running_one_stays(
    client, member, viewer, team, tiny_registered_model, tiny_version
):
    from apps.datasets.services import dataset_version_pairs_from_qrels
    from apps.runs.training import training_run_create

    pairs = dataset_version_pairs_from_qrels(version=tiny_version, split="test").version

    def make(status):
        run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                                  options={"max_steps": 2}, enqueue=False)  # fmt: skip
        TrainingRun.objects.filter(pk=run.pk).update(status=status)
        return run.pk

    failed, cancelled, running = make("failed"), make("cancelled"), make("running")
    client.force_login(viewer)
    assert client.post("/runs/training/delete/", {"r": [failed]}).status_code == 403
    client.force_login(member)
    listing = client.get("/runs/training/").content.decode()
    assert 'id="delete-selected"' in listing and f'aria-label="Select #{failed}"' in listing
    assert f'aria-label="Select #{running}"' not in listing  # a running one cannot be ticked
    response = client.post("/runs/training/delete/", {"r": [failed, cancelled, running]},
                           HTTP_HX_REQUEST="true")  # fmt: skip
    assert response.status_code == 204 and response["HX-Redirect"] == "/runs/training/"
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [running]
    said = [str(m) for m in response.wsgi_request._messages]
    assert f"Deleted 2 run(s): #{failed}, #{cancelled}." in said
    assert any(m.startswith("Not deleted: ") for m in said)
