"""Benchmark of the sharded corpus encode (issue 13): one evaluation of all-MiniLM-L6-v2 on a
synthetic corpus, its documents encoded in shards by 1, then 2, real Celery worker processes,
against bare sentence-transformers encoding the same texts in one process, in one run.

    .venv/bin/python -m bench.shard                        # 10,000 documents, shards of 1,024
    .venv/bin/python -m bench.shard --docs 100000 --workers 1,2

Each EmbedHub run starts its workers fresh (``celery worker -Q index``, concurrency 1, each its
own node name) on an empty embedding cache, enqueues the evaluation as the page does, and
times the documents' encode (the row's ``encode_documents_s``) and the whole job. It prints
documents/s, the ratio to bare, which worker encoded how many shards, and whether the runs'
merged vectors are the same bytes. On one machine the second worker shares the same cores, so
it shows the mechanism, not a speed-up: that needs a second machine sharing ARTIFACTS_ROOT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.search import (
    MODEL_PACKAGE,
    ROOT,
    generate_corpus,
    loadavg,
    log,
    model_path,
    recreate_database,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_shard"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
DEFAULT_WORKDIR = ROOT / "var" / "bench-shard"
CELERY = str(Path(sys.executable).with_name("celery"))


def texts_of(folder: Path) -> list[str]:
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [(r.get("title", "") + " " + r["text"]).strip() for r in rows]


def bare_encode(texts: list[str], max_seq_length: int) -> tuple[float, object]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(), device="cpu", local_files_only=True)
    model.max_seq_length = max_seq_length
    model.encode(texts[:32], batch_size=32, show_progress_bar=False)
    t0 = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - t0, vectors


def run_workers(args, env: dict, count: int, team, model, version) -> dict:
    """``count`` fresh workers, one evaluation enqueued, timed until it ends."""
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create

    artifacts = args.workdir / f"artifacts-{count}"
    shutil.rmtree(artifacts, ignore_errors=True)  # an empty embedding cache
    env = {**env, "ARTIFACTS_ROOT": str(artifacts)}
    os.environ["ARTIFACTS_ROOT"] = str(artifacts)
    from django.conf import settings

    settings.ARTIFACTS_ROOT = str(artifacts)
    logs = []
    procs = []
    for n in range(count):
        path = args.workdir / f"worker-{count}-{n}.log"
        logs.append(path)
        procs.append(subprocess.Popen(
            [CELERY, "-A", "embedhub", "worker", "-Q", "index", "--concurrency", "1",
             "--prefetch-multiplier", "1", "-O", "fair", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "info", "-n", f"w{n}@%h"],
            cwd=ROOT, env=env, stdout=path.open("wb"), stderr=subprocess.STDOUT,
        ))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not all("ready" in p.read_text(errors="replace") for p in logs if p.exists()):
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start:\n" + logs[0].read_text()[-2000:])
            time.sleep(0.5)
        t0 = time.perf_counter()
        evaluation = evaluation_create(team=team, model=model, dataset_version=version,
                                       split="test", precision="fp32")  # fmt: skip
        while True:
            row = Evaluation.objects.get(pk=evaluation.pk)
            if row.status in Evaluation.TERMINAL:
                break
            time.sleep(0.5)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    if row.status != "succeeded":
        raise SystemExit(f"the evaluation on {count} worker(s) failed: {row.human_error}")
    text = "".join(p.read_text(errors="replace") for p in logs)
    by: dict[str, int] = {}
    for worker in re.findall(r"Encoded shard \d+ of run \w+ \(\d+ texts\) in (\S+)", text):
        by[worker] = by.get(worker, 0) + 1
    from workers.tasks.encoding import embedding_cache

    vectors, _ = embedding_cache().get(row.embedding_key)
    return {
        "workers": count,
        "encode_s": row.timings.get("encode_documents_s"),
        "job_s": wall,
        "shards_by_worker": by,
        "ndcg@10": row.metrics.get("ndcg@10"),
        "vectors": vectors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--shard-docs", type=int, default=1024)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log(f"load average {loadavg()}; {os.cpu_count()} cores")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "embedhub.settings",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "VAR_DIR": str(args.workdir / "var"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ENCODE_QUEUE": "index",
        "ENCODE_SHARD_MIN_DOCS": "1",  # every run shards: the mechanism is what is measured
        "ENCODE_SHARD_DOCS": str(args.shard_docs),
        "JOB_PROGRESS_INTERVAL": "1",
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    os.environ.update(env)
    corpus = args.workdir / f"corpus-{args.docs}-s{args.seed}"
    info = generate_corpus(corpus, documents=args.docs, pool=0, seed=args.seed)
    log(f"corpus: {info['documents']:,} documents, {info['words_per_document']:.1f} words each")
    recreate_database(args.database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   env=env, check=True)  # fmt: skip
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    import django

    django.setup()
    import numpy as np
    from django.contrib.auth import get_user_model

    from apps.accounts.services import team_create
    from apps.datasets.services import dataset_import_beir
    from apps.registry.services import embedding_model_register

    user = get_user_model().objects.create_user(username="bench", password=None)
    team = team_create(name="bench", owner=user)
    model = embedding_model_register(team=team, name="all-MiniLM-L6-v2", package=MODEL_PACKAGE)
    model.max_seq_length = args.max_seq_length
    model.save(update_fields=["max_seq_length"])
    version = dataset_import_beir(team=team, name="synthetic", path=corpus).version
    texts = texts_of(corpus)
    log(f"bare sentence-transformers: encoding {len(texts):,} documents")
    bare_s, bare_vectors = bare_encode(texts, args.max_seq_length)
    log(f"bare: {bare_s:.1f} s")
    runs = []
    for count in [int(c) for c in args.workers.split(",")]:
        log(f"EmbedHub on {count} worker(s)")
        runs.append(run_workers(args, env, count, team, model, version))
        log(f"  encode {runs[-1]['encode_s']:.1f} s, shards {runs[-1]['shards_by_worker']}")
    n = len(texts)
    print(f"\n{n:,} synthetic documents ({info['words_per_document']:.1f} words), "
          f"all-MiniLM-L6-v2 fp32, max length {args.max_seq_length}, shards of "
          f"{args.shard_docs:,} (rounded to whole chunks); {os.cpu_count()} cores, load "
          f"average now {loadavg()}")  # fmt: skip
    print(f"{'way':<34}{'encode s':>10}{'docs/s':>9}{'× bare':>8}{'job s':>8}  shards by worker")
    print(f"{'bare sentence-transformers':<34}{bare_s:>10.1f}{n / bare_s:>9.1f}{1.0:>8.2f}")
    for r in runs:
        label = f"EmbedHub, {r['workers']} worker(s)"
        print(f"{label:<34}{r['encode_s']:>10.1f}{n / r['encode_s']:>9.1f}"
              f"{bare_s / r['encode_s']:>8.2f}{r['job_s']:>8.1f}  "
              f"{sorted(r['shards_by_worker'].values(), reverse=True)}")  # fmt: skip
    first = np.asarray(runs[0]["vectors"])
    for r in runs[1:]:
        same = np.array_equal(first, np.asarray(r["vectors"]))
        print(f"merged vectors of {r['workers']} workers == of {runs[0]['workers']}: {same}")
    ids = version.documents.order_by("pk").values_list("doc_id", flat=True)
    aligned = np.asarray(bare_vectors)[[int(i[1:]) for i in ids]]  # "d17" is line 17
    cos = (first * aligned).sum(axis=1)
    print(f"EmbedHub vs bare vectors: min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
