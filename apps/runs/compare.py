"""Reads for comparing evaluations: metric tables with significance, per-query deltas, and the
top-10 lists of two evaluations side by side. Team-scoped like every selector; the statistics
themselves live in apps.runs.significance (no Django there)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.http import Http404

from apps.accounts.models import Team
from apps.accounts.selectors import team_scoped_get
from apps.core.models import JobStatus
from apps.datasets.models import DatasetVersion, Document, Qrel, Query
from apps.runs.models import Evaluation, QueryResult
from apps.runs.significance import ALPHA, RESAMPLES, SEED, holm, p_phrase, verdict
from workers.common.metrics import METRICS

MAX_COMPARED = 8
DEFAULT_METRIC = "ndcg@10"
TOP = 10


class ComparisonError(ValueError):
    """A comparison that cannot be made (the page answers 400 with this message)."""


# --- which evaluations --------------------------------------------------------------------


def _pks(values: list[str], what: str) -> list[int]:
    out: list[int] = []
    for v in values:
        try:
            pk = int(v)
        except (TypeError, ValueError):
            raise ComparisonError(f"{what}: {v!r} is not an evaluation number.") from None
        if pk not in out:
            out.append(pk)
    return out


def comparison_evaluations_get(
    *, pks: list[str], baseline: str | None, user=None, team: Team | None = None
) -> tuple[list[Evaluation], Evaluation]:
    """The evaluations named by ``pks`` (in that order) and the baseline among them (by
    default the earliest).

    Every evaluation is fetched through the team scope first: one that belongs to another team
    is a 404 before anything else is said about the request, so an error message never reveals
    what another team's evaluation is. Web pages pass ``user`` (any of the user's teams, like
    every object page); the API passes the token's ``team``.
    """
    ids = _pks(pks, "e")
    if not ids:
        raise ComparisonError("Choose two or more evaluations to compare.")
    if len(ids) > MAX_COMPARED:
        raise ComparisonError(f"Compare at most {MAX_COMPARED} evaluations at a time.")
    queryset = Evaluation.objects.select_related("model", "dataset_version__dataset", "team")
    if team is not None:
        found = {e.pk: e for e in queryset.filter(team=team, pk__in=ids)}
        if len(found) != len(ids):
            raise Http404
        evaluations = [found[pk] for pk in ids]
    else:
        evaluations = [team_scoped_get(queryset=queryset, user=user, pk=pk) for pk in ids]
    # Without a choice the earliest evaluation is the baseline: usually the one a newer run is
    # meant to beat, and independent of the order the boxes were ticked in.
    base_pk = _pks([baseline], "baseline")[0] if baseline else min(ids)
    base = next((e for e in evaluations if e.pk == base_pk), None)
    if base is None:
        # A baseline outside the compared set: fetch it through the scope for the same 404.
        if team is not None:
            if not Evaluation.objects.filter(team=team, pk=base_pk).exists():
                raise Http404
        else:
            team_scoped_get(queryset=Evaluation.objects.all(), user=user, pk=base_pk)
        raise ComparisonError(f"The baseline #{base_pk} is not one of the compared evaluations.")
    comparison_check(evaluations=evaluations)
    return evaluations, base


def comparison_check(*, evaluations: list[Evaluation]) -> None:
    """Per-query values are paired by query: only one split of one dataset version pairs up."""
    if len(evaluations) < 2:
        raise ComparisonError("Choose two or more evaluations to compare.")
    unfinished = [e for e in evaluations if e.status != JobStatus.SUCCEEDED]
    if unfinished:
        names = ", ".join(f"#{e.pk} ({e.get_status_display().lower()})" for e in unfinished)
        raise ComparisonError(f"Only succeeded evaluations can be compared: {names}.")
    first = evaluations[0]
    if len({e.team_id for e in evaluations}) > 1:
        raise ComparisonError("Evaluations of different teams cannot be compared.")
    others = [
        e
        for e in evaluations
        if (e.dataset_version_id, e.split) != (first.dataset_version_id, first.split)
    ]
    if others:
        names = "; ".join(f"#{e.pk} is on {e.dataset_version} split {e.split}" for e in others)
        raise ComparisonError(
            f"Evaluations must be on the same dataset version and split to be compared "
            f"per query: #{first.pk} is on {first.dataset_version} split {first.split}; {names}."
        )


# --- per-query values ----------------------------------------------------------------------


def metric_names(evaluations: list[Evaluation]) -> list[str]:
    """Metrics every compared evaluation has, in the order the evaluation pages use."""
    common = set.intersection(*(set(e.metrics) for e in evaluations)) if evaluations else set()
    return [m for m in METRICS if m in common] + sorted(common - set(METRICS))


def split_query_pks(*, version: DatasetVersion, split: str) -> list[int]:
    """The split's judged queries: the population every metric is averaged over."""
    return sorted(
        Qrel.objects.filter(version=version, split=split)
        .values_list("query_id", flat=True)
        .distinct()
    )


