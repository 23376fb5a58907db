"""Executors: where the chunks of a render run — this process (`local`) or a Ray cluster (`ray`, `ray://HOST:PORT`).

A render is cut into chunks by the engine's own plan (`vizcore.engine.setup.chunk_plan`); a chunk renders exactly
as the same units would inside one local render, so a unit's image does not depend on where it ran. An executor
takes chunks (`submit`) and hands back finished ones (`wait`); the driver (`vizcore.executors.run`) keeps them
flowing, splits a chunk that keeps failing and reports a unit that cannot be rendered. A chunk carries the render's
`RenderOptions` (a frozen value that pickles as it is), so the workers render with the options validated once here.
docs/scale.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .base import INSTALL_HINT, Chunk, ChunkResult, Executor
from .resolve import resolve_executor

if TYPE_CHECKING:
    from ..engine.options import RenderOptions
    from ..plugins import Manager
    from ..result import Exporters


def render(model: Any, targets: Any, options: RenderOptions | None = None, *,
           executor: str | Executor | None = "local", plugins: Manager | None = None,
           exporters: Sequence[str] | Exporters = ("png", "manifest"),
           on_warning: Callable[[str], None] | None = None, on_step: Any = None, **overrides: Any) -> Any:
    """`vizcore.render` (the same arguments) with the chunks run by `executor`; the same images as a local render
    on the same device. `on_step` is refused: it could only run in this process."""
    from .run import render_result

    return render_result(model, targets, executor, options, overrides, plugins=plugins, exporters=exporters,
                         on_warning=on_warning, on_step=on_step)


__all__ = ["INSTALL_HINT", "Chunk", "ChunkResult", "Executor", "render", "resolve_executor"]
