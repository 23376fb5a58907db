"""`png` exporter: one PNG per unit plus `grid.png`, a labelled contact sheet; 1-D signals also as `.npy`
(float32 (L, C), in the units the graph input takes)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes, inside
from ..hookspecs import hookimpl
from ..images import png_bytes
from ..result import Result


def export_png(result: Result, out_dir: Path, **_: Any) -> list[Path]:
    """Write every unit's image and the grid into `out_dir`; returns the paths written."""
    written = []
    for i in range(len(result)):
        name = result.filename(i)
        written.append(atomic_write_bytes(inside(out_dir, name), png_bytes(result.image(i))))
        if result.is_signal:
            buf = io.BytesIO()
            np.save(buf, result.graph_values(i))  # float32 (L, C), the values the model was fed
            written.append(atomic_write_bytes(inside(out_dir, name[:-4] + ".npy"), buf.getvalue()))
    written.append(atomic_write_bytes(inside(out_dir, "grid.png"), png_bytes(result.grid())))
    return written


@hookimpl
def vizcore_add_exporters() -> dict[str, Any]:
    return {"png": export_png}
