"""Benchmark of the dataset ingest path (issue 3): synthetic BEIR corpus → IngestJob → PostgreSQL.

For each size N the bench

1. writes a synthetic BEIR folder (``corpus.jsonl`` with ~150-word texts drawn from a seeded
   Zipf vocabulary, ``queries.jsonl``, ``qrels/test.tsv``) to a temporary folder, streaming;
2. runs the *bare library* baseline in a fresh child process: psycopg 3 reads the same
   ``corpus.jsonl`` line by line (``json.loads``, no validation) and COPYs the rows into a
   scratch table built ``LIKE datasets_document INCLUDING ALL`` (same columns, indexes, unique
   constraint, and a deferred foreign key to a one-row parent table), in one transaction;
3. runs the *real job* in another fresh child process that plays the ``ingest`` worker: Django
   with ``DATABASE_URL`` pointing at the bench database, a team and a pending ``IngestJob`` whose
   upload folder holds the files under ``<upload_dir>/incoming/`` (as ``ingest_create`` leaves
   them), then ``workers.tasks.ingest.ingest(job_id)`` called directly: the task code a worker
   runs (claim, validate, load, finish the row);
4. checks the job succeeded and the version holds exactly N documents, and prints docs/s and
   each child's peak RSS (VmHWM of its own address space) with ``ratio = embedhub / bare``
   wall time.

Run from the repository root (PostgreSQL must accept the URL; the database is created if missing
and dropped at the end unless ``--keep``)::

    .venv/bin/python -m bench.ingest --documents 100000 1000000

A child that stops using CPU while the database is idle is reported STALLED with every thread's
stack (this caught a COPY deadlock, since fixed: see bench/README.md). ``--profile`` adds a
cProfile'd EmbedHub run at the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench"
DEFAULT_SIZES = [100_000, 1_000_000]
TARGET_DOCS_PER_S = 20_000
TARGET_PEAK_MB = 500
BARE_TABLE = "bench_bare_document"
BARE_PARENT = "bench_bare_version"
FILES = {"corpus.jsonl": "corpus.jsonl", "queries.jsonl": "queries.jsonl", "test.tsv": "qrels"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB (10^6 bytes): VmHWM, the high-water mark of
    its own address space. Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that across
    fork and exec, so a child started by a parent of 300 MB would report at least 300 MB."""
    return _status_mb("VmHWM")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


# --- synthetic BEIR folder ------------------------------------------------------------------


def generate_beir(folder: Path, *, documents: int, queries: int, seed: int = 0) -> dict:
    """Write a BEIR folder in blocks of 10,000 documents; memory does not grow with N."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, size=n)) for n in rng.integers(2, 11, 30_000)]
    cum = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))  # Zipf-like word frequencies
    cum /= cum[-1]

    def texts(count: int, low: int, high: int):
        """Yield ``count`` texts of ``low``..``high`` words, drawn block by block."""
        block = 10_000
        for start in range(0, count, block):
            lengths = rng.integers(low, high + 1, min(block, count - start)).tolist()
            words = np.searchsorted(cum, rng.random(sum(lengths))).tolist()
            offset = 0
            for n in lengths:
                yield " ".join([vocab[j] for j in words[offset : offset + n]])
                offset += n

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    dumps = json.dumps
    with open(folder / "corpus.jsonl", "w", encoding="utf-8", buffering=1 << 20) as out:
        for i, (text, title) in enumerate(
            zip(texts(documents, 100, 200), texts(documents, 4, 12), strict=True)
        ):
            meta = {"url": f"https://example.org/d/{i}"} if i % 10 == 0 else {}
            row = {"_id": f"doc{i}", "title": title.capitalize(), "text": text, "metadata": meta}
            out.write(dumps(row) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for i, text in enumerate(texts(queries, 5, 15)):
            out.write(dumps({"_id": f"q{i}", "text": text + "?", "metadata": {}}) + "\n")
    judgements = 0
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for i in range(queries):
            judged: set[int] = set()
            while len(judged) < min(int(rng.integers(1, 4)), documents):
                judged.add(int(rng.integers(documents)))
            for d in sorted(judged):
                out.write(f"q{i}\tdoc{d}\t{int(rng.integers(1, 3))}\n")
                judgements += 1
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"bytes": size, "judgements": judgements}


# --- database housekeeping (parent) ---------------------------------------------------------


def _admin_conninfo(url: str) -> tuple[str, str]:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dbname = conninfo_to_dict(url).get("dbname") or "postgres"
    return make_conninfo(url, dbname="postgres"), dbname


def ensure_database(url: str) -> bool:
    """Create the bench database if it is missing. Returns True when it was created."""
    import psycopg
    from psycopg import sql

    admin, dbname = _admin_conninfo(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT datconnlimit FROM pg_database WHERE datname = %s", [dbname]
        ).fetchone()
        if row is not None and row[0] != -2:
            return False
        if row is not None:  # -2: left invalid by an interrupted DROP DATABASE
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True


def drop_database(url: str) -> bool:
    """Drop the bench database. Gives up after 30 s: DROP DATABASE waits until every backend of
    the server has acknowledged it, and a backend stuck in COPY FROM STDIN (any database) never
    does."""
    import psycopg
    from psycopg import sql

    admin, dbname = _admin_conninfo(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '30s'")
        try:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        except psycopg.errors.QueryCanceled:
            return False
    return True


def reset_rows(url: str) -> None:
    """Empty the tables the job writes (and the bare scratch tables), then CHECKPOINT, so every
    measured run starts from empty tables with no dirty buffers left over from the last one."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE datasets_qrel, datasets_query, datasets_document, datasets_datasetversion,"
            " datasets_dataset, datasets_ingestjob, accounts_team RESTART IDENTITY CASCADE"
        )
        conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}, {BARE_PARENT}")
        conn.execute("CHECKPOINT")


