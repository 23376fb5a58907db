"""The curve of a lossy prune: agreement with the original (the budget's metric) against the MACs left, per
accepted step, on the calibration and the held-out data, with the budget's bound; a PNG (vizcore.images)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..images import png_bytes

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 70, 20, 30, 50
CALIB, HELD, BOUND, AXIS = (31, 119, 180), (255, 127, 14), (214, 39, 40), (60, 60, 60)


def _points(rep: dict[str, Any], key: str, where: str) -> list[tuple[float, float]]:
    b = rep["budget"]
    macs0 = rep["cost"]["macs"][0] if rep.get("cost") else None
    first = (1.0, 1.0 if b["metric"] in ("top1", "cos") else 0.0)
    pts = [first]
    for st in rep["steps"]:
        v = (st.get(where) or {}).get(key)
        if v is not None and macs0:
            pts.append((st["macs"] / macs0, float(v)))
    return pts


def curve_png(rep: dict[str, Any]) -> bytes:
    """PNG bytes of the curve for a lossy prune's JSON report (`PruneReport.to_json()`)."""
    b = rep["budget"]
    key = b["metric"]
    series = [(_points(rep, key, "calibration"), CALIB, "calibration"),
              (_points(rep, key, "held_out"), HELD, "held-out")]
    ys = [y for pts, _, _ in series for _, y in pts] + [b["bound"]]
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.01 or 0.01
    lo, hi = lo - pad, hi + pad
    xs = [x for pts, _, _ in series for x, _ in pts]
    x0 = max(0.0, min(xs) - max(0.02, 0.1 * (1 - min(xs))))  # the MACs axis spans what was reached
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def xy(x: float, y: float) -> tuple[float, float]:  # x: MACs left (1 -> x0 from left to right)
        return LEFT + (1 - x) / (1 - x0) * (W - LEFT - RIGHT), TOP + (hi - y) / (hi - lo) * (H - TOP - BOTTOM)

    d.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline=AXIS)
    for t in np.linspace(x0, 1, 6):
        x, _ = xy(t, lo)
        d.line([x, H - BOTTOM, x, H - BOTTOM + 4], fill=AXIS)
        d.text((x - 14, H - BOTTOM + 6), f"{t:.1%}", fill=AXIS, font=font)
    for v in np.linspace(lo, hi, 5):
        _, y = xy(1, v)
        d.text((4, y - 6), f"{v:.4g}", fill=AXIS, font=font)
    _, yb = xy(1, b["bound"])
    for dash in range(LEFT, W - RIGHT, 12):
        d.line([dash, yb, min(dash + 6, W - RIGHT), yb], fill=BOUND)
    for k, (pts, colour, _) in enumerate(series):
        if len(pts) > 1:
            d.line([xy(*p) for p in pts], fill=colour, width=2 + 2 * (k == 0))
        for p in pts:
            cx, cy = xy(*p)
            r = 5 if k == 0 else 3  # calibration under held-out: both stay visible where they coincide
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    d.text((LEFT, 8), f"{key} vs MACs left (budget {key}={b['bound']:g}, dashed)", fill=AXIS, font=font)
    for i, (_, colour, name) in enumerate(series):
        d.text((W - RIGHT - 100, TOP + 8 + 14 * i), f"- {name}", fill=colour, font=font)
    d.text((LEFT + (W - LEFT - RIGHT) // 2 - 40, H - 18), "MACs left", fill=AXIS, font=font)
    return png_bytes(img)
