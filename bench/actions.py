"""Benchmark of the POSTs that start work (issue 14): each must answer in under 300 ms.

Per action, the median (and the first, cold) time of N requests through Django's test Client,
in a web-like process that never imports torch, against the real PostgreSQL and a real Redis
broker (``send_task``/``apply_async`` really publish; no worker runs, the queued rows just wait):

- evaluation start (runs:evaluation_start), training start and preview (runs:training_new),
  resume of a failed run (runs:training_resume), semantic dedup start
  (datasets:version_curate), deploy of a built index (indexes:deploy), and a GET of the
  comparison page opened for the first time (its statistics not cached yet).

    .venv/bin/python -m bench.actions               # N = 15 per action
    .venv/bin/python -m bench.actions -n 30 --profile deploy
    .venv/bin/python -m bench.actions --only deploy --hung-search

The data (SciFact with the tests' tiny random BERT, two finished evaluations, a built flat index,
a mined-like training set of 20,000 rows with five abstracts as hard negatives each, and a failed
run) is made first by a child process, which imports torch; the measuring process then starts
from a fresh interpreter, as a web worker would. ``--hung-search`` points the web at a search
process that accepts connections and never answers (one busy loading a large index).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, recreate_database

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_actions"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
TARGET_MS = 300.0


def _env(args, tmp: Path) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "embedhub.settings",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        # The cache in another Redis database, so clearing it (a "first open") keeps the queue.
        "CACHE_REDIS_URL": args.redis_url.rsplit("/", 1)[0] + "/" + str(args.cache_db),
        "VAR_DIR": str(tmp / "var"),
        "ARTIFACTS_ROOT": str(tmp / "artifacts"),
        # Where the web looks for the search process: nothing listens there (a closed port)
        # unless SEARCH_URL says otherwise or --hung-search.
        "SEARCH_URL": os.environ.get("SEARCH_URL", "http://127.0.0.1:8001"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Every POST of a series is a new start, never "the job you just made".
        "JOB_DEDUPE_WINDOW_S": "0",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "testserver,localhost",
    }


# --- the data (child process: imports torch) --------------------------------------------------


def child_setup(args) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from apps.accounts.models import Membership, Role, Team
    from apps.core.models import JobStatus
    from apps.datasets.services import (
        dataset_import_beir,
        dataset_import_training,
        dataset_version_pairs_from_qrels,
    )
    from apps.indexes.models import IndexBuild
    from apps.indexes.services import index_build_create
    from apps.registry.services import embedding_model_register
    from apps.runs.models import Evaluation, TrainingRun
    from apps.runs.services import evaluation_create
    from apps.runs.training import training_run_create
    from tests.support.tiny_model import build_tiny_model
    from workers.tasks.evaluation import evaluate
    from workers.tasks.indexing import build_index

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="bench", slug="bench")
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bench", password="bench-actions")
    Membership.objects.create(team=team, user=user, role=Role.ADMIN)
    version = dataset_import_beir(team=team, name="scifact", path=args.data).version
    sentences = []
    with open(Path(args.data) / "corpus.jsonl") as fh:
        for i, line in enumerate(fh):
            if i >= 2000:
                break
            row = json.loads(line)
            sentences.append(f"{row.get('title', '')} {row['text']}")
    folder = build_tiny_model(Path(os.environ["VAR_DIR"]) / "tiny-model", sentences=sentences)
    model = embedding_model_register(team=team, name="tiny", path=str(folder))
    log(f"data: version #{version.pk} ({version.document_count} documents), model #{model.pk}")
    done = []
    for method in ("dense", "bm25"):
        e = evaluation_create(team=team, model=model if method == "dense" else None,
                              dataset_version=version, split="test", method=method,
                              enqueue=False)  # fmt: skip
        evaluate(e.pk)
        e = Evaluation.objects.get(pk=e.pk)
        assert e.status == JobStatus.SUCCEEDED, e.error
        done.append(e.pk)
    log(f"evaluations {done} finished")
    build = index_build_create(team=team, model=model, dataset_version=version,
                               index_type="flat", enqueue=False)  # fmt: skip
    build_index.run(build.pk)
    build = IndexBuild.objects.get(pk=build.pk)
    assert build.status == JobStatus.SUCCEEDED, build.error
    log(f"index #{build.pk} built")
    pairs = dataset_version_pairs_from_qrels(version=version, split="train").version
    # A mined-like training set: each train judgement's query and document with five other
    # abstracts as hard negatives, repeated to ROWS rows (megabytes of negatives' texts).
    texts = [json.loads(line) for line in open(Path(args.data) / "corpus.jsonl")]
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in texts]
    queries = {}
    for line in open(Path(args.data) / "queries.jsonl"):
        q = json.loads(line)
        queries[q["_id"]] = q["text"]
    by_id = {json.loads(line)["_id"]: i for i, line in
             enumerate(open(Path(args.data) / "corpus.jsonl"))}  # fmt: skip
    judged = [line.split("\t")[:2] for line in
              open(Path(args.data) / "qrels" / "train.tsv").read().splitlines()[1:]]  # fmt: skip
    mined = Path(os.environ["VAR_DIR"]) / "mined.jsonl"
    with open(mined, "w") as fh:
        for i in range(args.training_rows):
            qid, did = judged[i % len(judged)]
            negatives = [texts[(by_id[did] + 1 + 97 * j + i) % len(texts)] for j in range(5)]
            row = {"anchor": f"{queries[qid]} ({i})", "positive": texts[by_id[did]]}
            row.update((f"negative_{j + 1}", text) for j, text in enumerate(negatives))
            fh.write(json.dumps(row) + "\n")
    pairs = dataset_import_training(team=team, name="mined", path=mined).version
    log(f"training set #{pairs.pk}: {pairs.training_count} rows with 5 negatives each")
    run = training_run_create(team=team, base_model=model, train_version=pairs,
                              options={"max_steps": 10}, enqueue=False)  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.FAILED)
    return {
        "user": user.pk,
        "team": team.pk,
        "version": version.pk,
        "model": model.pk,
        "evaluations": done,
        "index": build.pk,
        "pairs": pairs.pk,
        "run": run.pk,
    }


# --- the measurements (this process: a web worker, no torch) ----------------------------------


def _training_form(team, ids: dict) -> dict:
    """The training page's form as a browser posts it with its defaults."""
    from apps.runs.forms import TrainingRunForm

    form = TrainingRunForm(team=team)
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else value
    data.update(base_model=ids["model"], train_version=ids["pairs"], max_steps=10)
    return data


