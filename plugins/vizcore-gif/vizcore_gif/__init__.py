"""vizcore-gif: an exporter (`--export gif`) that writes, per unit, an animated GIF of the optimization.

Frames are recorded by the `vizcore_render_step` hook every few steps (small and within a fixed memory budget),
only for renders whose caller will export a GIF (`vizcore.render(..., exporters=[..., "gif"])`, `--export gif`),
kept in the render's own `run.state`, and handed to the result by `vizcore_render_end` as `result.extras["gif"]`;
the exporter only writes files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vizcore import hookimpl

from .export import export_gif
from .recorder import Recorder

__version__ = "0.1.0"
__all__ = ["Recorder", "export_gif", "recorder"]

#: The recorder's limits (`max_side`, `max_frames`, `budget_bytes`) may be changed; it keeps no render's frames.
recorder = Recorder()


@hookimpl
def vizcore_add_exporters() -> dict[str, Callable[..., Any]]:
    """`gif`: factory(result, out_dir, gif_ms=80, gif_hold_ms=1000) -> list[Path]."""
    return {"gif": export_gif}


@hookimpl
def vizcore_render_start(run: Any) -> None:
    recorder.start(run)


@hookimpl
def vizcore_render_step(run: Any, state: Any) -> None:
    recorder.step(run, state)


@hookimpl
def vizcore_render_end(run: Any, result: Any) -> None:
    recorder.end(run, result)
