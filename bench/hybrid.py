"""Benchmark of hybrid retrieval (issue 15 item 1): SciFact test with all-MiniLM-L6-v2 through
the product's evaluations: dense, BM25 (bm25s), hybrid RRF (k = 60), and hybrid weighted sums
(min-max and z-score) whose dense weight is tuned on SciFact's train judgements and reported
on test; nDCG@10, MRR@10, R@100 and the paired test of each against dense (the comparison
page's: randomization test, Holm across the runs, BCa interval).

    .venv/bin/python -m bench.hybrid            # dense in bf16 (--precision fp32 for fp32)

Runs in this process on its own database and an empty artifacts folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, product_setup

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_hybrid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    team, version, model = product_setup(database_url=args.database_url, data=args.data,
                                         prefix="bench-hybrid-")  # fmt: skip
    from apps.runs.compare import comparison_build
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from workers.tasks.evaluation import evaluate

    ways = [
        ("dense", "dense", {}),
        ("BM25", "bm25", {}),
        ("hybrid RRF k=60", "hybrid", {"fusion": "rrf", "rrf_k": 60}),
        ("hybrid min-max, tuned", "hybrid",
         {"fusion": "weighted", "normalization": "minmax", "tune_split": "train"}),
        ("hybrid z-score, tuned", "hybrid",
         {"fusion": "weighted", "normalization": "zscore", "tune_split": "train"}),
    ]  # fmt: skip
    done: list[tuple[str, Evaluation, float]] = []
    for label, method, fusion in ways:
        evaluation = evaluation_create(team=team, model=model, dataset_version=version,
                                       split="test", method=method, precision=args.precision,
                                       fusion=fusion or None, enqueue=False)  # fmt: skip
        log(f"{label}: evaluation #{evaluation.pk}")
        t0 = time.perf_counter()
        evaluate(evaluation.pk)
        evaluation = Evaluation.objects.get(pk=evaluation.pk)
        seconds = time.perf_counter() - t0
        if evaluation.status != "succeeded":
            raise SystemExit(f"{label} failed: {evaluation.human_error}\n{evaluation.error}")
        log(f"  {seconds:.1f} s, nDCG@10 {evaluation.metrics['ndcg@10']:.4f}, "
            f"fusion {json.dumps(evaluation.fusion_result)[:200]}")  # fmt: skip
        done.append((label, evaluation, seconds))
    dense = done[0][1]
    comparison = comparison_build(evaluations=[e for _, e, _ in done], baseline=dense)
    cells = {c.evaluation.pk: c for c in comparison.row("ndcg@10").cells}
    print(f"\nSciFact test ({comparison.n_queries} queries, {version.document_count:,} documents),"
          f" all-MiniLM-L6-v2 encoded in {dense.precision_used}, top 100 per side")  # fmt: skip
    print(
        f"{'way':<24}{'nDCG@10':>9}{'MRR@10':>8}{'R@100':>8}{'s':>7}  dense weight  "
        "nDCG@10 vs dense (95% BCa; Holm p)"
    )
    out = {}
    for label, e, seconds in done:
        cell = cells[e.pk]
        weight = e.fusion_result.get("weight") if e.fusion_result else None
        versus = (
            "baseline"
            if cell.is_baseline
            else (
                f"{cell.delta_text} ({cell.ci_text}; {cell.p_label})"
                + (" *" if cell.significant else "")
            )
        )
        print(f"{label:<24}{e.metrics['ndcg@10']:>9.4f}{e.metrics['mrr@10']:>8.4f}"
              f"{e.metrics['recall@100']:>8.4f}{seconds:>7.1f}  "
              f"{'' if weight is None else f'{weight:.2f}':>12}  {versus}")  # fmt: skip
        out[label] = {"ndcg@10": e.metrics["ndcg@10"], "mrr@10": e.metrics["mrr@10"],
                      "recall@100": e.metrics["recall@100"], "seconds": seconds,
                      "weight": weight, "delta": cell.delta, "p_holm": cell.p_perm_holm,
                      "significant": cell.significant}  # fmt: skip
    print("* significant at alpha 0.05 after Holm")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
