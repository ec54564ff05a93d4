"""A full artifacts volume fails a job with one plain sentence and leaves no partial file.

The jobs run in this process through the worker's own task code; the disk fills up at the
lowest level the writers reach from Python (``open``), so every layer above it is the real one.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from django.conf import settings

from apps.runs.models import Evaluation
from tests.workers.ml.disk_full import fill_disk_on
from workers.tasks.runtime import job_claim, job_run

pytestmark = pytest.mark.django_db

DISK_FULL = "No space left on the artifacts volume; free space or enlarge it, then re-run."
ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(])/\w")


def test_an_evaluation_on_a_full_disk_fails_plainly_and_leaves_no_run_file(evaluation, monkeypatch):
    from workers.tasks.evaluation import evaluate

    hits = fill_disk_on(monkeypatch, "run.trec", room=200)
    evaluate.run(evaluation.pk)
    evaluation.refresh_from_db()
    assert hits, "the run file was never opened"
    assert evaluation.status == "failed"
    assert evaluation.human_error == DISK_FULL
    assert not ABSOLUTE_PATH.search(evaluation.human_error)
    assert "No space left on device" in evaluation.error  # the log keeps the detail
    folder = Path(settings.ARTIFACTS_ROOT) / "evaluations" / str(evaluation.pk)
    assert list(folder.iterdir()) == []  # no run.trec, no temporary file
    assert evaluation.run_file == "" and not evaluation.results.exists()


def test_an_index_build_on_a_full_disk_fails_plainly_and_leaves_no_index(
    team, tiny_registered_model, tiny_version, monkeypatch
):
    from apps.indexes.services import index_build_create, index_folder
    from workers.tasks.indexing import build_index

    build = index_build_create(team=team, model=tiny_registered_model,
                               dataset_version=tiny_version, index_type="hnsw",
                               enqueue=False)  # fmt: skip
    hits = fill_disk_on(monkeypatch, "index.faiss", room=100)
    build_index.run(build.pk)
    build.refresh_from_db()
    assert hits, "the index file was never opened"
    assert build.status == "failed"
    assert build.human_error == DISK_FULL
    assert "No space left on device" in build.error
    assert not index_folder(build=build).exists()
    assert list(index_folder(build=build).parent.iterdir()) == []  # no temporary folder either


def test_a_failing_encoder_json_removes_the_whole_index(team, tiny_registered_model,
                                                        tiny_version, monkeypatch):  # fmt: skip
    from apps.indexes.services import index_build_create, index_folder
    from workers.tasks.indexing import build_index

    build = index_build_create(team=team, model=tiny_registered_model,
                               dataset_version=tiny_version, index_type="flat",
                               enqueue=False)  # fmt: skip
    fill_disk_on(monkeypatch, "encoder.json", room=10)
    build_index.run(build.pk)
    build.refresh_from_db()
    assert build.status == "failed" and build.human_error == DISK_FULL
    assert list(index_folder(build=build).parent.iterdir()) == []


@pytest.mark.parametrize(
    ("exc", "human"),
    [
        (
            RuntimeError(
                "Error in void faiss::write_index(...) at /project/faiss/impl/index_write.cpp:"
                "600: write error in /srv/a/indexes/3/index.faiss: 0 != 4 (No space left on device)"
            ),
            DISK_FULL,
        ),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/srv/a/evaluations/3/run.trec"), DISK_FULL),
        (
            PermissionError(errno.EACCES, "Permission denied", "/srv/a/evaluations/3/run.trec"),
            "Could not read or write an artifact file (Permission denied).",
        ),
        (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory"),
    ],
)
def test_job_run_maps_file_errors_to_a_message_without_server_paths(evaluation, exc, human):
    job = job_claim(model=Evaluation, pk=evaluation.pk)

    def work(report):
        raise exc

    job_run(job=job, work=work)
    job.refresh_from_db()
    assert job.status == "failed" and job.human_error == human
    assert not ABSOLUTE_PATH.search(job.human_error)
    assert str(exc).splitlines()[0][:40] in job.error  # the detail stays in the log
