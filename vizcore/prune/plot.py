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
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def xy(x: float, y: float) -> tuple[float, float]:  # x: MACs left (1 -> 0 from left to right)
        return LEFT + (1 - x) * (W - LEFT - RIGHT), TOP + (hi - y) / (hi - lo) * (H - TOP - BOTTOM)

    d.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline=AXIS)
    for t in np.linspace(0, 1, 6):
        x, _ = xy(1 - t, lo)
        d.line([x, H - BOTTOM, x, H - BOTTOM + 4], fill=AXIS)
        d.text((x - 12, H - BOTTOM + 6), f"{1 - t:.0%}", fill=AXIS, font=font)
    for v in np.linspace(lo, hi, 5):
        _, y = xy(1, v)
        d.text((4, y - 6), f"{v:.4g}", fill=AXIS, font=font)
    _, yb = xy(1, b["bound"])
    for x0 in range(LEFT, W - RIGHT, 12):
        d.line([x0, yb, min(x0 + 6, W - RIGHT), yb], fill=BOUND)
    for pts, colour, _ in series:
        if len(pts) > 1:
            d.line([xy(*p) for p in pts], fill=colour, width=2)
        for p in pts:
            cx, cy = xy(*p)
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    d.text((LEFT, 8), f"{key} vs MACs left (budget {key}={b['bound']:g}, dashed)", fill=AXIS, font=font)
    for i, (_, colour, name) in enumerate(series):
        d.text((LEFT + 8, H - BOTTOM - 34 + 14 * i), f"- {name}", fill=colour, font=font)
    d.text((LEFT + (W - LEFT - RIGHT) // 2 - 40, H - 18), "MACs left", fill=AXIS, font=font)
    return png_bytes(img)