def per_query_values(*, evaluations: list[Evaluation], metrics: list[str]):
    """(query pks, array [evaluation, metric, query]) over the split's judged queries.

    A judged query without a result row, or a row without the metric, counts as 0 — what
    trec_eval does for a query the run does not answer — so every evaluation is averaged over
    the same queries and the values pair up.
    """
    import numpy as np

    first = evaluations[0]
    queries = set(split_query_pks(version=first.dataset_version, split=first.split))
    rows = QueryResult.objects.filter(evaluation__in=evaluations).values_list(
        "evaluation_id", "query_id", "metrics"
    )
    by_eval: dict[int, dict[int, dict]] = {e.pk: {} for e in evaluations}
    for eval_pk, query_pk, values in rows.iterator():
        by_eval[eval_pk][query_pk] = values
        queries.add(query_pk)
    order = sorted(queries)
    data = np.zeros((len(evaluations), len(metrics), len(order)))
    for i, e in enumerate(evaluations):
        results = by_eval[e.pk]
        for q, query_pk in enumerate(order):
            values = results.get(query_pk)
            if values:
                for m, name in enumerate(metrics):
                    data[i, m, q] = float(values.get(name) or 0.0)
    return order, data


# --- the comparison table ------------------------------------------------------------------


def signed(v: float) -> str:
    # A delta always shows its sign; −0.0000 would read as a loss.
    return "±0.0000" if round(v, 4) == 0 else f"{v:+.4f}"


@dataclass
class Cell:
    evaluation: Evaluation
    value: float
    best: bool = False
    is_baseline: bool = False
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_t: float | None = None
    p_perm: float | None = None
    p_t_holm: float | None = None
    p_perm_holm: float | None = None
    significant: bool = False
    verdict: str = ""

    @property
    def direction(self) -> str:
        if self.delta is None or not self.significant:
            return "same"
        return "up" if self.delta > 0 else "down"

    @property
    def delta_text(self) -> str:
        return "" if self.delta is None else signed(self.delta)

    @property
    def ci_text(self) -> str:
        if self.ci_low is None or self.ci_high is None:
            return ""
        return f"{signed(self.ci_low)} to {signed(self.ci_high)}"

    @property
    def p_label(self) -> str:
        return p_phrase(self.p_perm_holm) if self.p_perm_holm is not None else ""


@dataclass
class Row:
    metric: str
    cells: list[Cell] = field(default_factory=list)


