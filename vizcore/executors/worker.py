"""What a worker does, in this process or in a Ray actor: plan chunks and render one chunk with `vizcore.render`.

A chunk is rendered by one `vizcore.render` call on exactly its units, with `batch_size` = its length and the
plan's memory budget, so the engine runs it as a single chunk: same seed, same parameter draw, same transforms,
hence the same images as the local engine that cut the same chunk out of a longer list.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Chunk, ChunkResult

if TYPE_CHECKING:
    from ..engine.options import RenderOptions
    from ..model import Model
    from ..objectives import Objective


def labelled(model: Model, targets: Any, plugins: Any = None) -> tuple[list[Objective], list[str]]:
    """Objectives bound to `model` and their labels, as `vizcore.render` makes them (`plugins`: whose objectives)."""
    from ..api import bind

    return bind(model, targets, plugins)


def resolve(model: Model, targets: Any, plugins: Any = None) -> list[Objective]:
    """Objectives bound to `model` (strings expanded as `vizcore.render` does)."""
    return labelled(model, targets, plugins)[0]


def plan_chunks(model: Model, objectives: list[Objective], options: RenderOptions,
                plugins: Any = None) -> tuple[int, int]:
    """(units per chunk, memory budget in bytes) exactly as `vizcore.render` would cut these objectives here (the
    engine's own `chunk_plan`)."""
    from ..engine.device import resolve_device
    from ..engine.setup import chunk_plan, render_shape

    objs = resolve(model, objectives, plugins)
    indices = sorted({i for o in objs for i in o.targets})
    _, shape = render_shape(model, options.size)
    return chunk_plan(model, indices or [0], shape, options, max(1, len(objs)), resolve_device(options.device),
                      lambda _m: None)


def render_chunk(model: Model, chunk: Chunk, worker: str = "", plugins: Any = None) -> ChunkResult:
    """Render one chunk as a single engine chunk (with `plugins`, default: this process's manager); returns plain
    arrays (cheap to send between processes)."""
    from ..api import render

    messages: list[str] = []
    options = chunk.options if chunk.options.batch_size == len(chunk) else chunk.options.replace(
        batch_size=len(chunk))
    t0 = time.perf_counter()
    res = render(model, list(chunk.objectives), options, plugins=plugins, exporters=chunk.exporters,
                 on_warning=messages.append)
    best = res.best_values if res.best_values is not None else res.values
    return ChunkResult(images=np.ascontiguousarray(res.images), values=np.asarray(res.values),
                       best_values=np.asarray(best), traces=[list(map(float, t)) for t in res.traces],
                       trace_steps=list(res.trace_steps), settings=dict(res.settings), warnings=messages,
                       seconds=time.perf_counter() - t0, worker=worker,
                       pngs=[chunk.encode(img) for img in res.images] if chunk.encode else [],
                       extras=per_image(res.extras))


def per_image(extras: dict[str, Any]) -> dict[str, dict[int, Any]]:
    """The entries of a result's extras that hold data per image ({image index: value}, e.g. the `alpha` exporter's
    maps): what the driver puts back together, each index shifted by where the chunk starts."""
    return {name: dict(v) for name, v in extras.items()
            if isinstance(v, dict) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v)}
