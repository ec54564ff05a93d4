"""Fine-tuning runs through the product: the form and its estimate, a run in the worker's own
code path (child process and all), the registered result, cancel and resume on a real worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.urls import reverse

from apps.datasets.services import dataset_version_pairs_from_qrels
from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation, TrainingRun
from apps.runs.training import training_run_create
from workers.tasks.runtime import job_claim, job_run, jobs_reap
from workers.tasks.training import training_run_execute

FAST = {"batch_size": 2, "logging_steps": 1, "save_steps": 2, "warmup_ratio": 0.0}


@pytest.fixture
def pairs(tiny_version):
    return dataset_version_pairs_from_qrels(version=tiny_version, split="test").version


def run_sync(run: TrainingRun) -> TrainingRun:
    claimed = job_claim(model=TrainingRun, pk=run.pk)
    job_run(job=claimed, work=lambda report: training_run_execute(run=claimed, report=report))
    claimed.refresh_from_db()
    return claimed


def test_form_preview_then_start_then_result_is_a_registered_model(
    client, member, team, tiny_registered_model, tiny_version, pairs,
    django_capture_on_commit_callbacks, monkeypatch,
):  # fmt: skip
    monkeypatch.setattr("workers.tasks.training.train.apply_async", lambda *a, **k: None)
    monkeypatch.setattr("workers.tasks.evaluation.evaluate.apply_async", lambda *a, **k: None)
    client.force_login(member)
    form = {
        "base_model": tiny_registered_model.pk, "train_version": pairs.pk,
        "eval_version": tiny_version.pk, "eval_split": "test", "method": "lora", "lora_r": 4,
        "lora_alpha": 8, "loss": "mnrl", "batch_size": 2, "max_steps": 4, "precision": "fp32",
        "save_steps": 2, "eval_steps": 2, "no_duplicates": "on", "merge_lora": "on",
    }  # fmt: skip
    preview = client.post(reverse("runs:training_new"), {**form, "action": "preview"},
                          HTTP_HX_REQUEST="true").content.decode()  # fmt: skip
    assert 'id="trainable"' in preview and 'id="memory"' in preview and "4 steps" in preview
    assert "no finished run of this team to measure from yet" in preview
    assert not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("runs:training_new"), {**form, "action": "start"})
    run = TrainingRun.objects.get()
    assert response.url == reverse("runs:training", args=[run.pk])
    assert run.config["method"] == "lora" and run.estimate["total_steps"] == 4
    run = run_sync(run)
    assert run.status == "succeeded", (run.human_error, run.log_tail[-2000:])
    assert run.progress_done == 4 and any("loss" in p for p in run.log)
    assert [p["step"] for p in run.log if "eval" in p] == [2, 4]  # eval_steps=2
    model = run.result_model
    assert model.kind == EmbeddingModel.Kind.FINETUNED and model.parent == tiny_registered_model
    assert Path(model.path, "README.md").exists()
    assert run.result["trainable_parameters"] < run.result["total_parameters"]
    assert run.evaluation.model == model and run.evaluation.status == "pending"
    page = client.get(reverse("runs:training", args=[run.pk])).content.decode()
    assert 'id="loss-chart"' in page and model.name in page
    # One trainable-parameter count once the run has measured it (the estimate's goes away).
    assert f"{run.result['trainable_parameters']:,} of" in page
    assert "trainable parameters" not in page
    lineage = client.get(reverse("registry:detail", args=[model.pk])).content.decode()
    assert 'id="made-by"' in lineage and tiny_registered_model.name in lineage
    # The next preview times itself from this run's measured speed, scaled by the work a step.
    per_step = run.result["train_seconds"] / run.result["steps"]
    bigger = {**form, "batch_size": 4, "action": "preview"}
    again = client.post(reverse("runs:training_new"), bigger, HTTP_HX_REQUEST="true")
    again = again.content.decode()
    assert f"run #{run.pk}</a>'s measured speed with this base model" in again
    texts = run.estimate["texts_per_step"]
    from apps.runs.training import training_time_estimate

    timed = training_time_estimate(
        team=run.team, base_model=tiny_registered_model,
        config=type("C", (), {"method": "lora", "max_seq_length": run.config["max_seq_length"]}),
        estimate={"texts_per_step": 2 * texts, "total_steps": 10},
    )  # fmt: skip
    assert timed["from_run"] == run and timed["seconds"] == pytest.approx(per_step * 2 * 10)
    zipped = client.get(reverse("runs:training_zip", args=[run.pk]))
    assert zipped.status_code == 200 and b"".join(zipped.streaming_content)[:2] == b"PK"


def test_bad_config_and_bad_data_are_refused_with_a_reason(
    team, tiny_registered_model, tiny_version, pairs
):
    from apps.runs.training import TrainingError

    with pytest.raises(TrainingError, match="batch_size"):
        training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                            options={"batch_size": 0}, enqueue=False)  # fmt: skip
    with pytest.raises(TrainingError, match="not a training set"):
        training_run_create(team=team, base_model=tiny_registered_model,
                            train_version=tiny_version, enqueue=False)  # fmt: skip


def test_a_run_never_takes_over_a_folder_left_by_another_run_of_its_number(
    settings, team, tiny_registered_model, pairs
):
    # A database started afresh over kept artifacts gives out run numbers again: the new run
    # must not resume from the old run's checkpoints or train on its stale rows file.
    from workers.common.checkpoints import last_checkpoint

    first = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                                options={"max_steps": 2}, enqueue=False)  # fmt: skip
    stale = Path(settings.ARTIFACTS_ROOT) / "runs" / str(first.pk + 1)
    (stale / "checkpoint-2").mkdir(parents=True)
    (stale / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (stale / "train.jsonl").write_text('{"anchor": "old", "positive": "old", "negatives": []}\n')
    second = training_run_create(team=team, base_model=tiny_registered_model, enqueue=False,
                                 train_version=pairs, options={"max_steps": 3})  # fmt: skip
    assert second.pk == first.pk + 1
    assert Path(second.output_dir).name.startswith(f"{second.pk}-")
    assert not Path(second.output_dir).exists()
    assert last_checkpoint(second.output_dir) is None
    assert Path(first.output_dir) != Path(second.output_dir)


def test_another_team_sees_no_run(client, outsider, team, tiny_registered_model, pairs):
    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              options={"max_steps": 2}, enqueue=False)  # fmt: skip
    client.force_login(outsider)
    for name in ("runs:training", "runs:training_zip"):
        assert client.get(reverse(name, args=[run.pk])).status_code == 404
    assert client.post(reverse("runs:training_cancel", args=[run.pk])).status_code == 404


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.worker
def test_cancel_on_a_real_worker_stops_within_5_seconds(
    celery_worker_process, team, tiny_registered_model, pairs
):
    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              options={**FAST, "max_steps": 100_000})  # fmt: skip
    _wait(lambda: TrainingRun.objects.filter(pk=run.pk, progress_done__gte=2).exists(), 120,
          "training steps")  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    asked = time.monotonic()
    _wait(lambda: TrainingRun.objects.filter(pk=run.pk, status="cancelled").exists(), 10,
          "the cancel")  # fmt: skip
    assert time.monotonic() - asked < 5.0
    # No training process is left behind.
    spec = str(Path(run.output_dir) / "job.json")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert spec not in cmd, "the training child survived the cancel"


@pytest.mark.worker
def test_worker_killed_mid_run_resumes_from_checkpoint_to_the_same_total(
    celery_worker_process, team, tiny_registered_model, pairs, settings
):
    from tests.support.worker import start_worker

    total = 40
    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              options={**FAST, "max_steps": total, "save_steps": 5})  # fmt: skip
    _wait(lambda: list(Path(run.output_dir, "checkpoints").glob("checkpoint-*/trainer_state.json")),
          120, "a complete checkpoint")  # fmt: skip
    os.killpg(celery_worker_process.pid, signal.SIGKILL)  # the worker and its pool, at once
    celery_worker_process.wait(timeout=10)
    time.sleep(2.5)
    assert jobs_reap(stale_after=2) == 1
    assert TrainingRun.objects.get(pk=run.pk).status == "pending"
    replacement = start_worker(celery_worker_process.env, celery_worker_process.log)
    try:
        _wait(lambda: TrainingRun.objects.filter(pk=run.pk, status__in=["succeeded", "failed"])
              .exists(), 240, "the resumed run")  # fmt: skip
    finally:
        from tests.support.worker import stop_worker

        stop_worker(replacement)
    run.refresh_from_db()
    assert run.status == "succeeded", (run.human_error, run.log_tail[-2000:])
    assert run.attempts == 1 and "checkpoint-" in run.resumed_from
    assert run.result["steps"] == total and run.progress_done == total
    assert Evaluation.objects.count() == 0  # no eval data chosen


def test_train_command_sync_prints_run_model_and_metrics(
    team, tiny_registered_model, tiny_version, pairs, tmp_path
):
    import json as _json

    from tests.test_commands import run as run_command

    config = tmp_path / "run.json"
    config.write_text(_json.dumps({
        "base_model": tiny_registered_model.pk, "train_version": pairs.pk,
        "eval_version": tiny_version.pk, "eval_split": "test",
        "options": {"loss": "matryoshka", "batch_size": 2, "max_steps": 2, "save_steps": 1},
    }))  # fmt: skip
    code, out, err = run_command("train", "--config", str(config), "--sync")
    assert code == 0, err
    assert out["status"] == "succeeded" and out["steps"] == 2 and out["model"]
    assert "ndcg@10" in out["metrics"]
    run = TrainingRun.objects.get(pk=out["run"])
    # The model is named after the run (what the user called it), unique by the run's number.
    assert EmbeddingModel.objects.get(pk=out["model"]).name == f"{run.name} (run {run.pk})"
    bad = tmp_path / "bad.json"
    bad.write_text('{"base_model": 1,\n "train_version": }')
    code, _, err = run_command("train", "--config", str(bad))
    assert code == 2 and f"{bad}:2:" in err


def test_training_runs_api(team, member, viewer, outsider, other_team, tiny_registered_model,
                           pairs, monkeypatch):  # fmt: skip
    from django.test import Client

    from apps.accounts.services import api_token_create

    monkeypatch.setattr("workers.tasks.training.train.apply_async", lambda *a, **k: None)
    client = Client(enforce_csrf_checks=True)
    _, raw = api_token_create(team=team, user=member, name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}", "content_type": "application/json"}
    body = {"base_model": tiny_registered_model.pk, "train_version": pairs.pk,
            "options": {"method": "lora", "max_steps": 3}}  # fmt: skip
    created = client.post("/api/v1/training-runs", body, **auth)
    assert created.status_code == 202, created.content
    run_id = created.json()["id"]
    assert created["Location"] == f"/api/v1/training-runs/{run_id}"
    assert created.json()["estimate"]["total_steps"] == 3
    bad = client.post("/api/v1/training-runs", {**body, "options": {"loss": "nope"}}, **auth)
    assert bad.status_code == 422 and "loss" in bad.json()["error"]
    assert client.get(f"/api/v1/training-runs/{run_id}", **auth).json()["status"] == "pending"
    cancelled = client.post(f"/api/v1/training-runs/{run_id}/cancel", **auth)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    _, ro = api_token_create(team=team, user=viewer, name="ro")
    assert client.post("/api/v1/training-runs", body, HTTP_AUTHORIZATION=f"Bearer {ro}",
                       content_type="application/json").status_code == 403  # fmt: skip
    _, foreign = api_token_create(team=other_team, user=outsider, name="x")
    assert client.get(f"/api/v1/training-runs/{run_id}",
                      HTTP_AUTHORIZATION=f"Bearer {foreign}").status_code == 404  # fmt: skip


def test_an_unmerged_lora_run_registers_and_encodes(team, tiny_registered_model, pairs):
    from workers.ml.encode import encode_texts, load_encoder

    run = training_run_create(team=team, base_model=tiny_registered_model, train_version=pairs,
                              options={**FAST, "method": "lora", "merge_lora": False,
                                       "max_steps": 2}, enqueue=False)  # fmt: skip
    run = run_sync(run)
    assert run.status == "succeeded", (run.human_error, run.log_tail[-2000:])
    model = run.result_model
    assert model.dimension == tiny_registered_model.dimension and run.result["adapter_dir"]
    encoder = load_encoder(path=model.path, layout=model.layout, pooling=model.pooling,
                           normalize=True, max_seq_length=32, device="cpu")  # fmt: skip
    assert encode_texts(encoder=encoder, texts=["cats"], normalize=True).shape == (1, 64)
