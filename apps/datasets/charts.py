"""Histograms as plain SVG geometry for the templates: no chart library, no JavaScript."""

from __future__ import annotations

from math import ceil

from apps.core.charts import Frame

WIDTH, HEIGHT, PAD = 640, 170, 24
FRAME = Frame.of(WIDTH, HEIGHT, PAD)


def bin_counts(counts: dict, *, bins: int = 30) -> tuple[list[float], list[int]]:
    """{value: count} (e.g. words per document) → equal-width (edges, counts)."""
    items = sorted((float(k), int(v)) for k, v in counts.items())
    if not items:
        return [], []
    lo, hi = 0.0, items[-1][0] + 1
    width = max(1, ceil((hi - lo) / bins))
    n = max(1, ceil((hi - lo) / width))
    out = [0] * n
    for value, count in items:
        out[min(n - 1, int((value - lo) // width))] += count
    return [lo + i * width for i in range(n + 1)], out


def histogram_chart(
    *, edges: list[float], series: list[tuple[str, str, list[int]]], marker: float | None = None
) -> dict | None:
    """Geometry for one SVG: ``series`` is [(label, css class, counts)] over the same ``edges``;
    bars of several series sit side by side in each bin. ``marker`` draws a vertical line (e.g.
    the model's max sequence length)."""
    if not edges or not series or not any(any(c) for _, _, c in series):
        return None
    top = max(max(c) for _, _, c in series) or 1
    x = FRAME.x(edges[0], edges[-1])
    y = FRAME.y(0, top)
    # Bins are equal-width, so a bar's place follows its bin's number.
    bin_w = FRAME.plot_width / (len(edges) - 1)
    bar_w = bin_w / len(series)
    bars = []
    for s, (label, css, counts) in enumerate(series):
        for i, count in enumerate(counts):
            if not count:
                continue
            bars.append(
                {
                    "x": round(FRAME.left + i * bin_w + s * bar_w, 2),
                    "y": y(count),
                    "w": round(max(bar_w - 0.5, 0.5), 2),
                    "h": y.length(count),
                    "css": css,
                    "title": f"{label}: {count:,} in [{edges[i]:g}, {edges[i + 1]:g})",
                }
            )
    ticks = [{"x": x(v), "label": f"{v:g}"} for v in (edges[0], edges[len(edges) // 2], edges[-1])]
    chart = {
        "width": FRAME.width,
        "height": FRAME.height,
        "baseline": FRAME.bottom,
        "left": FRAME.left,
        "right": FRAME.right,
        "top_count": top,
        "bars": bars,
        "ticks": ticks,
        "legend": [(label, css) for label, css, _ in series],
    }
    if marker is not None and x.lo <= marker <= x.hi:
        chart["marker"] = {"x": x(marker), "label": f"{marker:g}"}
    return chart


def words_chart(version) -> dict | None:
    edges, counts = bin_counts(version.stats.get("document_words") or {})
    return histogram_chart(edges=edges, series=[("documents", "s1", counts)])


def token_charts(version) -> list[dict]:
    """One entry per model whose token lengths were measured on this version."""
    out = []
    for model_pk, summary in sorted((version.stats.get("tokens") or {}).items()):
        groups = []
        for name in ("documents", "queries", "anchors", "positives"):
            s = summary.get(name)
            if not s or not s.get("histogram"):
                continue
            edges = [e for e, _ in s["histogram"]] + [s["histogram"][-1][0] + s["bin_width"]]
            counts = [c for _, c in s["histogram"]]
            groups.append(
                {
                    "name": name,
                    "summary": s,
                    "chart": histogram_chart(
                        edges=edges,
                        series=[(name, "s1", counts)],
                        marker=summary.get("max_seq_length"),
                    ),
                }
            )
        out.append(
            {
                "model_pk": model_pk,
                "model": summary.get("model"),
                "groups": groups,
                "max_seq_length": summary.get("max_seq_length"),
            }
        )
    return out


def score_chart(histograms: dict) -> dict | None:
    """Positive vs mined-negative vs flagged score distributions of a mining job."""
    pos = histograms.get("positive") or {}
    edges = pos.get("edges") or (histograms.get("negative") or {}).get("edges") or []

    def share(counts):
        # Per mille of each series' own total: 800 positives and 9,000 flagged on one axis
        # would otherwise hide the positives.
        total = sum(counts) or 1
        return [round(1000 * c / total) for c in counts]

    series = [
        (label, css, share((histograms.get(key) or {}).get("counts") or [0] * (len(edges) - 1)))
        for key, label, css in (
            ("positive", "positives", "s1"),
            ("negative", "mined negatives", "s2"),
            ("flagged", "flagged (likely false negatives)", "s3"),
        )
    ]
    return histogram_chart(edges=edges, series=series)
