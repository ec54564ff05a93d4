"""The web process never imports torch & co (paperless-ngx's test_lazy_imports, in spirit)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

HEAVY = [
    "torch",
    "transformers",
    "sentence_transformers",
    "peft",
    "faiss",
    "ir_measures",
    "bm25s",
    "data_selection",
    "nltk",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "sklearn",
]

CODE = f"""
import json, sys
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns  # load the whole URLconf, every view module
import embedhub.wsgi
from embedhub.celery import app
app.loader.import_default_modules()  # the task modules, as a worker loads them
import workers.tasks.core, workers.tasks.evaluation, workers.serving.server
import workers.tasks.calibration, apps.indexes.calibrations, workers.ml.calibration
import workers.common.inspect
import apps.datasets.curation, workers.tasks.curation
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_web_and_task_modules_do_not_import_ml_libraries():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "embedhub.settings"}
    out = subprocess.run(
        [sys.executable, "-c", CODE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_web_process_warms_scipy_stats_in_the_background():
    """The comparison page's first open does not pay scipy.stats' import (about 1.7 s)."""
    code = (
        "import time, sys, django; django.setup(); import embedhub.wsgi\n"
        "deadline = time.monotonic() + 60\n"
        # Imported through (its last names bound), not merely started.
        "done = lambda: hasattr(sys.modules.get('scipy.stats'), 'permutation_test')\n"
        "while not done() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print(done())"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "embedhub.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