def measure(args, ids: dict) -> list[dict]:
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.core.cache import cache
    from django.test import Client
    from django.urls import reverse

    from apps.accounts.models import Team
    from apps.core.models import JobStatus
    from apps.datasets.models import CurationJob
    from apps.indexes.models import Deployment
    from apps.runs.models import Evaluation, TrainingRun

    team = Team.objects.get(pk=ids["team"])
    client = Client()
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(pk=ids["user"]))
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    evaluations = set(ids["evaluations"])
    training = _training_form(team, ids)

    def after_evaluation():
        Evaluation.objects.exclude(pk__in=evaluations).delete()

    def after_training():
        TrainingRun.objects.exclude(pk=ids["run"]).delete()

    def after_resume():
        TrainingRun.objects.filter(pk=ids["run"]).update(status=JobStatus.FAILED)

    def after_dedup():
        CurationJob.objects.all().delete()

    def after_deploy():
        Deployment.objects.all().delete()

    def before_compare():
        cache.clear()  # the comparison's statistics are cached: every open is a first one

    counter = iter(range(10**6))
    compare_url = reverse("runs:compare") + "?" + "&".join(f"e={pk}" for pk in ids["evaluations"])
    actions = [
        ("evaluation start", "POST",
         lambda: reverse("runs:evaluation_start", args=[ids["version"]]),
         lambda: {"model": ids["model"], "split": "train"}, None, after_evaluation),
        ("training start", "POST", lambda: reverse("runs:training_new"),
         lambda: {**training, "action": "start"}, None, after_training),
        ("training preview", "POST", lambda: reverse("runs:training_new"),
         lambda: {**training, "action": "preview"}, None, None),
        ("training resume", "POST", lambda: reverse("runs:training_resume", args=[ids["run"]]),
         dict, None, after_resume),
        ("dedup start", "POST",
         lambda: reverse("datasets:version_curate", args=[ids["version"], "semdedup"]),
         lambda: {"model": ids["model"]}, None, after_dedup),
        ("deploy", "POST", lambda: reverse("indexes:deploy", args=[ids["index"]]),
         lambda: {"name": f"bench-{next(counter)}"}, None, after_deploy),
        ("compare first open", "GET", lambda: compare_url, None, before_compare, None),
    ]  # fmt: skip
    chosen = [a for a in actions if not args.only or any(o in a[0] for o in args.only)]
    rows = []
    for label, method, url, data, before, after in chosen:
        times, statuses = [], set()
        queued_before = sum(broker.llen(q) for q in ("default", "index", "gpu", "ingest"))
        for i in range(args.n + 1):  # the first, cold one is reported apart
            if before:
                before()
            path = url()
            t0 = time.perf_counter()
            if method == "GET":
                response = client.get(path)
            else:
                response = client.post(path, data())
            ms = (time.perf_counter() - t0) * 1000
            statuses.add(response.status_code)
            if i == 0:
                first = ms
            else:
                times.append(ms)
            if response.status_code >= 400:
                raise SystemExit(f"{label}: {response.status_code}\n{response.content[:2000]}")
            if after:
                after()
        queued = sum(broker.llen(q) for q in ("default", "index", "gpu", "ingest")) - queued_before
        rows.append({"action": label, "first_ms": first, "median_ms": statistics.median(times),
                     "max_ms": max(times), "queued": queued})  # fmt: skip
        log(f"{label}: median {rows[-1]['median_ms']:.0f} ms")
    if args.profile:
        profile(args, chosen, client)
    broker.flushdb()
    return rows


