"""Recall against latency and against memory for every index of one model over one corpus, as
plain SVG geometry for the template; the Pareto front (no other index is both faster, or
smaller, and better) is drawn as a line."""

from __future__ import annotations

import math

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 420, 300, 52, 16, 16, 44


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


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10**exp
            if lo <= v <= hi:
                ticks.append(v)
    return ticks or [lo, hi]


def _panel(*, items: list[dict], x_key: str, x_label: str, unit: str, current: int) -> dict | None:
    pts = [
        (float(it[x_key]), float(it["recall"]), it)
        for it in items
        if it.get(x_key) and it.get("recall") is not None and float(it[x_key]) > 0
    ]
    if not pts:
        return None
    xs = [p[0] for p in pts]
    lo, hi = min(xs) / 1.5, max(xs) * 1.5
    y_lo = max(0.0, math.floor(min(p[1] for p in pts) * 10) / 10 - 0.05)
    y_hi = 1.0
    pw, ph = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def sx(v: float) -> float:
        return round(PAD_L + pw * (math.log10(v) - math.log10(lo)) / (math.log10(hi / lo)), 2)

    def sy(v: float) -> float:
        return round(PAD_T + ph * (1 - (v - y_lo) / ((y_hi - y_lo) or 1)), 2)

    front = set(pareto_front([(x, y) for x, y, _ in pts]))
    dots = []
    for i, (x, y, it) in enumerate(pts):
        dots.append(
            {
                "cx": sx(x),
                "cy": sy(y),
                "front": i in front,
                "current": it["pk"] == current,
                "href": it["href"],
                "label": f"#{it['pk']}",
                "title": f"#{it['pk']} {it['label']}: recall@10 {y:.3f}, {x:,.3g} {unit}",
            }
        )
    line = " ".join(
        f"{sx(pts[i][0])},{sy(pts[i][1])}" for i in sorted(front, key=lambda i: pts[i][0])
    )
    y_ticks = [
        {"v": f"{v:.2f}", "y": sy(v)} for v in (y_lo + (y_hi - y_lo) * i / 4 for i in range(5))
    ]
    x_ticks = [{"v": f"{v:g}", "x": sx(v)} for v in _log_ticks(lo, hi)]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": PAD_L,
        "right": WIDTH - PAD_R,
        "top": PAD_T,
        "bottom": HEIGHT - PAD_B,
        "dots": dots,
        "front": line,
        "x_label": x_label,
        "x_ticks": x_ticks,
        "y_ticks": y_ticks,
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
                "bytes": m.get("bytes_per_vector"),
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