@dataclass
class Comparison:
    evaluations: list[Evaluation]
    baseline: Evaluation
    metrics: list[str]
    rows: list[Row]
    n_queries: int
    alpha: float = ALPHA
    resamples: int = RESAMPLES
    seed: int = SEED

    @property
    def version(self) -> DatasetVersion:
        return self.baseline.dataset_version

    @property
    def split(self) -> str:
        return self.baseline.split

    @property
    def others(self) -> list[Evaluation]:
        return [e for e in self.evaluations if e.pk != self.baseline.pk]

    def row(self, metric: str) -> Row | None:
        return next((r for r in self.rows if r.metric == metric), None)

    @property
    def headline(self) -> list[Cell]:
        """nDCG@10 (or the first metric) of every run against the baseline, for a sentence."""
        row = self.row(DEFAULT_METRIC) or (self.rows[0] if self.rows else None)
        return [c for c in row.cells if not c.is_baseline] if row else []

    @property
    def headline_metric(self) -> str:
        return DEFAULT_METRIC if self.row(DEFAULT_METRIC) else (self.metrics or [""])[0]


def _statistics(*, evaluations, baseline, metrics, resamples, seed) -> dict:
    """{(eval pk, metric): PairedResult fields} for every run against the baseline.

    One call per test over every (run, metric) row at once. Cached: a succeeded evaluation's
    per-query values never change, and the randomization test over 13 metrics takes a second
    or more on a few hundred queries. The key carries every finish time, so an evaluation that
    was somehow re-run cannot be served stale figures.
    """
    import numpy as np

    from apps.runs.significance import paired_compare

    stamp = ",".join(
        f"{e.pk}:{e.finished_at.isoformat() if e.finished_at else ''}" for e in evaluations
    )
    raw = f"{baseline.pk}|{stamp}|{','.join(metrics)}|{resamples}|{seed}"
    key = "runs:compare:" + hashlib.sha256(raw.encode()).hexdigest()
    try:
        cached = cache.get(key)
    except Exception:  # the cache (Redis) is down: compute, as on a miss
        cached = None
    if cached is not None:
        return cached
    order, data = per_query_values(evaluations=evaluations, metrics=metrics)
    base_i = evaluations.index(baseline)
    others = [i for i in range(len(evaluations)) if i != base_i]
    a = np.concatenate([data[base_i] for _ in others]) if others else np.zeros((0, len(order)))
    b = np.concatenate([data[i] for i in others]) if others else np.zeros((0, len(order)))
    results = paired_compare(a, b, resamples=resamples, seed=seed) if len(a) else []
    out: dict = {"n": len(order), "means": {}, "pairs": {}}
    for i, e in enumerate(evaluations):
        for m, name in enumerate(metrics):
            out["means"][(e.pk, name)] = float(data[i, m].mean()) if len(order) else 0.0
    for j, i in enumerate(others):
        for m, name in enumerate(metrics):
            r = results[j * len(metrics) + m]
            out["pairs"][(evaluations[i].pk, name)] = r
    try:
        cache.set(key, out, timeout=24 * 3600)
    except Exception:
        pass  # a down cache only costs recomputing next time
    return out


