"""The one scale helper every SVG chart draws through (apps/core/charts.py), and the charts'
geometry staying inside their frames."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.core.charts import Frame, Scale, padded

FRAME = Frame.of(640, 240, 36)


def test_a_linear_scale_maps_its_ends_and_middle():
    x = Scale(0, 10, 100, 300)
    assert (x(0), x(5), x(10)) == (100, 200, 300)
    assert x(12.5) == 350  # outside the range it goes on, unless clamped
    clamped = Scale(0, 10, 100, 300, clamp=True)
    assert (clamped(-3), clamped(12.5)) == (100, 300)


def test_a_y_scale_runs_upwards_in_svg_pixels():
    y = FRAME.y(0, 1)
    assert (y(0), y(1)) == (FRAME.bottom, FRAME.top) == (204, 36)
    assert y(0.25) == 162 and y.length(0.25) == 42


def test_a_flat_range_maps_to_its_start_instead_of_dividing_by_zero():
    assert Scale(3, 3, 10, 90)(3) == 10


def test_rounding_keeps_the_svg_small():
    assert Scale(0, 3, 0, 1)(1) == 0.33
    assert Scale(0, 3, 0, 1, digits=1)(1) == 0.3


def test_a_log_scale_gives_equal_ratios_equal_lengths():
    x = Scale(1, 1000, 0, 300, log=True)
    assert (x(1), x(10), x(100), x(1000)) == (0, 100, 200, 300)
    with pytest.raises(ValueError, match="positive range"):
        Scale(0, 10, 0, 1, log=True)


def test_ticks_linear_evenly_log_at_one_two_five():
    assert Scale(0, 1, 0, 1).ticks(5) == [0, 0.25, 0.5, 0.75, 1]
    assert Scale(2, 4, 0, 1).ticks(3) == [2, 3, 4]
    assert Scale(0.3, 70, 0, 1, log=True).ticks() == [0.5, 1, 2, 5, 10, 20, 50]
    assert Scale(3, 4, 0, 1, log=True).ticks() == [3, 4]  # no 1-2-5 inside: the ends


def test_padding_widens_then_cuts_to_bounds():
    assert padded(0.4, 0.6, fraction=0.1) == pytest.approx((0.38, 0.62))
    assert padded(0.5, 0.5, fraction=0.1, minimum=0.01) == pytest.approx((0.49, 0.51))
    assert padded(0.2, 0.995, fraction=0.1, minimum=0.01, bounds=(0, 1)) == pytest.approx(
        (0.1205, 1.0)
    )
    assert padded(2.0, 2.0) == (1.5, 2.5)  # a flat series still gets a line to stand on
    assert padded(2, 30, factor=1.5) == pytest.approx((4 / 3, 45))


def test_a_frame_has_margins_and_scales_that_reach_its_plot_edges():
    f = Frame.of(420, 300, left=52, right=16, top=16, bottom=44)
    assert f.geometry() == {
        "width": 420,
        "height": 300,
        "left": 52,
        "right": 404,
        "top": 16,
        "bottom": 256,
    }
    assert (f.plot_width, f.plot_height) == (352, 240)
    assert (f.x(5, 9)(5), f.x(5, 9)(9)) == (52, 404)
    assert (f.y(5, 9)(5), f.y(5, 9)(9)) == (256, 16)


@given(
    lo=st.floats(-1e6, 1e6),
    width=st.floats(1e-3, 1e6),
    a=st.floats(0, 1),
    b=st.floats(0, 1),
    log=st.booleans(),
)
def test_scales_keep_order_and_stay_in_the_plot(lo, width, a, b, log):
    if log:
        lo = abs(lo) + 1e-3
    hi = lo + width
    x, y = FRAME.x(lo, hi, log=log), FRAME.y(lo, hi, log=log)
    va, vb = lo + a * width, lo + b * width
    if va <= vb:
        assert x(va) <= x(vb) and y(va) >= y(vb)
    for v in (va, vb):
        assert FRAME.left <= x(v) <= FRAME.right and FRAME.top <= y(v) <= FRAME.bottom


# --- every chart module draws inside its frame ----------------------------------------------


def _inside(chart, xs, ys):
    left, right = chart["left"], chart["right"]
    top, bottom = chart.get("top", 0), chart.get("bottom", chart.get("baseline"))
    assert all(left <= v <= right for v in xs), (xs, left, right)
    assert all(top <= v <= bottom for v in ys), (ys, top, bottom)


def test_histogram_bars_and_ticks_fill_the_frame():
    from apps.datasets.charts import bin_counts, histogram_chart

    edges, counts = bin_counts({1: 3, 7: 1, 40: 9, 99: 2})
    chart = histogram_chart(edges=edges, series=[("docs", "s1", counts)], marker=50)
    bars = chart["bars"]
    _inside(chart, [b["x"] for b in bars] + [b["x"] + b["w"] for b in bars], [b["y"] for b in bars])
    tallest = max(bars, key=lambda b: b["h"])
    assert tallest["y"] == 24 and tallest["h"] == chart["baseline"] - 24  # the top count
    assert [t["x"] for t in chart["ticks"]][::2] == [chart["left"], chart["right"]]
    assert chart["left"] < chart["marker"]["x"] < chart["right"]


def test_tradeoff_panel_is_log_in_cost_and_reaches_a_recall_of_one():
    from apps.indexes.charts import _panel

    items = [
        {"pk": i, "label": f"#{i}", "href": f"/{i}", "recall": r, "latency": ms}
        for i, (r, ms) in enumerate([(0.62, 0.1), (0.9, 1.0), (0.99, 10.0)])
    ]
    chart = _panel(items=items, x_key="latency", x_label="ms", unit="ms", current=1)
    xs = [d["cx"] for d in chart["dots"]]
    _inside(chart, xs, [d["cy"] for d in chart["dots"]])
    assert math.isclose(xs[1] - xs[0], xs[2] - xs[1], abs_tol=0.02)  # ×10 steps, equal lengths
    assert [t["v"] for t in chart["y_ticks"]][::4] == ["0.55", "1.00"]
    assert chart["y_ticks"][-1]["y"] == chart["top"]


def test_scatter_clamps_into_its_square():
    from apps.runs.charts import scatter_chart

    chart = scatter_chart(points=[(1.5, -0.2, "q", "/q"), (0.5, 0.5, "m", "/m")], x_label="A",
                          y_label="B")  # fmt: skip
    by_title = {d["title"].split(" ")[0]: d for d in chart["dots"]}
    assert (by_title["q"]["cx"], by_title["q"]["cy"]) == (chart["right"], chart["bottom"])
    assert by_title["m"]["cx"] == by_title["m"]["cy"] == chart["mid"]


def test_curve_and_sweep_span_their_plot():
    from apps.runs.analysis import curve_chart, sweep_chart

    log = [{"step": s, "loss": 1 / s} for s in (1, 2, 4, 8)]
    curve = curve_chart(log, key="loss", label="loss")
    xs = [p["x"] for p in curve["points"]]
    ys = [p["y"] for p in curve["points"]]
    assert (xs[0], xs[-1]) == (curve["left"], curve["right"])
    assert (ys[0], ys[-1]) == (curve["top"], curve["bottom"])  # the loss falls
    rows = [
        {"dim": d, "precision": p, "bytes_per_vector": b, "ndcg@10": n}
        for d, p, b, n in [(384, "float32", 1536, 0.6), (384, "binary", 48, 0.5)]
    ]
    sweep = sweep_chart(rows)
    ticks = sweep["x_ticks"]
    assert [t["label"] for t in ticks] == ["48", "1,536"]
    assert (ticks[0]["x"], ticks[-1]["x"]) == (sweep["left"], sweep["right"])
    _inside(sweep, [], [t["y"] for t in sweep["y_ticks"]])


def test_the_loss_curve_has_a_smoothed_line_over_the_raw_one():
    from apps.runs.analysis import curve_chart, ema

    # Debiased EMA: a constant stays the constant from its first point; a step is followed.
    assert ema([2.0, 2.0, 2.0], 0.8) == pytest.approx([2.0, 2.0, 2.0])
    smoothed = ema([1.0, 0.0], 0.5)
    assert smoothed == pytest.approx([1.0, (0.5 * 0.5) / (1 - 0.25)])
    log = [{"step": s, "loss": v} for s, v in enumerate([1.0, 0.2, 0.9, 0.1, 0.8], start=1)]
    chart = curve_chart(log, key="loss", label="loss", smooth=0.8)
    raw_ys = [float(p.split(",")[1]) for p in chart["path"].split()]
    smooth_ys = [float(p.split(",")[1]) for p in chart["smooth_path"].split()]
    assert len(smooth_ys) == len(raw_ys) == 5 and chart["smooth"] == 0.8
    # The smoothed line swings less than the noisy loss it follows.
    assert max(smooth_ys) - min(smooth_ys) < max(raw_ys) - min(raw_ys)
    assert curve_chart(log, key="loss", label="loss")["smooth_path"] == ""
