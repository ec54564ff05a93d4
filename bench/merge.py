"""Benchmark of the merge lab (issue 16 §1): a full fine-tune of all-MiniLM-L6-v2 on SciFact
merged back with its base (LM-Cocktail style, ``linear`` with a weight search) through
EmbedHub's own merge job; test nDCG@10 of every weight and the paired test of the merge chosen
on dev against both parents.

- **data**: SciFact (``../shared/data/scifact``) rewritten as one BEIR folder whose train
  judgements are split, by query and with a seed, into the fine-tune's pairs and a held-out
  ``dev`` split (``--dev-queries``) on which the weight is chosen; ``test`` is SciFact's test.
  ``--subset N`` keeps the judged documents and N others (a smoke run; figures not comparable).
- **fine-tune**: a full MNRL run through the product (``training_run_create`` +
  ``training_run_execute``, the worker's code path) on the pairs, ``--steps`` at
  ``--batch-size``; or ``--finetuned FOLDER`` registers an existing one instead.
- **merge**: ``merge_job_create`` (linear, the fine-tune and its base, ``search`` over
  ``--grid``, dev and test splits) run by the task in this process; then the test evaluations
  it queued (the merge and both parents, fp32) run here, and ``merge_summary`` gives the paired
  randomization test with Holm across the two parents, as the merge page shows it.

    .venv/bin/python -m bench.merge                                    # full size (slow on CPU)
    .venv/bin/python -m bench.merge --grid 0,0.5,1 --steps 60
    .venv/bin/python -m bench.merge --subset 300 --steps 4 --batch-size 8 --grid 0,0.5,1  # smoke

Runs in this process on its own database and an empty artifacts folder.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, product_setup

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_merge"


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")[:3]
            if qid != "query-id":
                out.setdefault(qid, {})[did] = int(score)
    return out


def prepare(
    source: Path, target: Path, *, dev_queries: int, subset: int, seed: int
) -> tuple[Path, Path, dict]:
    """(BEIR folder with dev and test splits, training pairs JSONL, counts)."""
    corpus, queries = _jsonl(source / "corpus.jsonl"), _jsonl(source / "queries.jsonl")
    test, train = _qrels(source / "qrels" / "test.tsv"), _qrels(source / "qrels" / "train.tsv")
    held = set(random.Random(seed).sample(sorted(train), min(dev_queries, len(train))))
    dev = {q: d for q, d in train.items() if q in held}
    fit = {q: d for q, d in train.items() if q not in held}
    if subset:
        judged = {d for split in (test, dev, fit) for docs in split.values() for d in docs}
        others = sorted(d["_id"] for d in corpus if d["_id"] not in judged)
        keep = judged | set(random.Random(seed).sample(others, min(subset, len(others))))
        corpus = [d for d in corpus if d["_id"] in keep]
    folder = target / "scifact-dev"
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in corpus)
    asked = set(test) | set(dev)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(q) + "\n" for q in queries if q["_id"] in asked)
    for name, split in (("test", test), ("dev", dev)):
        with (folder / "qrels" / f"{name}.tsv").open("w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in split.items():
                fh.writelines(f"{qid}\t{did}\t{score}\n" for did, score in docs.items())
    texts = {d["_id"]: (d.get("title", "") + " " + d["text"]).strip() for d in corpus}
    by_query = {q["_id"]: q["text"] for q in queries}
    pairs = target / "pairs.jsonl"
    n = 0
    with pairs.open("w", encoding="utf-8") as fh:
        for qid, docs in fit.items():
            for did, score in docs.items():
                if score > 0 and did in texts:
                    fh.write(json.dumps({"anchor": by_query[qid], "positive": texts[did]}) + "\n")
                    n += 1
    counts = {"documents": len(corpus), "test_queries": len(test), "dev_queries": len(dev),
              "train_pairs": n}  # fmt: skip
    return folder, pairs, counts


def fine_tune(*, team, base, pairs: Path, args, seed: int = 42, name: str = "pairs") -> tuple:
    from apps.datasets.services import dataset_import_training
    from apps.runs.models import TrainingRun
    from apps.runs.training import training_run_create
    from workers.tasks.training import training_run_execute

    version = dataset_import_training(team=team, name=name, path=pairs).version
    options = {"method": "full", "loss": "mnrl", "batch_size": args.batch_size,
               "max_steps": args.steps, "learning_rate": 2e-5, "warmup_ratio": 0.1,
               "seed": seed, "max_seq_length": args.max_seq_length, "no_duplicates": True,
               "logging_steps": 1, "save_steps": 10_000}  # fmt: skip
    run = training_run_create(team=team, base_model=base, train_version=version,
                              options=options, enqueue=False)  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(status="running")

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        pass

    report.check = lambda: None  # the bench has no cancel button
    result = training_run_execute(run=TrainingRun.objects.get(pk=run.pk), report=report)
    return result["result_model"], result["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--grid", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--dev-queries", type=int, default=200)
    parser.add_argument("--subset", type=int, default=0, help="judged documents + N others")
    parser.add_argument("--finetuned", type=Path, help="an existing fine-tune's folder")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--second-seed", type=int, default=None,
                        help="merge two fine-tunes (training seeds 42 and this) with each other "
                        "instead of a fine-tune with its base")  # fmt: skip
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    grid = [float(w) for w in args.grid.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-merge-data-"))
    folder, pairs, counts = prepare(args.data, work, dev_queries=args.dev_queries,
                                    subset=args.subset, seed=args.seed)  # fmt: skip
    log(f"data: {counts}")
    team, version, base = product_setup(database_url=args.database_url, data=folder,
                                        prefix="bench-merge-")  # fmt: skip
    from apps.registry.models import MergeJob
    from apps.registry.selectors import merge_summary
    from apps.registry.services import embedding_model_register, merge_job_create
    from apps.runs.models import Evaluation
    from workers.common.configs.merge import MergeConfig
    from workers.tasks.evaluation import evaluate
    from workers.tasks.merge import merge

    t0 = time.perf_counter()
    if args.finetuned:
        tuned = embedding_model_register(team=team, name="minilm-scifact",
                                         path=str(args.finetuned))  # fmt: skip
        log(f"fine-tune: registered {args.finetuned}")
    else:
        log(f"fine-tuning: full MNRL, {args.steps} steps at batch {args.batch_size}")
        tuned, result = fine_tune(team=team, base=base, pairs=pairs, args=args)
        log(f"  {time.perf_counter() - t0:.0f} s, {result.get('steps')} steps")
    models = [tuned.pk]
    if args.second_seed is not None:
        log(f"second fine-tune: seed {args.second_seed}")
        other, result = fine_tune(team=team, base=base, pairs=pairs, args=args,
                                  seed=args.second_seed, name="pairs-2")  # fmt: skip
        log(f"  {time.perf_counter() - t0:.0f} s in all, {result.get('steps')} steps")
        models.append(other.pk)  # the weight searched is the first fine-tune's
    # A search runs between two end points: the fine-tune and its base, or the two fine-tunes.
    config = MergeConfig(models=models, base=None if len(models) == 2 else base.pk,
                         method="linear", search=True,
                         grid=grid, evaluate_version=version.pk, dev_split="dev",
                         test_split="test")  # fmt: skip
    job = merge_job_create(team=team, config=config, enqueue=False)
    log(f"merge job {job.pk}: weight search over {grid} (the fine-tune's weight)")
    t1 = time.perf_counter()
    merge(job.pk)
    job = MergeJob.objects.get(pk=job.pk)
    merge_s = time.perf_counter() - t1
    if job.status != "succeeded":
        raise SystemExit(f"merge failed: {job.human_error}\n{job.error}")
    log(f"  {merge_s:.0f} s; test evaluations of the merge and both parents (cached vectors)")
    for pk in job.result["evaluations"].values():
        if Evaluation.objects.get(pk=pk).status == "pending":
            evaluate(pk)
    summary = merge_summary(job=job)
    search = job.result["search"]

    print(f"\nSciFact, dev = {counts['dev_queries']} held-out train queries, test = "
          f"{counts['test_queries']} queries, {counts['documents']:,} documents; fine-tune on "
          f"{counts['train_pairs']:,} pairs")  # fmt: skip
    print(f"{'weight of the fine-tune':>24} {'nDCG@10 dev':>12} {'nDCG@10 test':>13}")
    for p in search["points"]:
        mark = "  ← chosen on dev" if p["weight"] == search["chosen"] else ""
        print(f"{p['weight']:>24g} {p['dev']:>12.4f} {p['test']:>13.4f}{mark}")
    print(
        f"\nmerge (weight {search['chosen']:g}) against each parent on test, paired "
        f"randomization test, Holm across the two ({summary.get('queries')} queries):"
    )
    for r in summary["rows"]:
        print(f"  vs {r['model'].name:<16} {r['value']:.4f} → {r['merge_value']:.4f}  merge − it "
              f"{r['delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  {r['p_label']}: "
              f"{r['verdict']}")  # fmt: skip
    print(f"beats both parents significantly: {summary.get('beats_all')}")
    print(f"seconds: merge job (search, {len(grid)} weights) {merge_s:.0f}, all "
          f"{time.perf_counter() - t0:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
