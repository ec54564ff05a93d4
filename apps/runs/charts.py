"""The per-query A-vs-B scatter as plain SVG geometry for the template (no chart library, no
JavaScript), in the manner of apps/datasets/charts.py."""

from __future__ import annotations

from apps.core.charts import Frame

SIZE, PAD = 420, 40
FRAME = Frame.of(SIZE, SIZE, PAD)


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
    # One range on both axes; a value outside it sits on the edge rather than off the plot.
    x = FRAME.x(lo, hi, clamp=True)
    y = FRAME.y(lo, hi, clamp=True)
    groups: dict[tuple[float, float], list[tuple[str, str]]] = {}
    for a, b, title, href in points:
        groups.setdefault((round(a, 4), round(b, 4)), []).append((title, href))
    dots = []
    for (a, b), members in sorted(groups.items()):
        n = len(members)
        titles = [t for t, _ in members]
        title = "; ".join(titles[:8]) + (f"; … {n - 8} more" if n > 8 else "")
        dots.append(
            {
                "cx": x(a),
                "cy": y(b),
                "r": round(min(4 + 2 * (n - 1) ** 0.5, 14), 1),
                "css": "up" if b > a else "down" if b < a else "tie",
                "title": f"{title} (x {a:.4f}, y {b:.4f})" if n == 1 else f"{n} queries: {title}",
                "href": members[0][1],
                "count": n,
            }
        )
    ticks = [{"v": f"{v:g}", "x": x(v), "y": y(v)} for v in x.ticks(5)]
    return {
        "size": SIZE,
        "left": FRAME.left,
        "right": FRAME.right,
        "top": FRAME.top,
        "bottom": FRAME.bottom,
        "mid": FRAME.left + FRAME.plot_width / 2,
        "dots": dots,
        "ticks": ticks,
        "x_label": x_label,
        "y_label": y_label,
        "above": sum(len(m) for (a, b), m in groups.items() if b > a),
        "below": sum(len(m) for (a, b), m in groups.items() if b < a),
        "ties": sum(len(m) for (a, b), m in groups.items() if b == a),
    }
