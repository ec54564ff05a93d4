"""Shapes for the evaluation page's what-if sweep and diagnostics (tables and SVG geometry)."""

from __future__ import annotations

from apps.core.charts import Frame, padded
from apps.datasets.charts import histogram_chart

PRECISION_CSS = {"float32": "s1", "int8": "s2", "binary": "s3", "binary_rescore": "s4"}
PRECISION_LABEL = {
    "float32": "float32",
    "int8": "int8",
    "binary": "binary",
    "binary_rescore": "binary + float re-scoring",
}
W, H, PAD = 640, 240, 36
FRAME = Frame.of(W, H, PAD)


def sweep_table(rows: list[dict]) -> dict:
    """{"dims": [...], "rows": [{"precision", "label", "cells": [row or None per dim]}]}, with
    the best nDCG@10 per dimension marked."""
    dims = sorted({r["dim"] for r in rows})
    precisions = [p for p in PRECISION_CSS if any(r["precision"] == p for r in rows)]
    by = {(r["dim"], r["precision"]): r for r in rows}
    best = {d: max((by[(d, p)]["ndcg@10"] for p in precisions if (d, p) in by), default=None)
            for d in dims}  # fmt: skip
    table = []
    for p in precisions:
        cells = []
        for d in dims:
            r = by.get((d, p))
            cells.append(dict(r, best=r is not None and r["ndcg@10"] == best[d]) if r else None)
        table.append({"precision": p, "label": PRECISION_LABEL[p], "cells": cells})
    return {"dims": dims, "rows": table}


def sweep_chart(rows: list[dict]) -> dict | None:
    """nDCG@10 against bytes per vector (log scale), one series per precision."""
    points = [r for r in rows if r.get("bytes_per_vector")]
    if not points:
        return None
    sizes = [r["bytes_per_vector"] for r in points]
    ys = [r["ndcg@10"] for r in points]
    # Each halving of the bytes (dimensions, precision) takes the same length: a log axis.
    x = FRAME.x(min(sizes), max(sizes), log=True, digits=1)
    y = FRAME.y(*padded(min(ys), max(ys), fraction=0.1, minimum=0.01, bounds=(0.0, 1.0)), digits=1)

    series = []
    for p, css in PRECISION_CSS.items():
        mine = sorted(
            (r for r in points if r["precision"] == p), key=lambda r: r["bytes_per_vector"]
        )
        if not mine:
            continue
        coords = [
            {
                "x": x(r["bytes_per_vector"]),
                "y": y(r["ndcg@10"]),
                "title": f"{PRECISION_LABEL[p]}, {r['dim']} dims, {r['bytes_per_vector']:,} B: "
                f"nDCG@10 {r['ndcg@10']:.4f}",
            }
            for r in mine
        ]
        series.append({
            "label": PRECISION_LABEL[p],
            "css": css,
            "points": coords,
            "path": " ".join(f"{c['x']},{c['y']}" for c in coords),
        })  # fmt: skip
    return {
        **FRAME.geometry(),
        "series": series,
        "x_ticks": [{"x": x(b), "label": f"{b:,}"} for b in sorted(set(sizes))],
        "y_ticks": [{"y": y(v), "label": f"{v:.3f}"} for v in y.ticks(3)],
    }


def score_distribution_chart(diagnostics: dict) -> dict | None:
    """Positive vs negative cosine histograms as shares of their own totals, so the two shapes
    compare even though a query has far more retrieved negatives than judged positives."""
    dist = diagnostics.get("score_distributions") or {}
    edges = dist.get("edges") or []
    pos, neg = dist.get("positive") or [], dist.get("negative") or []
    if not edges or not (sum(pos) or sum(neg)):
        return None

    def share(counts):
        total = sum(counts) or 1
        return [round(1000 * c / total) for c in counts]  # per mille keeps integer bars

    return histogram_chart(
        edges=[round(e, 3) for e in edges],
        series=[
            ("judged relevant", "s1", share(pos)),
            ("retrieved non-relevant (top 10)", "s3", share(neg)),
        ],
    )


def ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are
    not pulled towards 0."""
    out, last = [], 0.0
    for i, v in enumerate(values, start=1):
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight**i))
    return out


def curve_chart(
    points: list[dict], *, key: str, label: str, smooth: float | None = None
) -> dict | None:
    """A line over training steps of ``point[key]`` (loss, or an eval metric under "eval");
    with ``smooth`` (an EMA weight, e.g. 0.8) a smoothed line over the raw one."""
    xy = []
    for p in points:
        value = p.get(key) if key in p else (p.get("eval") or {}).get(key)
        if isinstance(value, int | float) and p.get("step") is not None:
            xy.append((float(p["step"]), float(value)))
    if not xy:
        return None
    steps, values = [s for s, _ in xy], [v for _, v in xy]
    x = FRAME.x(min(steps), max(steps), digits=1)
    y = FRAME.y(*padded(min(values), max(values)), digits=1)
    coords = [(x(step), y(value), step, value) for step, value in xy]
    return {
        **FRAME.geometry(),
        "label": label,
        "path": " ".join(f"{cx},{cy}" for cx, cy, _, _ in coords),
        "points": [
            {"x": cx, "y": cy, "title": f"step {int(step)}: {value:.4f}"}
            for cx, cy, step, value in coords
        ]
        if len(coords) <= 60
        else [],
        "x_ticks": [{"x": x(v), "label": f"{int(v)}"} for v in x.ticks(3)],
        "y_ticks": [{"y": y(v), "label": f"{v:.3g}"} for v in y.ticks(3)],
        "last": xy[-1][1],
        "smooth": smooth if smooth and len(values) > 2 else None,
        "smooth_path": " ".join(
            f"{x(step)},{y(value)}" for step, value in zip(steps, ema(values, smooth), strict=True)
        )
        if smooth and len(values) > 2
        else "",
    }