def child_env(url: str, work: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="embedhub.settings",
        DATABASE_URL=url,
        # Keep the child's secret key, broker folders and upload area out of the checkout.
        VAR_DIR=str(work / "var"),
        ARTIFACTS_ROOT=str(work / "artifacts"),
        REDIS_URL="",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    return env


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def _server_busy(url: str) -> bool:
    """Is a backend of the bench database working (not just waiting for its client)?"""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dbname = conninfo_to_dict(url).get("dbname")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
            " AND pid <> pg_backend_pid() AND coalesce(wait_event, '') <> 'ClientRead'",
            [dbname],
        ).fetchone()
    return bool(row[0])


def _job_row(url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT id, status, stage, progress_done, progress_total FROM datasets_ingestjob"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone()
    except psycopg.Error as exc:
        return f"(could not read the job row: {exc})"
    if row is None:
        return "(no job row)"
    return f"IngestJob {row[0]}: status={row[1]} stage={row[2]!r} progress={row[3]}/{row[4]}"


def run_child(args: list[str], env: dict, result: Path, label: str, *, url: str, stall_s: float):
    """Run a child and watch it: sample its VmHWM, and call it stalled when it has used (almost)
    no CPU for ``stall_s`` seconds while no backend of the bench database is working either.
    A stalled child gets SIGUSR1 (faulthandler writes every thread's stack to
    ``<result>.stack``) and is then killed; the returned dict then has ``stalled`` set."""
    stack = result.with_suffix(".stack")
    cmd = [sys.executable, "-m", "bench.ingest", "--child", *args]
    cmd += ["--result", str(result), "--stack", str(stack)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    ticks, idle_since, hwm = None, time.monotonic(), 0.0
    while proc.poll() is None:
        time.sleep(0.5)
        hwm = max(hwm, _vm_hwm_mb(proc.pid) or 0.0)
        now_ticks = _cpu_ticks(proc.pid)
        if now_ticks is None:
            continue
        # Busy: over 1% of a core since the last busy mark (ticks are 1/100 s). The heartbeat
        # thread's UPDATE once a minute must not count as work.
        if ticks is None or now_ticks - ticks > stall_s:
            ticks, idle_since = now_ticks, time.monotonic()
            continue
        if time.monotonic() - idle_since < stall_s:
            continue
        if _server_busy(url):
            idle_since = time.monotonic()
            continue
        elapsed = time.perf_counter() - started
        log(f"{label}: no CPU for {stall_s:.0f} s and the database idle: stalled; dumping stacks")
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        job = _job_row(url)
        proc.kill()
        proc.wait()
        return {
            "stalled": True,
            "after_s": elapsed,
            "stack": stack.read_text() if stack.exists() else "(no stack written)",
            "job": job,
            "peak_mb": hwm,
        }
    if proc.returncode != 0 or not result.exists():
        raise SystemExit(f"{label} child failed (exit {proc.returncode}): {' '.join(cmd)}")
    data = json.loads(result.read_text())
    data["process_s"] = time.perf_counter() - started
    data["polled_hwm_mb"] = hwm
    return data


# --- the children ---------------------------------------------------------------------------


def child_bare(url: str, corpus: Path) -> dict:
    """psycopg 3 alone: stream corpus.jsonl, json.loads per line, COPY into a twin table."""
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}, {BARE_PARENT}")
            conn.execute(f"CREATE TABLE {BARE_PARENT} (id bigint PRIMARY KEY)")
            conn.execute(f"INSERT INTO {BARE_PARENT} VALUES (1)")
            conn.execute(f"CREATE TABLE {BARE_TABLE} (LIKE datasets_document INCLUDING ALL)")
            conn.execute(
                f"ALTER TABLE {BARE_TABLE} ADD FOREIGN KEY (version_id)"
                f" REFERENCES {BARE_PARENT} (id) DEFERRABLE INITIALLY DEFERRED"
            )
        rss_ready = current_rss_mb()
        loads, dumps = json.loads, json.dumps
        started = time.perf_counter()
        with conn.transaction():
            with conn.cursor() as cur:
                columns = "version_id, doc_id, title, text, metadata"
                with cur.copy(f"COPY {BARE_TABLE} ({columns}) FROM STDIN") as copy:
                    with open(corpus, "rb") as fh:
                        for line in fh:
                            obj = loads(line)
                            copy.write_row(
                                (
                                    1,
                                    obj["_id"],
                                    obj.get("title") or "",
                                    obj["text"],
                                    dumps(obj.get("metadata") or {}),
                                )
                            )
            copied = time.perf_counter()
        seconds = time.perf_counter() - started
        count = conn.execute(f"SELECT count(*) FROM {BARE_TABLE}").fetchone()[0]
    return {
        "seconds": seconds,
        "commit_s": started + seconds - copied,
        "documents": count,
        "rss_ready_mb": rss_ready,
        "peak_mb": peak_rss_mb(),
    }


def child_embedhub(source: Path, documents: int, profile: Path | None) -> dict:
    """Play the ingest worker: set up a pending IngestJob like ``ingest_create`` and run the task.

    Stage times come from thin timing wrappers around the functions ``dataset_import_beir``
    calls (the scan, then the three loads); what they do is unchanged; everything else runs as
    in the worker.
    """
    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from apps.accounts.models import Team
    from apps.core.models import JobStatus
    from apps.datasets import services
    from apps.datasets.models import Document, IngestJob, Qrel, Query
    from workers.tasks.ingest import ingest

    stages: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    load_documents = services.loader.load_documents

    from django.db import connections

    wrapper_class = type(connections["default"])  # commits of the import's transaction
    wrapper_class._commit = timed("commit", wrapper_class._commit)
    services.scan_beir_folder = timed("scan", services.scan_beir_folder)
    from apps.datasets import health  # dataset_import_beir imports version_health when called

    health.version_health = timed("health", health.version_health)
    services.loader = type(
        "TimedLoader",
        (),
        {
            "load_documents": staticmethod(timed("load_documents", load_documents)),
            "load_queries": staticmethod(timed("load_queries", services.loader.load_queries)),
            "load_qrels": staticmethod(timed("load_qrels", services.loader.load_qrels)),
        },
    )

    slug = f"bench-{uuid.uuid4().hex[:12]}"
    team = Team.objects.create(name=slug, slug=slug)
    # What ingest_create leaves behind: the files under <ARTIFACTS_ROOT>/uploads/<hex>/incoming/.
    folder = Path(settings.ARTIFACTS_ROOT) / "uploads" / uuid.uuid4().hex
    incoming = folder / "incoming"
    incoming.mkdir(parents=True)
    names, total = [], 0
    for name, sub in FILES.items():
        src = source / name if sub == name else source / sub / name
        try:
            os.link(src, incoming / name)  # the job moves, then deletes, these: keep the source
        except OSError:
            shutil.copyfile(src, incoming / name)
        names.append(name)
        total += src.stat().st_size
    job = IngestJob.objects.create(
        team=team,
        dataset_name=f"bench-{documents}",
        upload_dir=str(folder),
        file_names=names,
        total_bytes=total,
        celery_task_id=str(uuid.uuid4()),
        queued_at=timezone.now(),
    )
    rss_ready = current_rss_mb()

    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    ingest(job.pk)  # the Celery task's own code, run in this process as the worker would
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)

    job.refresh_from_db()
    if job.status != JobStatus.SUCCEEDED:
        raise SystemExit(f"IngestJob {job.pk} ended {job.status}: {job.human_error}\n{job.error}")
    version = job.version
    count = Document.objects.filter(version=version).count()
    return {
        "seconds": seconds,
        "documents": count,
        "version_document_count": version.document_count,
        "queries": Query.objects.filter(version=version).count(),
        "qrels": Qrel.objects.filter(version=version).count(),
        "stages": stages,
        "rss_ready_mb": rss_ready,
        "peak_mb": peak_rss_mb(),
        "upload_removed": not folder.exists(),
    }


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.ingest --child")
    parser.add_argument("kind", choices=["bare", "embedhub"])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--documents", type=int, required=True)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--stack", type=Path, required=True)
    a = parser.parse_args(argv)
    import faulthandler

    stack_file = open(a.stack, "w")  # faulthandler writes here on SIGUSR1
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    if a.kind == "bare":
        data = child_bare(a.database_url, a.source / "corpus.jsonl")
    else:
        data = child_embedhub(a.source, a.documents, a.profile)
    a.result.write_text(json.dumps(data))


