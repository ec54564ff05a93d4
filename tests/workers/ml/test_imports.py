"""workers/ml modules import without Django and without the heavy ML libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "ir_measures", "peft", "django")

CODE = f"""
import json, sys
import workers.ml, workers.common.inspect, workers.ml.metrics, workers.ml.evaluate
import workers.ml.encode, workers.ml.search
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_ml_modules_load_no_heavy_library_at_import_time() -> None:
    # A fresh interpreter: this test process has long since imported torch.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", CODE], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
