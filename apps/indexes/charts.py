"""Recall against latency and against memory for every index of one model over one corpus, as
plain SVG geometry for the template; the Pareto front (no other index is both faster, or
smaller, and better) is drawn as a line."""

from __future__ import annotations

import math

from apps.core.charts import Frame, padded

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 420, 300, 52, 16, 16, 44
FRAME = Frame.of(WIDTH, HEIGHT, left=PAD_L, right=PAD_R, top=PAD_T, bottom=PAD_B)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats: lower-or-equal x with higher y (or
    equal y with lower x). x is a cost (latency, bytes), y a quality (recall)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _panel(*, items: list[dict], x_key: str, x_label: str, unit: str, current: int) -> dict | None:
    pts = [
        (float(it[x_key]), float(it["recall"]), it)
        for it in items
        if it.get(x_key) and it.get("recall") is not None and float(it[x_key]) > 0
    ]
    if not pts:
        return None
    xs = [p[0] for p in pts]
    # Costs span orders of magnitude (binary HNSW to flat float), hence a log axis; recall from
    # the tenth below the worst index up to a perfect 1.
    x = FRAME.x(*padded(min(xs), max(xs), factor=1.5), log=True)
    worst = math.floor(min(p[1] for p in pts) * 10) / 10
    y = FRAME.y(*padded(worst, 1.0, minimum=0.05, bounds=(0.0, 1.0)))

    front = set(pareto_front([(cost, recall) for cost, recall, _ in pts]))
    dots = []
    for i, (cost, recall, it) in enumerate(pts):
        dots.append(
            {
                "cx": x(cost),
                "cy": y(recall),
                "front": i in front,
                "current": it["pk"] == current,
                "href": it["href"],
                "label": f"#{it['pk']}",
                "title": f"#{it['pk']} {it['label']}: recall@10 {recall:.3f}, {cost:,.3g} {unit}",
            }
        )
    line = " ".join(
        f"{x(pts[i][0])},{y(pts[i][1])}" for i in sorted(front, key=lambda i: pts[i][0])
    )
    return {
        **FRAME.geometry(),
        "dots": dots,
        "front": line,
        "x_label": x_label,
        "x_ticks": [{"v": f"{v:g}", "x": x(v)} for v in x.ticks()],
        "y_ticks": [{"v": f"{v:.2f}", "y": y(v)} for v in y.ticks(5)],
    }


def tradeoff_charts(*, builds, current: int) -> list[dict]:
    """Two panels: recall@10 against p50 latency, and against bytes per vector (log x)."""
    from django.urls import reverse

    items = []
    for b in builds:
        m = b.metrics or {}
        items.append(
            {
                "pk": b.pk,
                "label": b.label,
                "href": reverse("indexes:detail", args=[b.pk]),
                "recall": m.get("recall_at_10"),
                "latency": m.get("latency_p50_ms"),
                # What serving needs: the index file and what it keeps beside it (float vectors
                # for re-scoring, PCA, filters), not the index file alone.
                "bytes": m.get("total_bytes_per_vector", m.get("bytes_per_vector")),
            }
        )
    panels = [
        _panel(
            items=items,
            x_key="latency",
            x_label="p50 latency per query (ms, log)",
            unit="ms",
            current=current,
        ),  # fmt: skip
        _panel(
            items=items,
            x_key="bytes",
            x_label="bytes per vector (log)",
            unit="bytes per vector",
            current=current,
        ),  # fmt: skip
    ]
    return [p for p in panels if p]


REL_W, REL_H = 360, 320
REL_FRAME = Frame.of(REL_W, REL_H, left=48, right=14, top=14, bottom=48)


def reliability_chart(bins: list[dict]) -> dict | None:
    """The reliability diagram of a calibration's held-out hits: per bin of predicted
    probability, the fraction found relevant against the mean predicted (the diagonal is
    perfect calibration), and under it each bin's share of the hits."""
    filled = [b for b in bins if b.get("count")]
    if not filled:
        return None
    x = REL_FRAME.x(0.0, 1.0)
    y = REL_FRAME.y(0.0, 1.0)
    total = sum(b["count"] for b in filled)
    biggest = max(b["count"] for b in filled)
    band = REL_FRAME.plot_height * 0.18  # the share bars' height at the most filled bin
    points, bars = [], []
    for b in filled:
        title = (f"{b['lo']:.1f}–{b['hi']:.1f}: {b['count']:,} hits ({b['count'] / total:.1%}), "
                 f"predicted {b['predicted']:.3f}, relevant {b['observed']:.3f}")  # fmt: skip
        points.append({"x": x(b["predicted"]), "y": y(b["observed"]), "title": title})
        height = band * b["count"] / biggest
        bars.append({"x": x(b["lo"]) + 1, "width": max(x(b["hi"]) - x(b["lo"]) - 2, 1),
                     "y": round(REL_FRAME.bottom - height, 2), "height": round(height, 2),
                     "title": title})  # fmt: skip
    return {
        **REL_FRAME.geometry(),
        "diagonal": f"{x(0.0)},{y(0.0)} {x(1.0)},{y(1.0)}",
        "line": " ".join(f"{p['x']},{p['y']}" for p in points),
        "points": points,
        "bars": bars,
        "x_ticks": [{"v": f"{v:.1f}", "x": x(v)} for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)],
        "y_ticks": [{"v": f"{v:.1f}", "y": y(v)} for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)],
    }
