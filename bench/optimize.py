"""Benchmark of optimized variants (issue 13 items 2-4): all-MiniLM-L6-v2 exported to ONNX
Runtime (fp32 graph, and int8) through EmbedHub's own job, each variant's encode speed against
the source's on the same SciFact documents (measured by the job, through the product's encode
path), and SciFact test nDCG@10 / Recall@100 of each variant through the product's evaluation
beside the source's fp32 one, with the paired test the variant's page shows and the verdict
against QUALITY_MAX_DROP; plus each evaluation's wall time.

    .venv/bin/python -m bench.optimize                     # none and int8 (about 10 minutes)
    .venv/bin/python -m bench.optimize --quantize int8

Runs in this process on its own database and an empty artifacts folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, product_setup

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_optimize"
REFERENCE_FP32 = 0.6451  # SciFact test nDCG@10 of all-MiniLM-L6-v2 in fp32 (shared/data README)
TODAY_FP32_EVAL_S = 347.0  # the fp32 evaluation's wall time the issue measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quantize", default="none,int8")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    team, version, source = product_setup(database_url=args.database_url, data=args.data,
                                          prefix="bench-optimize-")  # fmt: skip
    from apps.registry.models import EmbeddingModel, OptimizeJob
    from apps.registry.selectors import variant_summary
    from apps.registry.services import optimize_job_create
    from apps.runs.models import Evaluation
    from workers.common.configs.optimize import OptimizeConfig
    from workers.tasks.evaluation import evaluate
    from workers.tasks.optimize import optimize

    seconds: dict[int, float] = {}

    def evaluate_pending() -> None:
        for pk in Evaluation.objects.filter(status="pending").values_list("pk", flat=True):
            log(f"evaluating #{pk} ({Evaluation.objects.get(pk=pk).model.name})")
            t0 = time.perf_counter()
            evaluate(pk)
            seconds[pk] = time.perf_counter() - t0
            log(f"  {seconds[pk]:.1f} s")

    rows = []
    for quantize in args.quantize.split(","):
        config = OptimizeConfig(quantize=quantize, evaluate_version=version.pk, split="test")
        job = optimize_job_create(team=team, source=source, config=config, enqueue=False)
        log(f"optimizing: onnx {quantize}")
        t0 = time.perf_counter()
        optimize(job.pk)
        job = OptimizeJob.objects.get(pk=job.pk)
        if job.status != "succeeded":
            raise SystemExit(f"optimization failed: {job.human_error}\n{job.error}")
        log(f"  {time.perf_counter() - t0:.1f} s: {json.dumps(job.result)}")
        evaluate_pending()  # the source's fp32 evaluation once, then each variant's
        rows.append((quantize, job, variant_summary(job=job)))

    source_eval = rows[0][2]["source_eval"]
    print(f"\nSciFact ({version.document_count:,} documents, {source_eval.metrics and 'test'}), "
          f"all-MiniLM-L6-v2, evaluations through the product, 256 tokens")  # fmt: skip
    head = f"{'model':<22}{'nDCG@10':>9}{'R@100':>8}{'eval s':>8}{'docs/s':>9}{'× src':>7}"
    print(head + "  paired nDCG@10 delta vs source (95% BCa, Holm p), verdict")
    speed0 = rows[0][2]["speed"]
    print(f"{'source (torch fp32)':<22}{source_eval.metrics['ndcg@10']:>9.4f}"
          f"{source_eval.metrics['recall@100']:>8.4f}{seconds.get(source_eval.pk, 0):>8.1f}"
          f"{speed0['source_docs_per_s']:>9.1f}{1.0:>7.2f}")  # fmt: skip
    out = {"source": {"ndcg@10": source_eval.metrics["ndcg@10"],
                      "eval_s": seconds.get(source_eval.pk)}, "variants": {}}  # fmt: skip
    for quantize, job, summary in rows:
        ev, cell, speed = summary["variant_eval"], summary["cell"], summary["speed"]
        model = EmbeddingModel.objects.get(pk=job.result_model_id)
        verdict = "BELOW the bar" if model.below_quality_bar else "within the bar"
        print(f"{'onnx ' + quantize:<22}{ev.metrics['ndcg@10']:>9.4f}"
              f"{ev.metrics['recall@100']:>8.4f}{seconds[ev.pk]:>8.1f}"
              f"{speed['variant_docs_per_s']:>9.1f}{speed['speedup']:>7.2f}  "
              f"{cell.delta_text} ({cell.ci_text}, {cell.p_label}), {verdict} "
              f"(drop {summary['drop_pct']:.2f} %)")  # fmt: skip
        out["variants"][quantize] = {
            "ndcg@10": ev.metrics["ndcg@10"], "recall@100": ev.metrics["recall@100"],
            "eval_s": seconds[ev.pk], "speed": speed, "drop": summary["drop"],
            "p_holm": cell.p_perm_holm, "below_bar": model.below_quality_bar,
            "cosine_min": job.result["cosine_min"], "bytes": job.result["bytes"],
        }  # fmt: skip
        print(f"  vs the reference fp32 0.6451: {ev.metrics['ndcg@10'] / REFERENCE_FP32:.1%}; "
              f"evaluation {seconds[ev.pk]:.1f} s = {seconds[ev.pk] / TODAY_FP32_EVAL_S:.2f} of "
              f"the issue's fp32 347 s, {seconds[ev.pk] / seconds[source_eval.pk]:.2f} of "
              f"this run's torch fp32 evaluation")  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
