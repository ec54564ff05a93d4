"""The merge job: registered models of one architecture merged in weight space
(``workers.ml.merge``), the result registered as a merged model whose lineage names every
parent, the method and the weights, and evaluated beside each parent on the test split (each
evaluation its own job, so the comparison page pairs them query by query).

A greedy soup and a weight search choose on the dev split as they go: every candidate is
scored there with the evaluation's own pieces (the version's inputs, the encoding setup and
cache keys of an fp32 evaluation, ``evaluate_dense`` and the sharded document encoder), so a
later evaluation of the chosen model or of a parent on the same version reads the cached
vectors instead of encoding them again.

Imports no ML library at module level: the web imports :func:`merge` to enqueue it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings

if TYPE_CHECKING:
    from apps.datasets.models import DatasetVersion
    from apps.registry.models import EmbeddingModel, MergeJob
    from workers.tasks.runtime import ProgressReporter

METRIC = "ndcg@10"


@shared_task(
    name="workers.tasks.merge.merge",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def merge(job_id: int) -> None:
    """Run one MergeJob row. Idempotent: a row that is not pending is left alone. Writes the
    merged folder under ARTIFACTS_ROOT/models/merged/<id>/, registers it, and queues the
    test-split evaluations of the merge and of each parent."""
    from apps.registry.models import MergeJob
    from workers.tasks.runtime import job_claim, job_run

    job = job_claim(model=MergeJob, pk=job_id)
    if job is None:
        return
    job_run(job=job, work=lambda report: merge_execute(job=job, report=report))


def merge_folder(job: MergeJob) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "models" / "merged" / str(job.pk)


def ordered_parents(job: MergeJob) -> list[EmbeddingModel]:
    by_id = {m.pk: m for m in job.parents.all()}
    return [by_id[pk] for pk in job.model_ids]


def score(
    *, model: EmbeddingModel, version: DatasetVersion, split: str, report: ProgressReporter,
    label: str,
) -> dict[str, float]:  # fmt: skip
    """``model``'s metrics on ``split``, as an fp32 dense evaluation of it would compute them
    (same inputs, same cache keys; ``model`` may be unsaved: a candidate folder with its
    parent's encoding settings). Progress reads "LABEL: stage"."""
    from types import SimpleNamespace

    from apps.datasets.selectors import evaluation_inputs
    from workers.ml.evaluate import evaluate_dense
    from workers.tasks.encoding import embedding_cache, encoding_for
    from workers.tasks.sharding import document_encoder

    # The fields encoding_for reads off an Evaluation row, as evaluation_create would set them.
    row = SimpleNamespace(model=model, dataset_version=version, split=split,
                          max_seq_length=model.max_seq_length, query_prefix=model.query_prefix,
                          document_prefix=model.document_prefix, precision="fp32")  # fmt: skip
    spec, document_key, query_key = encoding_for(job=row)
    corpus, queries, qrels = evaluation_inputs(version=version, split=split)
    out = evaluate_dense(
        model=spec, corpus=corpus, queries=queries, qrels=qrels,
        on_progress=lambda stage, done, total: report(f"{label}: {stage}"[:64], done, total),
        cache=embedding_cache(), document_key=document_key, query_key=query_key,
        encode_documents=document_encoder(spec=spec, check=report.check),
    )  # fmt: skip
    return {k: round(float(v), 6) for k, v in out.metrics.items()}


def candidate(like: EmbeddingModel, path: Path) -> EmbeddingModel:
    """An unsaved model for a candidate folder, encoded as ``like`` (its first parent) is."""
    from apps.registry.models import EmbeddingModel

    return EmbeddingModel(team=like.team, name=path.name, path=str(path), layout=like.layout,
                          pooling=like.pooling, normalize=like.normalize,
                          max_seq_length=like.max_seq_length, query_prefix=like.query_prefix,
                          document_prefix=like.document_prefix, dimension=like.dimension,
                          kind=EmbeddingModel.Kind.MERGED)  # fmt: skip


def merge_execute(*, job: MergeJob, report: ProgressReporter) -> dict[str, Any]:
    from apps.registry.services import embedding_model_register_merged
    from workers.common.configs.merge import MergeConfig
    from workers.ml.merge import load_all
    from workers.tasks.variants import paired_evaluations

    config = MergeConfig.model_validate(job.params)
    parents, base = ordered_parents(job), job.base
    report("reading weights")
    models = [*parents, *([base] if base else [])]
    loaded = load_all([m.path for m in models], [m.name for m in models])
    report.check()
    folder = merge_folder(job)
    if folder.exists():  # a retried job starts clean
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    result: dict[str, Any] = {}
    try:
        if config.search:
            path, lineage, result = _weight_search(
                job=job, config=config, parents=parents, base=base, loaded=loaded,
                folder=folder, report=report,
            )  # fmt: skip
        elif config.method == "greedy_soup":
            path, lineage, result = _greedy_soup(job=job, parents=parents, loaded=loaded,
                                                 folder=folder, report=report)  # fmt: skip
        else:
            path, lineage = _merge_once(config=config, parents=parents, base=base,
                                        loaded=loaded, folder=folder, report=report)  # fmt: skip
        del loaded
        report.check()
        model = embedding_model_register_merged(job=job, path=str(path), lineage=lineage)
    except BaseException:
        # Stopped or failed before a model was registered: its folders go (a cancel included).
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # Linked at once: a later step that fails (dev scoring, the test evaluations) leaves the
    # job pointing at the model it registered, not an orphan.
    type(job).objects.filter(pk=job.pk).update(result_model=model)
    if job.evaluate_version is not None and job.dev_split and "dev" not in result:
        report("scoring the merge on dev")
        result["dev"] = score(model=model, version=job.evaluate_version, split=job.dev_split,
                              report=report, label="merge on dev")  # fmt: skip
    evaluations = {}
    if job.evaluate_version is not None and job.test_split:
        evaluations = paired_evaluations(
            team=job.team, version=job.evaluate_version, split=job.test_split,
            created_by=job.created_by,
            models=[("merge", model, False), *((str(m.pk), m, True) for m in models)],
        )  # fmt: skip
    return {
        "result_model": model,
        "result": {**result, "lineage": lineage, "evaluations": evaluations},
        "stage": "done",
    }


def _lineage(*, method: str, parents, base, info: dict, weights: list[float] | None) -> dict:
    """What the merged model records of how it was made: every parent with its weight (the
    base's too where it is an end point), the method and its settings."""
    with_base = method in ("linear", "slerp") and base is not None
    out = {
        "method": method,
        "parents": [
            {"id": m.pk, "name": m.name, "weight": None if weights is None else weights[i]}
            for i, m in enumerate(parents)
        ],
        "base": None if base is None else {
            "id": base.pk, "name": base.name,
            "weight": weights[-1] if with_base and weights is not None else None,
        },
        "options": {k: v for k, v in info.items() if k not in ("method", "weights", "parameters")},
    }  # fmt: skip
    return out


def _merge_once(*, config, parents, base, loaded, folder: Path, report) -> tuple[Path, dict]:
    from workers.ml.merge import MergeSpec, merge_states, write_merged

    report("merging")
    spec = MergeSpec(method=config.method, parents=tuple(m.path for m in parents),
                     base=base.path if base else None,
                     weights=tuple(config.weights) if config.weights else None,
                     density=config.density, drop_rate=config.drop_rate, scale=config.scale,
                     seed=config.seed)  # fmt: skip
    states = [w.state for w in loaded]
    merged, info = merge_states(spec, states[: len(parents)], states[-1] if base else None)
    report("writing")
    path = folder / "model"
    write_merged(template=loaded[0], state=merged, out_dir=path)
    return path, _lineage(method=config.method, parents=parents, base=base, info=info,
                          weights=info.get("weights"))  # fmt: skip


def _weight_search(
    *, job, config, parents, base, loaded, folder: Path, report
) -> tuple[Path, dict, dict]:
    """Every weight of the grid (the first end point's share) scored on dev and test, each
    encoded with the first parent's settings (as the merged model will be); the best on dev is
    kept. The end points are the parents' own folders (their cached vectors serve where the
    settings are theirs); the others are written as candidate folders, and all but the kept
    one removed."""
    from workers.ml.merge import linear, slerp, write_merged

    first, second = parents[0], (parents[1] if len(parents) > 1 else base)
    a, b = loaded[0].state, loaded[1].state
    version, dev, test = job.evaluate_version, job.dev_split, job.test_split
    grid = sorted(set(config.grid))
    points = []
    for step, w in enumerate(grid):
        report("searching weights", step, len(grid))
        if w in (0.0, 1.0):
            # A parent as the merge would be at this weight: its weights, encoded with the
            # first parent's settings as every other point (and the merged model) is.
            path = None
            scored = candidate(first, Path((first if w == 1.0 else second).path))
        else:
            path = folder / f"w{w:g}"
            state = linear([a, b], [w, 1 - w]) if config.method == "linear" else slerp(a, b, 1 - w)
            write_merged(template=loaded[0], state=state, out_dir=path)
            scored = candidate(first, path)
        point: dict[str, Any] = {"weight": w, "path": str(path) if path else None}
        point["dev"] = score(model=scored, version=version, split=dev, report=report,
                             label=f"w {w:g} on dev")[METRIC]  # fmt: skip
        if test:
            point["test"] = score(model=scored, version=version, split=test, report=report,
                                  label=f"w {w:g} on test")[METRIC]  # fmt: skip
        points.append(point)
    report("searching weights", len(grid), len(grid))
    best = max(points, key=lambda p: p["dev"])  # ties: the first in grid order
    w = best["weight"]
    if best["path"] is None:  # an end point won: the merge is that parent's weights
        path = folder / f"w{w:g}"
        state = a if w == 1.0 else b
        write_merged(template=loaded[0], state=state, out_dir=path)
    else:
        path = Path(best["path"])
    for p in points:
        if p["path"] and Path(p["path"]) != path:
            shutil.rmtree(p["path"], ignore_errors=True)
        p.pop("path")
    weights = [w, 1 - w]
    lineage = _lineage(method=config.method, parents=parents, base=base,
                       info={"search": True, "grid": grid}, weights=weights)  # fmt: skip
    endpoint = {1.0: first.name, 0.0: second.name}.get(w)
    result = {
        "search": {"metric": METRIC, "dev_split": dev, "test_split": test, "points": points,
                   "chosen": w, "chosen_is_parent": endpoint},
        "dev": {METRIC: best["dev"]},
    }  # fmt: skip
    return path, lineage, result


def _greedy_soup(*, job, parents, loaded, folder: Path, report) -> tuple[Path, dict, dict]:
    """Wortsman et al.'s greedy soup: the models in order of their own dev nDCG@10, each added
    to the soup only if the soup's dev nDCG@10 does not drop."""
    from workers.ml.merge import soup, write_merged

    version, dev = job.evaluate_version, job.dev_split
    n = len(parents)
    own = []
    for i, m in enumerate(parents):
        report("greedy soup", i, 2 * n - 1)
        # Encoded with the first model's settings, as every soup (and the result) is.
        own.append(score(model=candidate(parents[0], Path(m.path)), version=version, split=dev,
                         report=report,
                         label=f"{m.name[:30]} on dev")[METRIC])  # fmt: skip
    order = sorted(range(n), key=lambda i: -own[i])
    kept = [order[0]]
    current, path = own[order[0]], None
    best = parents[order[0]]
    steps = [{"model": best.pk, "name": best.name, "own_dev": current, "soup_dev": current,
              "kept": True}]  # fmt: skip
    for step, i in enumerate(order[1:], start=1):
        report("greedy soup", n + step - 1, 2 * n - 1)
        trial = folder / f"soup-{step}"
        write_merged(template=loaded[0], state=soup([loaded[j].state for j in [*kept, i]]),
                     out_dir=trial)  # fmt: skip
        value = score(model=candidate(parents[0], trial), version=version, split=dev,
                      report=report, label=f"soup of {len(kept) + 1} on dev")[METRIC]  # fmt: skip
        accept = value >= current
        steps.append({"model": parents[i].pk, "name": parents[i].name, "own_dev": own[i],
                      "soup_dev": value, "kept": accept})  # fmt: skip
        if accept:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
            kept, current, path = [*kept, i], value, trial
        else:
            shutil.rmtree(trial, ignore_errors=True)
    if path is None:  # nothing joined the best model: the soup is that model alone
        path = folder / "soup-0"
        write_merged(template=loaded[0], state=loaded[kept[0]].state, out_dir=path)
    share = 1 / len(kept)
    weights = [share if i in kept else 0.0 for i in range(n)]
    lineage = _lineage(method="greedy_soup", parents=parents,
                       base=None, info={"kept": len(kept)}, weights=weights)  # fmt: skip
    result = {"greedy": {"metric": METRIC, "dev_split": dev, "steps": steps,
                         "kept": [parents[i].pk for i in kept]},
              "dev": {METRIC: current}}  # fmt: skip
    return path, lineage, result
