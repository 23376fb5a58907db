"""The `gif` exporter: one animated GIF per unit from the frames the recorder left in `result.extras["gif"]`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from vizcore.errors import OptionError
from vizcore.files import atomic_write_bytes, inside

from .recorder import KEY


def gif_bytes(frames: Any, ms: int = 80, hold_ms: int = 1000) -> bytes:
    """An endlessly looping GIF of (T, h, w, C) uint8 frames; the last frame stays `hold_ms`."""
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    durations = [ms] * (len(images) - 1) + [hold_ms]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buf.getvalue()


def export_gif(result: Any, out_dir: Path, gif_ms: int = 80, gif_hold_ms: int = 1000, **_: Any) -> list[Path]:
    """Write `<unit file name>.gif` per unit (named like the png exporter's files); returns the paths."""
    recorded = result.extras.get(KEY)
    if not recorded:
        raise OptionError("this result has no GIF frames: they are recorded while rendering",
                          "render again with the vizcore-gif plugin enabled (2-D images only)")
    written = []
    for i, frames in enumerate(recorded["frames"]):
        name = Path(result.filename(i)).with_suffix(".gif").name
        written.append(atomic_write_bytes(inside(out_dir, name), gif_bytes(frames, int(gif_ms), int(gif_hold_ms))))
    return written
