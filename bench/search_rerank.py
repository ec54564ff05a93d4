"""Benchmark of the search API in mode hybrid, without and with a rerank stage (issue 15),
against the same work done in one bare Python process.

SciFact (``../shared/data/scifact``) is imported through the product, all-MiniLM-L6-v2 is
registered from its package, a Flat index with a BM25 index beside it is built
(``manage.py build_index --sync``), and a reranker is registered: a sentence-transformers
CrossEncoder made from all-MiniLM-L6-v2's weights with a new one-label head (the compute of a
fine-tuned MiniLM reranker, which ``bench.rerank`` trains). Two deployments go into a search
process behind the web (gunicorn): ``hybrid`` (RRF, k = 60, 100 candidates per side) and
``rerank`` (the same, then the top k′ reranked).

Each SciFact test query goes, in turn, through four ways: the REST API
(``POST /api/v1/deployments/{name}/search``, mode hybrid) on each deployment, and a **bare**
child process without Django doing the same work with the libraries alone, one thread for
torch and faiss as the search process runs them: ``SentenceTransformer.encode`` + faiss
search of the same index file (top 100), ``bm25s`` retrieve (top 100) over the same texts,
RRF written out, then for the rerank way ``CrossEncoder.predict`` on the top k′ pairs.
Printed: p50 / p99 per way, ``API p50 / bare p50`` per mode (target <= 1.5), the rerank
stage's own time and whether the API's top 10 equals the bare one.

    .venv/bin/python -m bench.search_rerank                  # k' = 20, 50 queries, 128 tokens
    .venv/bin/python -m bench.search_rerank --k-prime 50
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.search import (
    DEFAULT_REDIS,
    MODEL_PACKAGE,
    ROOT,
    SCIFACT,
    TARGET_RATIO,
    Client,
    Processes,
    bench_env,
    build,
    free_port,
    log,
    pct,
    recreate_database,
    wait_for,
)

K = 10
CANDIDATES = 100
RRF_K = 60
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_rerank_search"
WAYS = ("api-hybrid", "bare-hybrid", "api-rerank", "bare-rerank")


def child_bare(argv: list[str]) -> None:
    """Serve timing requests on stdin/stdout: {"query": q, "rerank": bool} → {"s": seconds,
    "ids": [...top 10...], "rerank_s": seconds}. One thread for torch and faiss."""
    import bm25s
    import faiss
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    spec = json.loads(argv[0])
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    model = SentenceTransformer(spec["model"], device="cpu", local_files_only=True)
    model.max_seq_length = spec["max_seq_length"]
    reranker = CrossEncoder(spec["reranker"], device="cpu", local_files_only=True,
                            max_length=spec["reranker_max_length"])  # fmt: skip
    folder = Path(spec["index"])
    index = faiss.read_index(str(folder / "index.faiss"))
    ids = json.loads((folder / "ids.json").read_text())
    texts = [json.loads(line) for line in (folder / "texts.jsonl").open()]
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        query = request["query"]
        t0 = time.perf_counter()
        vector = model.encode([query], convert_to_numpy=True, normalize_embeddings=True,
                              show_progress_bar=False)  # fmt: skip
        _, dense = index.search(np.ascontiguousarray(vector, dtype=np.float32), CANDIDATES)
        positions, scores = bm25.retrieve(
            bm25s.tokenize([query], stopwords="en", show_progress=False), k=CANDIDATES,
            show_progress=False,
        )  # fmt: skip
        fused: dict[int, float] = {}
        lexical = [int(p) for p, s in zip(positions[0], scores[0], strict=True) if s > 0]
        for ranking in ([int(p) for p in dense[0] if p >= 0], lexical):
            for rank, p in enumerate(ranking, start=1):
                fused[p] = fused.get(p, 0.0) + 1.0 / (RRF_K + rank)
        order = sorted(fused, key=lambda p: (-fused[p], ids[p]))
        rerank_s = 0.0
        if request["rerank"]:
            t1 = time.perf_counter()
            head = order[: spec["k_prime"]]
            ce = reranker.predict([(query, texts[p]) for p in head], batch_size=32,
                                  show_progress_bar=False)  # fmt: skip
            order = [head[i] for i in sorted(range(len(head)), key=lambda i: (-ce[i], i))]
            rerank_s = time.perf_counter() - t1
        top = [ids[p] for p in order[:K]]
        print(json.dumps({"s": time.perf_counter() - t0, "ids": top, "rerank_s": rerank_s}),
              flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--child", "bare"]:
        child_bare(argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k-prime", type=int, default=20)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=128,
                        help="the reranker's tokens per (query, document) pair")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--scifact", type=Path, default=SCIFACT)
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-search-rerank")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    for stale in ("indexes", "serving", "reranker"):  # the embedding cache is kept
        shutil.rmtree(args.workdir / "artifacts" / stale, ignore_errors=True)
    search_port = free_port()
    env = bench_env(args, search_port)
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    procs = Processes(args.workdir / "logs")
    try:
        recreate_database(args.database_url)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, env=env, check=True)  # fmt: skip
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from sentence_transformers import CrossEncoder

        from apps.accounts.services import api_token_create, team_create
        from apps.datasets.services import dataset_import_beir
        from apps.indexes.models import IndexBuild
        from apps.indexes.services import deployment_deploy
        from apps.registry.services import embedding_model_register

        user = get_user_model().objects.create_user(username="bench", password=None)
        team = team_create(name="bench", owner=user)
        model = embedding_model_register(team=team, name="minilm", package=MODEL_PACKAGE)
        folder = args.workdir / "artifacts" / "reranker"
        CrossEncoder(model.path, num_labels=1, max_length=args.max_length,
                     local_files_only=True).save(str(folder))  # fmt: skip
        reranker = embedding_model_register(team=team, name="minilm-ce", path=str(folder))
        log(f"reranker: {reranker.max_seq_length} tokens per pair")
        version = dataset_import_beir(team=team, name="scifact", path=args.scifact).version
        log("building a Flat index with BM25 beside it")
        built = build(env, model_id=model.pk, version_id=version.pk, index_type="flat",
                      params={"bm25": True})  # fmt: skip
        index = IndexBuild.objects.get(pk=built["id"])
        procs.start("search", [sys.executable, "-m", "workers.serving"], env)
        web_port = free_port()
        procs.start("web", [sys.executable, "-m", "gunicorn", "embedhub.wsgi:application",
                            "--bind", f"127.0.0.1:{web_port}", "--workers", "1", "--threads",
                            "8", "--worker-class", "gthread", "--timeout", "120"], env)  # fmt: skip
        from workers.serving.auth import bearer, resolve_token

        health = Client(search_port, bearer(resolve_token(env)[0]))

        def served() -> dict:
            status, raw, _ = health.call("GET", "/health")
            return json.loads(raw).get("deployments", {}) if status == 200 else {}

        wait_for("the search process", lambda: health.call("GET", "/health")[0] == 200, 60,
                 procs, ["search"])  # fmt: skip
        fusion = {"rrf_k": RRF_K, "candidates": CANDIDATES, "dense_weight": 0.5}
        deployment_deploy(team=team, name="hybrid", index=index, user=user, fusion=fusion)
        deployment_deploy(team=team, name="rerank", index=index, user=user, fusion=fusion,
                          rerank={"model": reranker.pk, "k_prime": args.k_prime})  # fmt: skip
        wait_for("both deployments", lambda: len(served()) == 2, 300, procs, ["search"])
        token = api_token_create(team=team, user=user, name="bench")[1]
        api = Client(web_port, {"Authorization": f"Bearer {token}"})
        wait_for("the web", lambda: api.call("GET", "/api/v1/deployments")[0] == 200, 120,
                 procs, ["web"])  # fmt: skip
        spec = {"model": model.path, "max_seq_length": model.max_seq_length,
                "reranker": reranker.path, "reranker_max_length": reranker.max_seq_length,
                "index": index.path, "k_prime": args.k_prime}  # fmt: skip
        clean = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
        bare = procs.start("bare", [sys.executable, "-m", "bench.search_rerank", "--child",
                                    "bare", json.dumps(spec)], clean, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
        if not bare.stdout.readline():
            raise RuntimeError(f"bare child failed:\n{procs.tail('bare')}")
        queries = [json.loads(line)["text"] for line in (args.scifact / "queries.jsonl").open()]
        judged = {line.split("\t")[0] for line in (args.scifact / "qrels" / "test.tsv").open()}
        ids = [json.loads(line)["_id"] for line in (args.scifact / "queries.jsonl").open()]
        tests = [q for q, i in zip(queries, ids, strict=True) if i in judged]
        pool = tests[: args.warmup + args.queries]

        def one(way: str, query: str) -> dict:
            rerank = way.endswith("rerank")
            if way.startswith("bare"):
                bare.stdin.write(json.dumps({"query": query, "rerank": rerank}) + "\n")
                bare.stdin.flush()
                out = json.loads(bare.stdout.readline())
                return {"total": out["s"], "ids": out["ids"], "rerank": out["rerank_s"]}
            status, raw, elapsed = api.call(
                "POST", f"/api/v1/deployments/{'rerank' if rerank else 'hybrid'}/search",
                {"query": query, "k": K, "mode": "hybrid"},
            )  # fmt: skip
            if status != 200:
                raise RuntimeError(f"{way} answered {status}: {raw[:300]!r}")
            data = json.loads(raw)
            return {"total": elapsed, "ids": [h["id"] for h in data["results"][0]["hits"]],
                    "rerank": (data["timings"].get("rerank_ms") or 0.0) / 1000}  # fmt: skip

        rows: dict[str, list[dict]] = {w: [] for w in WAYS}
        for i, query in enumerate(pool):
            for way in WAYS[i % len(WAYS) :] + WAYS[: i % len(WAYS)]:
                row = one(way, query)
                if i >= args.warmup:
                    rows[way].append(row)
        bare.stdin.close()
        out: dict = {"k_prime": args.k_prime, "queries": len(rows["api-hybrid"])}
        for way in WAYS:
            totals = [r["total"] * 1000 for r in rows[way]]
            reranks = [r["rerank"] * 1000 for r in rows[way]]
            out[way] = {"p50_ms": pct(totals, 50), "p99_ms": pct(totals, 99),
                        "rerank_p50_ms": pct(reranks, 50)}  # fmt: skip
        for mode in ("hybrid", "rerank"):
            out[f"ratio_{mode}"] = out[f"api-{mode}"]["p50_ms"] / out[f"bare-{mode}"]["p50_ms"]
            pairs = zip(rows[f"api-{mode}"], rows[f"bare-{mode}"], strict=True)
            same = sum(a["ids"] == b["ids"] for a, b in pairs)
            out[f"same_top10_{mode}"] = same / len(rows[f"api-{mode}"])
        print(f"\nSciFact test, {out['queries']} queries after {args.warmup} warm-up, mode "
              f"hybrid (RRF k={RRF_K}, {CANDIDATES} per side), rerank top {args.k_prime} by a "
              f"MiniLM-L6 cross-encoder; {os.cpu_count()} CPUs")  # fmt: skip
        print(f"{'way':<14}{'p50 ms':>9}{'p99 ms':>9}{'rerank p50':>12}")
        for way in WAYS:
            w = out[way]
            print(f"{way:<14}{w['p50_ms']:>9.2f}{w['p99_ms']:>9.2f}{w['rerank_p50_ms']:>12.2f}")
        for mode in ("hybrid", "rerank"):
            print(f"API / bare p50, {mode}: {out[f'ratio_{mode}']:.2f} (target <= {TARGET_RATIO}); "
                  f"same top 10 as bare: {out[f'same_top10_{mode}']:.0%}")  # fmt: skip
        print(json.dumps(out))
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
