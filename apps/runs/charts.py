"""The per-query A-vs-B scatter as plain SVG geometry for the template (no chart library, no
JavaScript), in the manner of apps/datasets/charts.py."""

from __future__ import annotations

SIZE, PAD = 420, 40


def scatter_chart(
    *,
    points: list[tuple[float, float, str, str]],
    x_label: str,
    y_label: str,
    lo: float = 0.0,
    hi: float = 1.0,
) -> dict | None:
    """``points`` are (x, y, title, href). Axes share one range so the diagonal y = x splits
    the square into "B better" (above) and "A better" (below).

    Queries often land on exactly the same spot (both 0, both 1): those become one dot whose
    radius grows with the count and whose title lists them, so a pile of 200 queries at (0, 0)
    does not read as one.
    """
    if not points:
        return None
    span = (hi - lo) or 1.0
    plot = SIZE - 2 * PAD

    def sx(v: float) -> float:
        return round(PAD + plot * (min(max(v, lo), hi) - lo) / span, 2)

    def sy(v: float) -> float:
        return round(PAD + plot * (1 - (min(max(v, lo), hi) - lo) / span), 2)

    groups: dict[tuple[float, float], list[tuple[str, str]]] = {}
    for x, y, title, href in points:
        groups.setdefault((round(x, 4), round(y, 4)), []).append((title, href))
    dots = []
    for (x, y), members in sorted(groups.items()):
        n = len(members)
        titles = [t for t, _ in members]
        title = "; ".join(titles[:8]) + (f"; … {n - 8} more" if n > 8 else "")
        dots.append(
            {
                "cx": sx(x),
                "cy": sy(y),
                "r": round(min(4 + 2 * (n - 1) ** 0.5, 14), 1),
                "css": "up" if y > x else "down" if y < x else "tie",
                "title": f"{title} (x {x:.4f}, y {y:.4f})" if n == 1 else f"{n} queries: {title}",
                "href": members[0][1],
                "count": n,
            }
        )
    ticks = [{"v": f"{v:g}", "x": sx(v), "y": sy(v)} for v in (lo + span * i / 4 for i in range(5))]
    return {
        "size": SIZE,
        "left": PAD,
        "right": PAD + plot,
        "top": PAD,
        "bottom": PAD + plot,
        "mid": PAD + plot / 2,
        "dots": dots,
        "ticks": ticks,
        "x_label": x_label,
        "y_label": y_label,
        "above": sum(len(m) for (x, y), m in groups.items() if y > x),
        "below": sum(len(m) for (x, y), m in groups.items() if y < x),
        "ties": sum(len(m) for (x, y), m in groups.items() if y == x),
    }
