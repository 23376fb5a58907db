"""`exemplars` exporter: each unit's exemplar crops from the user's data as one strip, `<unit file>_exemplars.png`
(best first; put on the result by `vizcore.evidence.attach_exemplars`, listed with the unit in the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes, inside
from ..hookspecs import hookimpl
from ..images import png_bytes
from ..result import Result

GAP = 2


def strip(crops: list[np.ndarray]) -> np.ndarray:
    """Crops (h, w, C) uint8 side by side on white, `GAP` pixels apart."""
    h = max(c.shape[0] for c in crops)
    ch = max(c.shape[2] for c in crops)
    out = np.full((h, sum(c.shape[1] for c in crops) + GAP * (len(crops) - 1), ch), 255, np.uint8)
    x = 0
    for c in crops:
        out[:c.shape[0], x:x + c.shape[1]] = c if c.shape[2] == ch else np.repeat(c[..., :1], ch, 2)
        x += c.shape[1] + GAP
    return out


def export_exemplars(result: Result, out_dir: Path, **_: Any) -> list[Path]:
    """Write the strip of every unit that has exemplar crops; returns the paths written."""
    listed = result.extras.get("exemplars") or {}
    written = []
    for i, crops in sorted((result.extras.get("exemplar_crops") or {}).items()):
        name = (listed.get(i) or {}).get("file") or result.filename(i)[:-4] + "_exemplars.png"
        if crops:
            written.append(atomic_write_bytes(inside(out_dir, name), png_bytes(strip(crops))))
    return written


@hookimpl
def vizcore_add_exporters() -> dict[str, Any]:
    return {"exemplars": export_exemplars}
