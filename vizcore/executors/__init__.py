"""Executors: where the chunks of a render run — this process (`local`) or a Ray cluster (`ray`, `ray://HOST:PORT`).

A render is cut into chunks by the engine's own plan (`vizcore.engine.budget.chunk_plan`); a chunk renders exactly
as the same units would inside one local render, so a unit's image does not depend on where it ran. An executor
takes chunks (`submit`) and hands back finished ones (`wait`); the driver (`vizcore.executors.run`) keeps them
flowing, splits a chunk that keeps failing and reports a unit that cannot be rendered. docs/scale.md.
"""

from __future__ import annotations

from typing import Any

from .base import INSTALL_HINT, Chunk, ChunkResult, Executor
from .resolve import resolve_executor


def render(model: Any, targets: Any, *, executor: str | Executor | None = "local", **settings: Any) -> Any:
    """`vizcore.render` with the chunks run by `executor`; the same images as a local render on the same device."""
    from .run import render_result

    return render_result(model, targets, executor, settings)


__all__ = ["INSTALL_HINT", "Chunk", "ChunkResult", "Executor", "render", "resolve_executor"]
