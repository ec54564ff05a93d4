"""The merge page's weight search chart: nDCG@10 against the first model's weight, one line
for the dev split (where the weight is chosen) and one for the test split (where it is
reported), as SVG geometry for the template (no chart library, no JavaScript)."""

from __future__ import annotations

from apps.core.charts import Frame, padded

W, H, PAD = 560, 240, 40
FRAME = Frame.of(W, H, PAD)
SERIES = (("dev", "s1", "dev"), ("test", "s2", "test"))


def weight_chart(search: dict) -> dict | None:
    """``search`` is a merge job's ``result["search"]``: points {weight, dev, test?} and the
    chosen weight; None without points."""
    points = sorted(search.get("points") or [], key=lambda p: p["weight"])
    if not points:
        return None
    values = [p[k] for p in points for k, _, _ in SERIES if p.get(k) is not None]
    x = FRAME.x(0.0, 1.0)
    y = FRAME.y(*padded(min(values), max(values), fraction=0.1, minimum=0.01, bounds=(0.0, 1.0)),
                digits=1)  # fmt: skip
    series = []
    for key, css, label in SERIES:
        mine = [p for p in points if p.get(key) is not None]
        if not mine:
            continue
        split = search.get(f"{key}_split") or key
        coords = [{"x": x(p["weight"]), "y": y(p[key]),
                   "title": f"weight {p['weight']:g}: nDCG@10 {p[key]:.4f} on {split}"}
                  for p in mine]  # fmt: skip
        series.append({"label": f"{label} ({split})", "css": css, "points": coords,
                       "path": " ".join(f"{c['x']},{c['y']}" for c in coords)})  # fmt: skip
    chosen = search.get("chosen")
    return {
        **FRAME.geometry(),
        "series": series,
        "chosen_x": None if chosen is None else x(chosen),
        "x_ticks": [{"x": x(p["weight"]), "label": f"{p['weight']:g}"} for p in points],
        "y_ticks": [{"y": y(v), "label": f"{v:.3f}"} for v in y.ticks(3)],
    }
