"""A run's estimate needs how many hard negatives the training rows have (issue 14): the counts
are kept on the version when it is written, so a preview or a start never reads the rows (and
their negatives' texts) again."""

from __future__ import annotations

import json
import random

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.datasets.models import DatasetVersion
from apps.datasets.services import dataset_import_training
from workers.common.estimate import default_negatives, default_negatives_of

# Rows with 3, 3, 3, 3, 3, 3, 3, 3, 2 and 0 negatives: 90 % of the rows have at least 2.
NEGATIVES = [3] * 8 + [2, 0]
OPTIONS = {"max_steps": 2, "batch_size": 4}


def _mined(team, tmp_path) -> DatasetVersion:
    path = tmp_path / "mined.jsonl"
    with open(path, "w") as fh:
        for i, k in enumerate(NEGATIVES):
            row = {"anchor": f"question {i}", "positive": f"answer {i}"}
            row.update((f"negative_{j + 1}", f"wrong answer {i}.{j}") for j in range(k))
            fh.write(json.dumps(row) + "\n")
    return dataset_import_training(team=team, name="mined", path=path).version


def _row_reads(queries) -> list[str]:
    return [q["sql"] for q in queries if "datasets_trainingrow" in q["sql"]]


def test_the_counts_are_kept_on_the_version_and_the_preview_reads_no_row(
    client, member, team, tiny_registered_model, tmp_path
):
    version = _mined(team, tmp_path)
    assert version.stats["negatives_per_row"] == {"3": 8, "2": 1, "0": 1}
    client.force_login(member)
    form = {"base_model": tiny_registered_model.pk, "train_version": version.pk,
            "loss": "mnrl", "method": "full", "batch_size": 4, "max_steps": 2,
            "precision": "fp32"}  # fmt: skip
    with CaptureQueriesContext(connection) as queries:
        response = client.post(reverse("runs:training_new"), {**form, "action": "preview"},
                               HTTP_HX_REQUEST="true")  # fmt: skip
    assert response.status_code == 200 and 'id="memory"' in response.content.decode()
    assert _row_reads(queries.captured_queries) == []
    from apps.runs.training import training_run_preview

    preview = training_run_preview(team=team, base_model=tiny_registered_model,
                                   train_version=version, options=OPTIONS)  # fmt: skip
    # Two negatives per row (90 % of the rows have them): 4 × (anchor, positive, 2) texts.
    assert preview["estimate"]["texts_per_step"] == 4 * (2 + 2)


def test_a_version_written_before_the_counts_is_counted_by_the_database(
    team, tiny_registered_model, tmp_path
):
    from apps.runs.training import training_run_preview

    version = _mined(team, tmp_path)
    DatasetVersion.objects.filter(pk=version.pk).update(stats={})
    version.refresh_from_db()
    with CaptureQueriesContext(connection) as queries:
        preview = training_run_preview(team=team, base_model=tiny_registered_model,
                                       train_version=version, options=OPTIONS)  # fmt: skip
    assert preview["estimate"]["texts_per_step"] == 4 * (2 + 2)
    reads = _row_reads(queries.captured_queries)
    # One aggregate: lengths counted in SQL, no negatives' texts sent to the web process.
    assert len(reads) == 1 and "ARRAY_LENGTH" in reads[0].upper() and "COUNT(" in reads[0].upper()


def test_the_histogram_rule_is_the_trainers_rule():
    rng = random.Random(0)
    for _ in range(500):
        counts = [rng.choice([0, 1, 1, 2, 3, 5, 5, 5]) for _ in range(rng.randint(1, 40))]
        histogram: dict[str, int] = {}
        for k in counts:
            histogram[str(k)] = histogram.get(str(k), 0) + 1
        assert default_negatives_of(histogram) == default_negatives(counts)
    assert default_negatives_of({}) == default_negatives([]) == 0