def profile(args, chosen, client) -> None:
    import cProfile
    import pstats

    for label, method, url, data, before, after in chosen:
        if not any(p in label for p in args.profile):
            continue
        if before:
            before()
        profiler = cProfile.Profile()
        profiler.enable()
        if method == "GET":
            client.get(url())
        else:
            client.post(url(), data())
        profiler.disable()
        if after:
            after()
        print(f"\n--- profile: {label} ---")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=15, help="requests per action (after a first)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="the broker (emptied)")
    parser.add_argument("--cache-db", type=int, default=13, help="Redis database of the cache")
    parser.add_argument("--only", nargs="*", help="actions whose name holds one of these")
    parser.add_argument("--profile", nargs="*", help="cProfile one more request of these")
    parser.add_argument(
        "--training-rows",
        type=int,
        default=20_000,
        help="rows of the mined-like training set (5 negatives each)",
    )
    parser.add_argument(
        "--hung-search",
        action="store_true",
        help="a search process that accepts connections and never answers",
    )
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")
    parser.add_argument("--child", choices=("setup", "measure"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "setup":
        print(json.dumps(child_setup(args)))
        return
    if args.child == "measure":
        ids = json.loads(os.environ["BENCH_IDS"])
        print(json.dumps(measure(args, ids)))
        return
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="bench-actions-"))
    tmp.mkdir(parents=True, exist_ok=True)
    env = _env(args, tmp)
    saved = tmp / "ids.json"
    argv = [sys.executable, "-m", "bench.actions", *sys.argv[1:]]
    if args.workdir and saved.exists():
        ids = json.loads(saved.read_text())
        log(f"reusing the data in {tmp}")
    else:
        recreate_database(args.database_url)
        log("making the data (tiny model, SciFact, evaluations, an index) …")
        out = subprocess.run([*argv, "--child", "setup"], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout  # fmt: skip
        ids = json.loads(out.strip().splitlines()[-1])
        saved.write_text(json.dumps(ids))
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    if args.hung_search:
        # Busy loading a large index or a model: the connection is accepted, no answer comes.
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        env["SEARCH_URL"] = f"http://127.0.0.1:{hung.getsockname()[1]}"
        log(f"search process: {env['SEARCH_URL']}, never answering")
    out = subprocess.run([*argv, "--child", "measure"], env={**env, "BENCH_IDS": json.dumps(ids)},
                         check=True, stdout=subprocess.PIPE, text=True).stdout  # fmt: skip
    lines = out.strip().splitlines()
    rows = json.loads(lines[-1])
    print("\n".join(lines[:-1]))
    print(f"\nActions, N = {args.n} each (after a first, cold request), target {TARGET_MS:.0f} ms")
    print(f"{'action':<22}{'first ms':>10}{'median ms':>11}{'max ms':>9}{'ratio':>8}  queued")
    for r in rows:
        print(f"{r['action']:<22}{r['first_ms']:>10.0f}{r['median_ms']:>11.0f}"
              f"{r['max_ms']:>9.0f}{r['median_ms'] / TARGET_MS:>8.2f}  {r['queued']}")  # fmt: skip
    worst = max(r["median_ms"] for r in rows)
    print(f"\nslowest median / target = {worst / TARGET_MS:.2f} "
          f"({'met' if worst < TARGET_MS else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