def comparison_build(
    *,
    evaluations: list[Evaluation],
    baseline: Evaluation,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Every metric of every evaluation, the best per metric, and each run's delta against the
    baseline with both tests, Holm across the runs, and the bootstrap interval."""
    comparison_check(evaluations=evaluations)
    metrics = metric_names(evaluations)
    stats = _statistics(
        evaluations=evaluations,
        baseline=baseline,
        metrics=metrics,
        resamples=resamples,
        seed=seed,
    )
    rows = []
    for name in metrics:
        cells = [
            Cell(evaluation=e, value=stats["means"][(e.pk, name)], is_baseline=e == baseline)
            for e in evaluations
        ]
        top = max(c.value for c in cells)
        for c in cells:
            # Every metric here is "higher is better"; ties share the highlight.
            c.best = abs(c.value - top) < 1e-12
        others = [c for c in cells if not c.is_baseline]
        # Holm over the runs compared with this baseline on this metric: the family is "which
        # of these runs differ from the baseline", tested once per metric.
        perm_holm = holm([stats["pairs"][(c.evaluation.pk, name)].p_perm for c in others])
        t_holm = holm([stats["pairs"][(c.evaluation.pk, name)].p_t for c in others])
        for c, p_perm_adj, p_t_adj in zip(others, perm_holm, t_holm, strict=True):
            r = stats["pairs"][(c.evaluation.pk, name)]
            c.delta, c.ci_low, c.ci_high = r.delta, r.ci_low, r.ci_high
            c.p_t, c.p_perm = r.p_t, r.p_perm
            c.p_t_holm, c.p_perm_holm = p_t_adj, p_perm_adj
            c.significant = p_perm_adj <= ALPHA
            c.verdict = verdict(p_perm_adj)
        rows.append(Row(metric=name, cells=cells))
    return Comparison(
        evaluations=evaluations,
        baseline=baseline,
        metrics=metrics,
        rows=rows,
        n_queries=stats["n"],
        resamples=resamples,
        seed=seed,
    )


def paired_headline(
    *, baseline: Evaluation, other: Evaluation, metric: str = DEFAULT_METRIC
) -> dict:
    """``other`` against ``baseline`` on one metric, query by query as the comparison page does:
    both values, the relative drop, the Cell (delta, interval, p-value, significance) and the
    number of queries. Both evaluations must have succeeded on the same split."""
    comparison = comparison_build(evaluations=[baseline, other], baseline=baseline)
    cell = next(c for c in comparison.row(metric).cells if not c.is_baseline)
    high, low = baseline.metrics[metric], other.metrics[metric]
    return {
        "metric": metric,
        "baseline": high,
        "other": low,
        "drop": (high - low) / high if high else None,
        "cell": cell,
        "queries": comparison.n_queries,
    }


def comparison_payload(comparison: Comparison) -> dict:
    """The comparison as plain JSON (the API and nothing else decides this shape)."""

    def num(v):
        return None if v is None else round(float(v), 6)

    return {
        "dataset_version": comparison.version.pk,
        "split": comparison.split,
        "queries": comparison.n_queries,
        "baseline": comparison.baseline.pk,
        "alpha": comparison.alpha,
        "tests": {
            "primary": "paired randomization test (scipy.stats.permutation_test, "
            f"permutation_type='samples', {comparison.resamples} resamples, seed "
            f"{comparison.seed}), Holm-corrected across the runs compared with the baseline",
            "also": "paired t-test (scipy.stats.ttest_rel)",
            "interval": "95% bootstrap BCa interval of the mean per-query delta "
            "(scipy.stats.bootstrap)",
        },
        "evaluations": [
            {
                "id": e.pk,
                "label": e.label,
                "method": e.method,
                "model": e.model_id,
                "metrics": {
                    row.metric: num(c.value)
                    for row in comparison.rows
                    for c in row.cells
                    if c.evaluation == e
                },
            }
            for e in comparison.evaluations
        ],
        "deltas": [
            {
                "evaluation": c.evaluation.pk,
                "metric": row.metric,
                "delta": num(c.delta),
                "ci95": [num(c.ci_low), num(c.ci_high)],
                "p_randomization": num(c.p_perm),
                "p_randomization_holm": num(c.p_perm_holm),
                "p_t_test": num(c.p_t),
                "p_t_test_holm": num(c.p_t_holm),
                "significant": c.significant,
                "verdict": c.verdict,
            }
            for row in comparison.rows
            for c in row.cells
            if not c.is_baseline
        ],
    }


# --- per-query drill-down ------------------------------------------------------------------


@dataclass
class QueryDelta:
    pk: int
    query_id: str
    text: str
    a: float
    b: float

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def delta_text(self) -> str:
        return signed(self.delta)


def query_deltas(
    *, a: Evaluation, b: Evaluation, metric: str, order: str = "asc"
) -> list[QueryDelta]:
    """Every judged query with both values, sorted by b − a (ascending: b's worst losses
    first), ties by query id."""
    comparison_check(evaluations=[a, b])
    if metric not in metric_names([a, b]):
        raise ComparisonError(f"Unknown metric {metric!r}.")
    order_pks, data = per_query_values(evaluations=[a, b], metrics=[metric])
    texts = dict(
        (pk, (qid, text))
        for pk, qid, text in Query.objects.filter(pk__in=order_pks).values_list(
            "pk", "query_id", "text"
        )
    )
    rows = [
        QueryDelta(
            pk=pk,
            query_id=texts.get(pk, ("?", ""))[0],
            text=texts.get(pk, ("?", ""))[1],
            a=float(data[0, 0, q]),
            b=float(data[1, 0, q]),
        )
        for q, pk in enumerate(order_pks)
    ]
    # Rounded so that float noise (0.4 + 0.3 − 0.4 ≠ 0.3) does not break ties by query id.
    rows.sort(key=lambda r: (round(r.delta if order == "asc" else -r.delta, 9), r.query_id))
    return rows


def run_file_top(*, evaluation: Evaluation, query_id: str, k: int = TOP) -> list[tuple]:
    """[(rank, doc id, score)] of one query from the evaluation's TREC run file, best first.

    The file is read line by line and left as soon as the query's block has passed (a run is
    written query by query), so a click costs one partial scan, not a full parse. Returns None
    when the file is gone or outside the artifacts folder (never read a path the row names
    without that check).
    """
    from workers.common.store import artifact_inside

    path = artifact_inside(evaluation.run_file, settings.ARTIFACTS_ROOT)
    if path is None or not path.is_file():
        return None
    found: list[tuple] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 6:
                continue
            if parts[0] != query_id:
                if found:
                    break
                continue
            found.append((int(parts[3]), parts[2], float(parts[4])))
    found.sort()
    return found[:k]


@dataclass
class Side:
    evaluation: Evaluation
    hits: list[dict] | None  # None: no run file to read
    missed: list[dict]
    value: float


def query_compare(*, a: Evaluation, b: Evaluation, query: Query, metric: str) -> list[Side]:
    """The top-10 of each evaluation for one query with relevance grades from the split's
    judgements, and the judged-relevant documents each one left out of its top-10."""
    comparison_check(evaluations=[a, b])
    grades = dict(
        Qrel.objects.filter(version=a.dataset_version, split=a.split, query=query).values_list(
            "document__doc_id", "score"
        )
    )
    tops = {e.pk: run_file_top(evaluation=e, query_id=query.query_id) for e in (a, b)}
    wanted = set(grades)
    for top in tops.values():
        wanted.update(doc_id for _, doc_id, _ in top or [])
    docs = {
        d.doc_id: d
        for d in Document.objects.filter(version=a.dataset_version, doc_id__in=wanted).only(
            "doc_id", "title", "text"
        )
    }
    values = {
        r.evaluation_id: float(r.metrics.get(metric) or 0.0)
        for r in QueryResult.objects.filter(evaluation__in=[a, b], query=query)
    }
    sides = []
    for e in (a, b):
        top = tops[e.pk]
        hits = None
        missed = []
        if top is not None:
            hits = [
                {
                    "rank": rank,
                    "doc_id": doc_id,
                    "score": score,
                    "grade": grades.get(doc_id),
                    "document": docs.get(doc_id),
                }
                for rank, doc_id, score in top
            ]
            shown = {doc_id for _, doc_id, _ in top}
            missed = [
                {"doc_id": doc_id, "grade": grade, "document": docs.get(doc_id)}
                for doc_id, grade in sorted(grades.items(), key=lambda kv: (-kv[1], kv[0]))
                if grade > 0 and doc_id not in shown
            ]
        sides.append(Side(evaluation=e, hits=hits, missed=missed, value=values.get(e.pk, 0.0)))
    return sides


# --- leaderboard ---------------------------------------------------------------------------


@dataclass
class Leaderboard:
    version: DatasetVersion
    evaluations: list[Evaluation]
    metrics: list[str]
    sort: str
    direction: str
    split: str
    model: str
    method: str
    splits: list[str]
    models: list[tuple[int, str]]
    best: dict = field(default_factory=dict)  # {(split, metric): best value}
    others: int = 0  # evaluations on the version that have not (or not yet) succeeded

    def is_best(self, evaluation: Evaluation, metric: str) -> bool:
        value = evaluation.metrics.get(metric)
        return value is not None and value == self.best.get((evaluation.split, metric))

    @property
    def filters(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (("split", self.split), ("model", self.model), ("method", self.method))
            if v
        }

    @property
    def query(self) -> str:
        """The current filters and order, for export links."""
        return urlencode({**self.filters, "sort": self.sort, "dir": self.direction})

    @property
    def headers(self) -> list[dict]:
        """One sortable column per metric: a click sorts by it, a second click reverses."""
        out = []
        for m in self.metrics:
            current = m == self.sort
            direction = "asc" if current and self.direction == "desc" else "desc"
            out.append(
                {
                    "metric": m,
                    "query": urlencode({**self.filters, "sort": m, "dir": direction}),
                    "current": current,
                    "arrow": ("▼" if self.direction == "desc" else "▲") if current else "",
                }
            )
        return out

    @property
    def table(self) -> list[tuple[Evaluation, list[dict]]]:
        return [
            (
                e,
                [
                    {"metric": m, "value": e.metrics.get(m), "best": self.is_best(e, m)}
                    for m in self.metrics
                ],
            )
            for e in self.evaluations
        ]


def leaderboard_get(
    *,
    version: DatasetVersion,
    split: str = "",
    model: str = "",
    method: str = "",
    sort: str = DEFAULT_METRIC,
    direction: str = "desc",
) -> Leaderboard:
    """Succeeded evaluations on one dataset version, filtered and sorted by any metric.

    The version has already been fetched through the team scope; the evaluations are those of
    its team. Sorting is in Python: metrics are a JSON dict and a version has tens of
    evaluations, not millions. Unknown filter values filter nothing out rather than fail, so a
    stale bookmarked link still shows a leaderboard.
    """
    base = Evaluation.objects.filter(
        team_id=version.dataset.team_id, dataset_version=version
    ).select_related("model")
    done = base.filter(status=JobStatus.SUCCEEDED)
    splits = sorted(set(done.values_list("split", flat=True)) | set(version.qrels_counts))
    models = sorted(
        {(e.model_id, e.model.name) for e in done if e.model_id}, key=lambda m: (m[1], m[0])
    )
    rows = list(done)
    if split:
        rows = [e for e in rows if e.split == split]
    if model.isdigit():
        rows = [e for e in rows if e.model_id == int(model)]
    if method in Evaluation.Method.values:
        rows = [e for e in rows if e.method == method]
    metrics = [m for m in METRICS if any(m in e.metrics for e in rows)] or list(METRICS)
    if sort not in metrics:
        sort = DEFAULT_METRIC if DEFAULT_METRIC in metrics else metrics[0]
    direction = "asc" if direction == "asc" else "desc"
    sign = 1 if direction == "asc" else -1
    # Missing values sort last either way; ties fall back to the newest evaluation first.
    rows.sort(
        key=lambda e: (
            e.metrics.get(sort) is None,
            sign * (e.metrics.get(sort) or 0.0),
            -e.pk,
        )
    )
    best: dict = {}
    for e in rows:
        for m in metrics:
            v = e.metrics.get(m)
            if v is not None and v > best.get((e.split, m), float("-inf")):
                best[(e.split, m)] = v
    return Leaderboard(
        version=version,
        evaluations=rows,
        metrics=metrics,
        sort=sort,
        direction=direction,
        split=split,
        model=model if model.isdigit() else "",
        method=method if method in Evaluation.Method.values else "",
        splits=splits,
        models=models,
        best=best,
        others=base.exclude(status=JobStatus.SUCCEEDED).count(),
    )
