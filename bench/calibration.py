"""Benchmark of calibrated relevance (issue 16 §2): SciFact and Cranfield with all-MiniLM-L6-v2
through the product: a flat index of each collection, deployed, and the deployment's
calibration jobs (isotonic, logistic, Cosine-Adapter) for a target precision or recall; each
reports precision and recall on held-out queries at its threshold against a single global
raw-score threshold chosen the same way on the same queries, and the ECE.

    .venv/bin/python -m bench.calibration                   # bf16 encodes, seeds 0-4
    .venv/bin/python -m bench.calibration --seeds 1 --precision fp32

SciFact is fitted on its train judgements and measured on test; Cranfield has one judged split,
so each seed holds out 30% of its queries to measure on. Within the fit split, each seed keeps
30% of the queries aside to choose the threshold on (the mapping is fitted on the rest). Runs in
this process on its own database; ``--artifacts`` keeps the embedding cache between runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.eval import ROOT, log, product_setup

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_calibration"
DATA = ROOT.parent / "shared" / "data"
METHODS = ("isotonic", "logistic", "cosine_adapter")
TARGETS = (  # (target, value, conformal)
    ("precision", 0.5, False),
    ("precision", 0.7, False),
    ("recall", 0.8, False),
    ("recall", 0.9, True),
)


def mean_sd(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "—"
    if len(got) == 1:
        return f"{got[0]:.3f}"
    return f"{statistics.mean(got):.3f}±{statistics.stdev(got):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of the query shares")
    parser.add_argument("--depth", type=int, default=50, help="hits per query fitted on")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--artifacts", type=Path, default=Path("/tmp/bench-calibration-artifacts"))
    parser.add_argument("--out", type=Path, help="write every job's results here (JSON)")
    args = parser.parse_args()
    args.artifacts.mkdir(parents=True, exist_ok=True)
    team, scifact, model = product_setup(database_url=args.database_url,
                                         data=args.data / "scifact",
                                         prefix="bench-calibration-",
                                         artifacts=args.artifacts)  # fmt: skip

    from apps.datasets.services import dataset_import_beir
    from apps.indexes.calibrations import calibration_create
    from apps.indexes.models import Calibration
    from apps.indexes.services import deployment_deploy, index_build_create
    from workers.tasks.calibration import calibrate
    from workers.tasks.indexing import build_index

    cranfield = dataset_import_beir(team=team, name="cranfield",
                                    path=args.data / "cranfield").version  # fmt: skip
    collections = [
        ("SciFact", scifact, {"split": "train", "held_out_split": "test"}),
        ("Cranfield", cranfield, {"split": "test"}),
    ]
    rows: list[dict] = []
    for label, version, splits in collections:
        t0 = time.perf_counter()
        build = index_build_create(team=team, model=model, dataset_version=version,
                                   index_type="flat", precision=args.precision,
                                   enqueue=False)  # fmt: skip
        build_index.run(build.pk)
        build.refresh_from_db()
        if build.status != "succeeded":
            raise SystemExit(f"{label} index failed: {build.human_error}\n{build.error}")
        log(f"{label}: index #{build.pk} in {time.perf_counter() - t0:.1f} s "
            f"({build.precision_used}, nDCG@10 {build.metrics.get('ndcg_at_10')})")  # fmt: skip
        deployment = deployment_deploy(team=team, name=label.lower(), index=build)
        for target, value, conformal in TARGETS:
            for method in METHODS:
                for seed in range(args.seeds):
                    params = {**splits, "method": method, "target": target,
                              "target_value": value, "conformal": conformal,
                              "depth": args.depth, "seed": seed}  # fmt: skip
                    job = calibration_create(team=team, deployment=deployment, params=params,
                                             enqueue=False)  # fmt: skip
                    t1 = time.perf_counter()
                    calibrate.run(job.pk)
                    job = Calibration.objects.get(pk=job.pk)
                    if job.status != "succeeded":
                        raise SystemExit(f"{label} {method}: {job.human_error}\n{job.error}")
                    r = job.results
                    rows.append({"collection": label, "method": method, "target": target,
                                 "value": value, "conformal": conformal, "seed": seed,
                                 "seconds": round(time.perf_counter() - t1, 2),
                                 "ece": r["ece"], "threshold": job.threshold,
                                 "raw_threshold": r["raw_threshold"],
                                 "calibrated": r["held_out"]["calibrated"],
                                 "raw": r["held_out"]["raw"], "counts": r["counts"]})  # fmt: skip
                log(f"{label} {target} ≥ {value}{' conformal' if conformal else ''} {method}: "
                    f"done")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print(f"\nall-MiniLM-L6-v2 ({args.precision}), flat index, top {args.depth} hits per query; "
          f"held-out precision P and recall R (of the relevant hits in the top {args.depth}), "
          f"share of queries abstained A; mean±sd over {args.seeds} seed(s)")  # fmt: skip
    head = ("| collection | target | method | ECE | P calibrated | R calibrated | A calibrated "
            "| P raw | R raw | A raw |")  # fmt: skip
    print(head)
    print("|" + "---|" * 10)
    for label, _, _ in collections:
        for target, value, conformal in TARGETS:
            for method in METHODS:
                got = [r for r in rows if r["collection"] == label and r["method"] == method
                       and r["target"] == target and r["value"] == value]  # fmt: skip
                cal = [r["calibrated"] for r in got]
                raw = [r["raw"] for r in got]
                name = f"{target} ≥ {value}" + (" (conformal)" if conformal else "")
                print(f"| {label} | {name} | {method} | {mean_sd([r['ece'] for r in got])} "
                      f"| {mean_sd([c['precision'] for c in cal])} "
                      f"| {mean_sd([c['recall'] for c in cal])} "
                      f"| {mean_sd([c['abstain'] for c in cal])} "
                      f"| {mean_sd([c['precision'] for c in raw])} "
                      f"| {mean_sd([c['recall'] for c in raw])} "
                      f"| {mean_sd([c['abstain'] for c in raw])} |")  # fmt: skip
    counts = {r["collection"]: r["counts"] for r in rows}
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
