"""Benchmark of retrieve-then-rerank (issue 15 items 3–4), all through the product: hard
negatives mined by EmbedHub on SciFact train with all-MiniLM-L6-v2, a reranker fine-tuned from
MiniLM's weights on them (a training run: the cross-encoder trainer, a new one-label head),
then the hybrid RRF top 100 of SciFact test reranked at k′ = 20, 50 and 100: nDCG@10, MRR@10,
R@100, ms per query on this CPU, and the paired test of each against hybrid alone (the
comparison page's: randomization test, Holm across the runs, BCa interval).

    .venv/bin/python -m bench.rerank                  # bce, 1 epoch
    .venv/bin/python -m bench.rerank --loss lambdaloss
    .venv/bin/python -m bench.rerank --precision bf16 --negatives 5 --epochs 6 --learning-rate 5e-5 \
        --k-primes 20,100                           # the 300-step run in bench/README

Runs in this process on its own database and an empty artifacts folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, product_setup

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_rerank"


def evaluated(evaluation_id: int, label: str):
    from apps.runs.models import Evaluation
    from workers.tasks.evaluation import evaluate

    t0 = time.perf_counter()
    evaluate(evaluation_id)
    evaluation = Evaluation.objects.get(pk=evaluation_id)
    if evaluation.status != "succeeded":
        raise SystemExit(f"{label} failed: {evaluation.human_error}\n{evaluation.error}")
    seconds = time.perf_counter() - t0
    log(f"{label}: nDCG@10 {evaluation.metrics['ndcg@10']:.4f} in {seconds:.1f} s")
    return evaluation, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--loss", default="bce", choices=("bce", "lambdaloss"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="the run's learning rate (default: the product's)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--k-primes", default="20,50,100")
    parser.add_argument(
        "--precision", default="bf16", choices=("fp32", "bf16"),
        help="mining, the dense side, training and reranking (bf16: autocast, where native)",
    )  # fmt: skip
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokens per (query, document) pair for the reranker")  # fmt: skip
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="an artifacts folder to reuse (its embedding cache)")  # fmt: skip
    args = parser.parse_args()
    team, version, model = product_setup(
        database_url=args.database_url, data=args.data, prefix="bench-rerank-",
        artifacts=args.artifacts,
    )  # fmt: skip
    from apps.datasets.curation import curation_create
    from apps.datasets.models import CurationJob
    from apps.runs.compare import comparison_build
    from apps.runs.models import TrainingRun
    from apps.runs.services import evaluation_create
    from apps.runs.training import training_run_create
    from workers.tasks.curation import curate
    from workers.tasks.runtime import job_claim, job_run
    from workers.tasks.training import training_run_execute

    # 1. Hard negatives for SciFact train, mined by EmbedHub (positive-aware filter on).
    t0 = time.perf_counter()
    job = curation_create(team=team, source=version, kind="mine", model=model, enqueue=False,
                          params={"split": "train", "num_negatives": args.negatives,
                                  "precision": args.precision})  # fmt: skip
    curate(job.pk)
    job = CurationJob.objects.get(pk=job.pk)
    if job.status != "succeeded":
        raise SystemExit(f"mining failed: {job.human_error}")
    training = job.version  # mining makes its version at once (no review step)
    mine_s = time.perf_counter() - t0
    log(f"mined {training.training_count} rows in {mine_s:.1f} s")

    # 2. The first stage: hybrid RRF (k = 60) of MiniLM and BM25 on test.
    hybrid, _ = evaluated(
        evaluation_create(team=team, model=model, dataset_version=version, split="test",
                          method="hybrid", precision=args.precision, fusion={"fusion": "rrf"},
                          enqueue=False).pk,
        "hybrid RRF",
    )  # fmt: skip

    # 3. The reranker: a training run from MiniLM's weights (a new one-label head).
    run = training_run_create(team=team, base_model=model, train_version=training,
                              options={"loss": args.loss, "epochs": args.epochs,
                                       "batch_size": args.batch_size,
                                       "learning_rate": args.learning_rate,
                                       "num_negatives": args.negatives, "logging_steps": 5,
                                       "save_steps": 10_000, "max_seq_length": args.max_length,
                                       "bf16": args.precision == "bf16"},
                              enqueue=False)  # fmt: skip
    t0 = time.perf_counter()
    claimed = job_claim(model=TrainingRun, pk=run.pk)
    job_run(job=claimed, work=lambda report: training_run_execute(run=claimed, report=report))
    run = TrainingRun.objects.get(pk=run.pk)
    train_s = time.perf_counter() - t0
    if run.status != "succeeded":
        raise SystemExit(f"training failed: {run.human_error}\n{run.log_tail[-3000:]}")
    reranker = run.result_model
    log(f"trained {reranker.name}: {run.result['steps']} steps, {run.result['rows']} rows "
        f"in {train_s:.1f} s, loss {run.result['train_loss']:.4f}")  # fmt: skip

    # 4. Hybrid's lists reranked at each k′.
    reranked = []
    for k_prime in [int(k) for k in args.k_primes.split(",")]:
        e, seconds = evaluated(
            evaluation_create(team=team, model=reranker, dataset_version=version, split="test",
                              method="rerank", first_stage=hybrid, precision=args.precision,
                              fusion={"k_prime": k_prime}, enqueue=False).pk,
            f"rerank top {k_prime}",
        )  # fmt: skip
        reranked.append((k_prime, e, seconds))
    comparison = comparison_build(evaluations=[hybrid] + [e for _, e, _ in reranked],
                                  baseline=hybrid)  # fmt: skip
    cells = {c.evaluation.pk: c for c in comparison.row("ndcg@10").cells}
    result = run.result
    print(f"\nSciFact test ({comparison.n_queries} queries, {version.document_count:,} documents)"
          f"; reranker: all-MiniLM-L6-v2's weights + a new head, {args.loss}, "
          f"{result['steps']} steps ({args.epochs:g} epoch, {result['rows']} mined rows, "
          f"{result['negatives_per_row']} negatives each, lr {args.learning_rate or 'default'}) in "
          f"{train_s:.0f} s on CPU; "
          f"{args.precision}, {args.max_length} tokens per pair")  # fmt: skip
    print(f"{'way':<22}{'nDCG@10':>9}{'MRR@10':>8}{'R@100':>8}{'ms/query':>10}  "
          "nDCG@10 vs hybrid (95% BCa; Holm p)")  # fmt: skip
    out = {"train_s": train_s, "steps": run.result["steps"], "mine_s": mine_s}
    for label, e in [("hybrid RRF", hybrid)] + [(f"reranked top {k}", e) for k, e, _ in reranked]:
        cell = cells[e.pk]
        ms = e.timings.get("ms_per_query")
        versus = "baseline" if cell.is_baseline else (
            f"{cell.delta_text} ({cell.ci_text}; {cell.p_label})" + (" *" if cell.significant
                                                                     else ""))  # fmt: skip
        print(f"{label:<22}{e.metrics['ndcg@10']:>9.4f}{e.metrics['mrr@10']:>8.4f}"
              f"{e.metrics['recall@100']:>8.4f}{'' if ms is None else f'{ms:.1f}':>10}  "
              f"{versus}")  # fmt: skip
        out[label] = {"ndcg@10": e.metrics["ndcg@10"], "mrr@10": e.metrics["mrr@10"],
                      "recall@100": e.metrics["recall@100"], "ms_per_query": ms,
                      "delta": cell.delta, "p_holm": cell.p_perm_holm,
                      "significant": cell.significant}  # fmt: skip
    print("* significant at alpha 0.05 after Holm")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
