"""The real thing through the product path: SciFact from demo/, all-MiniLM-L6-v2 from its PyPI
package, evaluated on the test split. About 6 minutes on 2 CPU cores: `./bin/test -m slow`."""

import io
import json

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_demo_evaluation_reproduces_the_reference_figures(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = io.StringIO()
    call_command("demo", stdout=out)
    demo = json.loads(out.getvalue())
    out = io.StringIO()
    call_command(
        "evaluate",
        "--model",
        str(demo["model"]),
        "--dataset-version",
        str(demo["dataset_version"]),
        "--split",
        "test",
        "--sync",
        stdout=out,
    )
    result = json.loads(out.getvalue())
    metrics = result["metrics"]
    # ../shared/data/README.md: nDCG@10 0.6451, MRR@10 0.6047, Recall@100 0.9250 (MTEB: 64.51).
    assert metrics["ndcg@10"] == pytest.approx(0.6451, abs=0.005)
    assert metrics["mrr@10"] == pytest.approx(0.6047, abs=0.005)
    assert metrics["recall@100"] == pytest.approx(0.9250, abs=0.005)
