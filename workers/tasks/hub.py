"""The Hub import job: download a model or dataset repo at one commit into the artifact store,
then register the model (read as a local folder is) or import the dataset through the upload's
own validation (a BEIR collection, or a training set). Imports no ML library."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.registry.models import HubImport, HubPublish
    from workers.tasks.runtime import ProgressReporter


@shared_task(
    name="workers.tasks.hub.hub_import",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def hub_import(job_id: int) -> None:
    """Run one HubImport row. Idempotent: a row that is not pending is left alone."""
    from apps.registry.models import HubImport
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=HubImport, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: hub_import_execute(job=job, report=report))


def hub_token_for(team) -> str | None:
    """The team's own Hub token when it set one (team page), else the workers' HF_TOKEN."""
    import os

    from apps.accounts.services import team_hub_token
    from workers.common.hub import HubError

    try:
        return team_hub_token(team=team) or os.environ.get("HF_TOKEN") or None
    except ValueError as exc:
        raise HubError(str(exc)) from exc


def hub_folder(job: HubImport) -> Path:
    """Where the job's files go: named by the job, never by the repo id."""
    return Path(settings.ARTIFACTS_ROOT) / "hub" / f"{job.kind}s" / str(job.pk)


def hub_import_execute(*, job: HubImport, report: ProgressReporter) -> dict[str, Any]:
    from apps.registry.models import HubImport
    from workers.common.hub import hub_snapshot

    folder = hub_folder(job)
    report("resolving the revision")
    snapshot = hub_snapshot(
        repo_id=job.repo_id,
        repo_type=job.kind,
        revision=job.revision,
        dest=folder / "repo",
        token=hub_token_for(job.team),
        allow_remote_code=settings.HUB_TRUST_REMOTE_CODE,
        max_bytes=settings.HUB_MAX_BYTES,
        progress=lambda done, total: report("downloading", done, total),
        check=report.check,
    )
    HubImport.objects.filter(pk=job.pk).update(sha=snapshot.sha)
    job.sha = snapshot.sha
    result = {"sha": snapshot.sha, "files": len(snapshot.files), "bytes": snapshot.total_bytes}
    try:
        return _register(job=job, snapshot=snapshot, result=result, report=report)
    except BaseException:
        # Nothing registered or imported: the download goes too (a cancel included), unless a
        # model was registered on it just before the stop.
        from apps.registry.models import EmbeddingModel

        if not EmbeddingModel.objects.filter(path=str(snapshot.folder)).exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _register(*, job: HubImport, snapshot, result: dict, report: ProgressReporter) -> dict:
    from apps.registry.models import HubImport
    from workers.common.hub import HubError

    report.check()
    if job.kind == HubImport.Kind.MODEL:
        from apps.registry.services import ModelRegistrationError, embedding_model_register_hub

        report("registering", snapshot.total_bytes, snapshot.total_bytes)  # bytes stay shown
        try:
            model = embedding_model_register_hub(job=job, path=str(snapshot.folder))
        except ModelRegistrationError as exc:
            raise HubError(f"{job.repo_id}: {exc}") from exc
        report("done", snapshot.total_bytes, snapshot.total_bytes)
        return {"result_model": model, "result": result}
    version = _import_dataset(job=job, folder=snapshot.folder, report=report)
    # The rows are in the database now; the repo's files are not needed again.
    shutil.rmtree(hub_folder(job), ignore_errors=True)
    report("done", snapshot.total_bytes, snapshot.total_bytes)
    return {"result_version": version, "result": {**result, "kind": version.kind}}


def _import_dataset(*, job: HubImport, folder: Path, report: ProgressReporter):
    from apps.datasets.beir import BeirError
    from apps.datasets.services import dataset_import_beir, dataset_import_training
    from workers.common.hub import HubError, beir_folder_from_snapshot, training_file_from_snapshot

    source = f"hub:{job.repo_id}@{job.sha}"
    work = hub_folder(job) / "import"
    shutil.rmtree(work, ignore_errors=True)
    report("reading the files")
    try:
        beir = beir_folder_from_snapshot(folder, work / "beir")
        if beir is not None:
            return dataset_import_beir(
                team=job.team, name=job.name, path=beir, report=report, source=source
            ).version
        training = training_file_from_snapshot(folder, work / "training")
        if training is not None:
            return dataset_import_training(
                team=job.team, name=job.name, path=training, report=report, source=source
            ).version
    except BeirError as exc:
        # The upload's messages name the file and line; the folder they sit in is ours.
        problems = [str(p).replace(f"{work}/beir/", "").replace(f"{folder}/", "")
                    for p in exc.problems]  # fmt: skip
        first = problems[0] if problems else str(exc)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise HubError(f"{job.repo_id}: {first}{more}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise HubError(
        f"{job.repo_id} is neither a BEIR collection (corpus, queries and qrels/<split>, as "
        "JSONL, TSV or parquet) nor one training file (anchor, positive, negatives columns)."
    )


@shared_task(
    name="workers.tasks.hub.hub_publish",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def hub_publish(job_id: int) -> None:
    """Run one HubPublish row. Idempotent: a row that is not pending is left alone."""
    from apps.registry.models import HubPublish
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=HubPublish, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: hub_publish_execute(job=job, report=report))


def hub_publish_execute(*, job: HubPublish, report: ProgressReporter) -> dict[str, Any]:
    from apps.accounts.services import team_hub_token
    from apps.core.models import JobStatus
    from apps.registry.cards import model_card_text
    from apps.registry.models import HubPublish
    from workers.common.hub import HubError, hub_push
    from workers.common.store import artifact_ensure

    model = job.model
    card = model_card_text(model=model)
    try:
        # The team's own token only: the workers' HF_TOKEN is the operator's, and one team
        # must not publish under it (imports may read with it).
        token = team_hub_token(team=job.team) or None
    except ValueError as exc:
        raise HubError(str(exc)) from exc
    ours = HubPublish.objects.filter(team=job.team, repo_id=job.repo_id,
                                     status=JobStatus.SUCCEEDED).exclude(pk=job.pk)  # fmt: skip
    report("uploading")
    sha, private = hub_push(
        repo_id=job.repo_id, folder=artifact_ensure(model.path), card=card, private=job.private,
        token=token, may_exist=ours.exists(),
        message=f"EmbedHub: {model.name} ({model.get_kind_display().lower()})",
        progress=lambda done, total: report("uploading", done, total),
    )  # fmt: skip
    report("done")
    return {"sha": sha, "private": private, "result": {"card": card}}