# --- the parent -----------------------------------------------------------------------------


def print_profile(path: Path, limit: int = 25) -> None:
    import io
    import pstats

    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats = pstats.Stats(str(path), stream=buf)
        stats.strip_dirs().sort_stats(order).print_stats(limit)
        print(f"\n--- cProfile, top {limit} by {order} ---")
        print(buf.getvalue().split("\n", 4)[-1].rstrip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--documents",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="corpus sizes, repeatable or a list (default: 100000 1000000)",
    )
    parser.add_argument("--queries", type=int, default=1000, help="queries per corpus (1000)")
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the bench database (with the last run's rows) and the generated files",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also run a cProfile'd ingest at the smallest N"
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=60.0,
        help="call a child stalled after this long with no CPU and an idle database (60)",
    )
    parser.add_argument("--workdir", type=Path, help="where to generate (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    sizes = a.documents or DEFAULT_SIZES

    work = Path(tempfile.mkdtemp(prefix="embedhub-bench-", dir=a.workdir))
    env = child_env(a.database_url, work)
    created = ensure_database(a.database_url)
    log(f"database {'created' if created else 'exists'}: {a.database_url}; work dir {work}")
    watch = {"url": a.database_url, "stall_s": a.stall_seconds}
    extra: list[str] = []
    rows = []
    try:
        log("manage.py migrate")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        for n in sizes:
            source = work / f"beir-{n}"
            t0 = time.perf_counter()
            info = generate_beir(source, documents=n, queries=a.queries, seed=a.seed)
            log(
                f"N={n:,}: generated {info['bytes'] / 1e6:,.0f} MB, {a.queries:,} queries, "
                f"{info['judgements']:,} judgements in {time.perf_counter() - t0:.1f} s"
            )
            common = ["--database-url", a.database_url, "--source", str(source)]
            common += ["--documents", str(n)]

            reset_rows(a.database_url)
            log(f"N={n:,}: bare psycopg COPY")
            bare = run_child(["bare", *common], env, work / f"bare-{n}.json", "bare", **watch)
            if bare.get("stalled"):
                raise SystemExit(f"the bare baseline stalled:\n{bare['stack']}")
            log(f"N={n:,}: bare {bare['seconds']:.1f} s, {bare['documents']:,} rows")
            if bare["documents"] != n:
                raise SystemExit(f"bare table holds {bare['documents']:,} rows, expected {n:,}")

            reset_rows(a.database_url)
            log(f"N={n:,}: EmbedHub IngestJob")
            eh = run_child(
                ["embedhub", *common, *extra], env, work / f"embedhub-{n}.json", "EmbedHub", **watch
            )
            if eh.get("stalled"):
                log(f"N={n:,}: EmbedHub STALLED after {eh['after_s']:.0f} s; {eh['job']}")
                print(f"\n--- EmbedHub child stalled at N={n:,}: every thread's stack ---")
                print(eh["stack"].rstrip())
            else:
                log(f"N={n:,}: EmbedHub {eh['seconds']:.1f} s, {eh['documents']:,} documents")
                if eh["documents"] != n or eh["version_document_count"] != n:
                    raise SystemExit(f"version holds {eh['documents']:,} documents, not {n:,}")
            rows.append((n, info, eh, bare))
            if not a.keep:
                shutil.rmtree(source, ignore_errors=True)

        print_table(rows, a.queries)

        if a.profile:
            n = min(sizes)
            source = work / f"beir-{n}"
            if not source.exists():
                generate_beir(source, documents=n, queries=a.queries, seed=a.seed)
            reset_rows(a.database_url)
            prof = work / f"ingest-{n}.prof"
            log(f"N={n:,}: EmbedHub IngestJob under cProfile → {prof}")
            args = ["embedhub", "--database-url", a.database_url, "--source", str(source)]
            args += ["--documents", str(n), "--profile", str(prof), *extra]
            eh = run_child(args, env, work / "profile.json", "profile", **watch)
            if eh.get("stalled"):
                print(f"\nProfiled run stalled ({eh['job']}); no profile")
            else:
                print(f"\nProfiled run, N={n:,}: {eh['seconds']:.1f} s (cProfile slows it down)")
                print_profile(prof)
    finally:
        if a.keep:
            log(f"kept: database {a.database_url} and {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            if drop_database(a.database_url):
                log("dropped the bench database and the work dir")
            else:
                log(
                    "removed the work dir; DROP DATABASE timed out (a backend of the server is "
                    "stuck, see pg_stat_activity): drop the bench database by hand later"
                )
    return 0


def print_table(rows: list, queries: int) -> None:
    print()
    print(f"Ingest bench: {queries:,} queries per corpus; MB = 10^6 bytes; peak = child's max RSS")
    head = (
        f"{'N':>10} | {'EmbedHub docs/s':>15} | {'peak MB':>7} | {'bare docs/s':>11} | "
        f"{'bare peak MB':>12} | {'ratio':>5}"
    )
    print(head)
    print("-" * len(head))
    for n, _info, eh, bare in rows:
        bare_rate = f"{n / bare['seconds']:>11,.0f} | {bare['peak_mb']:>12.0f}"
        if eh.get("stalled"):
            print(f"{n:>10,} | {'STALLED':>15} | {eh['peak_mb']:>7.0f} | {bare_rate} | {'∞':>5}")
            continue
        ratio = eh["seconds"] / bare["seconds"]
        print(
            f"{n:>10,} | {n / eh['seconds']:>15,.0f} | {eh['peak_mb']:>7.0f} | "
            f"{bare_rate} | {ratio:>5.2f}"
        )
    print("ratio = embedhub_time / bare_time (same corpus, same database, same run)")
    print()
    for n, info, eh, bare in rows:
        if eh.get("stalled"):
            print(
                f"N={n:,}: EmbedHub stalled after {eh['after_s']:.0f} s ({eh['job']}); "
                f"bare {bare['seconds']:.1f} s"
            )
            continue
        s = eh["stages"]
        known = sum(s.values())
        print(
            f"N={n:,} ({info['bytes'] / 1e6:,.0f} MB on disk): EmbedHub {eh['seconds']:.1f} s = "
            f"scan {s.get('scan', 0):.1f} + documents {s.get('load_documents', 0):.1f} + "
            f"queries {s.get('load_queries', 0):.2f} + qrels {s.get('load_qrels', 0):.2f} + "
            f"health {s.get('health', 0):.2f} + commit {s.get('commit', 0):.1f} + "
            f"rest {eh['seconds'] - known:.1f} s; "
            f"bare {bare['seconds']:.1f} s = COPY {bare['seconds'] - bare['commit_s']:.1f} + "
            f"commit {bare['commit_s']:.1f} s"
        )
        print(
            f"   RSS before the task {eh['rss_ready_mb']:.0f} MB → peak {eh['peak_mb']:.0f} MB; "
            f"bare {bare['rss_ready_mb']:.0f} → {bare['peak_mb']:.0f} MB; "
            f"version: {eh['documents']:,} documents, {eh['queries']:,} queries, "
            f"{eh['qrels']:,} judgements; upload folder removed: {eh['upload_removed']}"
        )
    print()
    done = [r for r in rows if not r[2].get("stalled")]
    for n, _info, eh, _bare in rows:
        if eh.get("stalled"):
            print(f"N={n:,}: misses the targets (the job never finished)")
            continue
        rate, peak = n / eh["seconds"], eh["peak_mb"]
        verdict = "meets" if rate >= TARGET_DOCS_PER_S and peak < TARGET_PEAK_MB else "misses"
        print(
            f"N={n:,}: {verdict} the targets (≥ {TARGET_DOCS_PER_S:,} docs/s: {rate:,.0f}; "
            f"< {TARGET_PEAK_MB} MB: {peak:.0f})"
        )
    if len(done) > 1:
        small, big = done[0], done[-1]
        print(
            f"Peak memory {small[0]:,} → {big[0]:,} documents: "
            f"{small[2]['peak_mb']:.0f} → {big[2]['peak_mb']:.0f} MB "
            f"(+{big[2]['peak_mb'] - small[2]['peak_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    sys.exit(main())
