"""`alpha` exporter (`--export alpha`): where the picture matters. Per unit, the accumulated attribution map, written
as the unit's PNG with the map as its alpha channel (`<unit file>_alpha.png`) and as a heat map
(`<unit file>_heat.png`).

The map is |gradient| of the ascended value (the objective minus the penalties) with respect to the image (in
0..1, before the transforms, so the gradient comes back through them), summed over the image's channels and over
every ascent step: where the optimization's changes landed (MACO, Fel et al. 2023, uses gradient x input; the plain
|gradient| is chosen here because a start picture's or the noise's own intensity would otherwise weigh in). For
display each map is divided by its 99th percentile and clipped to 1.

Recorded only for renders whose caller exports `alpha` (`run.exporters`): the start hook sets `run.image_grads`,
the engine's step loop sums the gradient into the render's `run.state` (no step hook: other renders call none
per step), the end hook puts the maps on `result.extras["alpha"]` ({image index: (H, W) float32}). Other renders
do no extra work and their images are the same bytes. Chunks taken from a `--resume` store ran no steps
here and have no map; 1-D signals have none either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..engine.loop import IMAGE_GRAD_SUM
from ..files import atomic_write_bytes, inside
from ..hookspecs import hookimpl
from ..images import png_bytes
from ..result import Result

NAME = "alpha"


def shown(m: np.ndarray) -> np.ndarray:
    """A map as uint8 0..255 for display: divided by its 99th percentile, clipped to 1."""
    top = float(np.percentile(m, 99)) if m.size else 0.0
    return np.round(np.clip(m / top, 0, 1) * 255).astype(np.uint8) if top > 0 else np.zeros(m.shape, np.uint8)


def heat(a: np.ndarray) -> np.ndarray:
    """A uint8 map (H, W) as an RGB heat map (black, red, yellow, white)."""
    t = a.astype(np.float32) / 255.0
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    return np.round(rgb * 255).astype(np.uint8)


def pictures(picture: Image.Image, m: np.ndarray) -> tuple[bytes, bytes]:
    """PNG bytes of the picture with the map `m` (as `shown` scales it) as its alpha channel, and of the heat map."""
    a = shown(np.asarray(m, dtype=np.float64))
    rgba = Image.fromarray(np.dstack([np.asarray(picture.convert("RGB")), a]), "RGBA")
    return png_bytes(rgba), png_bytes(Image.fromarray(heat(a)))


def export_alpha(result: Result, out_dir: Path, **_: Any) -> list[Path]:
    """Write every unit's picture with its attribution map as alpha, and the heat map; returns the paths."""
    maps = result.extras.get(NAME) or {}
    written = []
    for i, m in sorted(maps.items()):
        with_alpha, heat_map = pictures(result.image(i), m)
        base = result.filename(i)[:-4]
        written.append(atomic_write_bytes(inside(out_dir, base + "_alpha.png"), with_alpha))
        written.append(atomic_write_bytes(inside(out_dir, base + "_heat.png"), heat_map))
    return written


@hookimpl
def vizcore_add_exporters() -> dict[str, Any]:
    return {NAME: export_alpha}


def _asked(run: Any) -> bool:
    """Whether this render's caller exports alpha maps (a run of another shape: no)."""
    return NAME in (getattr(run, "exporters", None) or ())


@hookimpl
def vizcore_render_start(run: Any) -> None:
    if _asked(run):
        run.image_grads = True  # the engine sums |gradient| into run.state[IMAGE_GRAD_SUM]


@hookimpl
def vizcore_render_end(run: Any, result: Result) -> None:
    if not _asked(run):
        return
    maps = run.state.get(IMAGE_GRAD_SUM) or {}
    result.extras[NAME] = {offset + j: ms[j].cpu().numpy() for offset, ms in sorted(maps.items())
                           for j in range(ms.shape[0])}
