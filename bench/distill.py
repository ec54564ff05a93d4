"""Benchmark of static distillation (issue 13 item 5): all-MiniLM-L6-v2 distilled with Model2Vec
through EmbedHub's own job, its encode speed against the source's on the same SciFact documents
(measured by the job), and SciFact test nDCG@10 of the static model through the product's
evaluation, beside the source's (``--source-precision bf16`` evaluates the source in bf16 to
save time; its fp32 figure is 0.6451).

    .venv/bin/python -m bench.distill
    .venv/bin/python -m bench.distill --pca-dims 256 --vocabulary      # + SciFact's own words

Runs in this process on its own database and an empty artifacts folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, product_setup

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_distill"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--vocabulary", action="store_true", help="add SciFact's 10,000 words")
    parser.add_argument("--source-precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    team, version, source = product_setup(database_url=args.database_url, data=args.data,
                                          prefix="bench-distill-")  # fmt: skip
    from apps.registry.models import DistillJob
    from apps.registry.services import distill_job_create
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create
    from workers.common.configs.distill import DistillConfig
    from workers.tasks.distill import distill
    from workers.tasks.evaluation import evaluate

    log("source evaluation")
    t0 = time.perf_counter()
    base = evaluation_create(team=team, model=source, dataset_version=version, split="test",
                             precision=args.source_precision, enqueue=False)  # fmt: skip
    evaluate(base.pk)
    base = Evaluation.objects.get(pk=base.pk)
    base_s = time.perf_counter() - t0
    log(f"  {base.status}, {base_s:.1f} s, nDCG@10 {base.metrics.get('ndcg@10')}")
    config = DistillConfig(pca_dims=args.pca_dims,
                           vocabulary_version=version.pk if args.vocabulary else None,
                           evaluate_version=version.pk, split="test")  # fmt: skip
    job = distill_job_create(team=team, source=source, config=config, enqueue=False)
    log("distilling")
    t0 = time.perf_counter()
    distill(job.pk)
    job = DistillJob.objects.get(pk=job.pk)
    distill_s = time.perf_counter() - t0
    if job.status != "succeeded":
        raise SystemExit(f"distillation failed: {job.human_error}\n{job.error}")
    log(f"  {distill_s:.1f} s, {job.result}")
    static_eval = Evaluation.objects.get(pk=job.result["evaluations"]["static"])
    t0 = time.perf_counter()
    evaluate(static_eval.pk)
    static_eval = Evaluation.objects.get(pk=static_eval.pk)
    static_s = time.perf_counter() - t0
    speed = job.result["speed"]
    extra = ", + SciFact vocabulary" if args.vocabulary else ""
    print(f"\nSciFact ({version.document_count:,} documents, test), all-MiniLM-L6-v2 → "
          f"Model2Vec static, PCA {args.pca_dims}{extra}")  # fmt: skip
    print(f"{'model':<28}{'nDCG@10':>9}{'R@100':>8}{'eval s':>8}{'docs/s':>10}")
    for label, e, seconds, docs in (
        (f"source ({base.precision_used})", base, base_s, speed["source_docs_per_s"]),
        ("static (fp32)", static_eval, static_s, speed["static_docs_per_s"]),
    ):
        print(f"{label:<28}{e.metrics['ndcg@10']:>9.4f}{e.metrics['recall@100']:>8.4f}"
              f"{seconds:>8.1f}{docs:>10.1f}")  # fmt: skip
    kept = static_eval.metrics["ndcg@10"] / base.metrics["ndcg@10"]
    print(f"static keeps {kept:.1%} of the source's nDCG@10 (against fp32's 0.6451: "
          f"{static_eval.metrics['ndcg@10'] / 0.6451:.1%}) for {speed['speedup']}× the encode "
          f"speed ({speed['documents']} documents, the source in fp32); distillation "
          f"{distill_s:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
