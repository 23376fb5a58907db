"""`run`: gradient ascent on the input for many units at once, returning a `Result`.

One batch element per image; units are chunked by a memory budget (budget.py); the forward stops at the deepest
layer the objectives read; one chunk's step loop is loop.py. The engine receives objects, never names
(`vizcore.api.render` resolves those through a plugin manager), and knows nothing of files: it returns a `Result`.
The caller's process state comes back as it was: its global RNG (the render draws from its own generator), the
model's device and its tensors' memory format, and the device settings (`device_settings`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from ..lifecycle import NO_HOOKS, Hooks, RenderRun, StepState
from ..model import Model
from ..objectives import Objective
from ..result import Result
from .budget import run_chunks
from .device import device_settings, resolve_device
from .loop import ChunkResult, chunk_run, nan_units, run_chunk
from .options import RenderOptions
from .setup import Factories, Notes, Render, VizcoreWarning, chunk_plan, place, prepare, settings, units

__all__ = ["ChunkStore", "Factories", "RenderOptions", "VizcoreWarning", "device_settings", "run"]


def run(model: Model, objectives: Sequence[Objective], names: Sequence[str], factories: Factories, *,
        options: RenderOptions | None = None, hooks: Hooks = NO_HOOKS, exporters: Sequence[str] = (),
        on_warning: Callable[[str], None] | None = None,
        on_step: Callable[[RenderRun, StepState], None] | None = None,
        ran_at: Sequence[int] | None = None, chunks: ChunkStore | None = None) -> Result:
    """Synthesize, for every bound objective, the input that maximizes it; returns images, values and traces.

    `names` label the objectives (one each), `factories` hold the looked-up parameterization, transforms and
    regularizers (`options.regularizers` gives their weights), `hooks` the lifecycle hooks to call (a plugin
    manager), `exporters` the names the caller will export with. `on_step(run, state)` is called after every step
    of this render only (progress bars, early stopping by setting `state.stop`). `ran_at`: an input shape the
    whole graph is known to run at (the load's probe); a render at that shape skips its own size probe.
    `chunks`: where each finished chunk is stored and looked up first (a stopped render resumes from it).
    """
    t0 = time.perf_counter()
    o = options or RenderOptions()
    dev = resolve_device(o.device)
    r = Render(model=model, objectives=list(objectives), names=list(names), units=[], options=o,
               factories=factories, dev=dev, notes=Notes(on_warning), hooks=hooks, exporters=tuple(exporters),
               on_step=on_step, generator=torch.Generator().manual_seed(o.seed),
               ran_at=tuple(ran_at) if ran_at is not None else None)
    with device_settings(dev, o.cpu_heap, o.cudnn_benchmark):
        prepare(r)
        # batch_ok (read by the plan) is decided where the weights are now (CPU after load), before they move
        chunk, budget = chunk_plan(model, r.indices, r.shape, o, len(r.objectives), dev, r.notes)
        r.units = units(r)
        with on_device(r):
            place(r)
            r.settings = settings(r, chunk, budget)
            parts = run_chunks(len(r.objectives), chunk, lambda *c: _stored(r, chunks, *c), dev, r.size,
                               lambda old, new: _retried(r, old, new))
    result = _result(r, parts, time.perf_counter() - t0)
    hooks.call("vizcore_render_end", run=parts[-1].run, result=result)
    return result


@contextlib.contextmanager
def on_device(r: Render) -> Iterator[None]:
    """The model on the render's device for the block; afterwards back on its own device, with the memory format
    each of its tensors had, whatever happened (the size probe and an error included)."""
    module = r.model.module
    home = r.model.device
    plain = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.dim() == 4 and t.is_contiguous()]
    try:
        module.to(r.dev)
        yield
    finally:
        r.switch.on = False
        module.to(home)
        _contiguous(module, plain)


def _contiguous(module: torch.nn.Module, names: Sequence[str]) -> None:
    """Make the named parameters and buffers of `module` contiguous again (in place for parameters)."""
    for name in names:
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if leaf in owner._parameters:
            p = owner._parameters[leaf]
            if p is not None and not p.is_contiguous():
                p.data = p.data.contiguous()
        elif owner._buffers.get(leaf) is not None and not owner._buffers[leaf].is_contiguous():
            owner._buffers[leaf] = owner._buffers[leaf].contiguous()


class ChunkStore(Protocol):
    """Finished chunks by key (`vizcore.chunkcache.ChunkCache` keeps them on disk)."""

    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, key: str, chunk: dict[str, Any]) -> None: ...


def _stored(r: Render, store: ChunkStore | None, ci: int, a: int, b: int, n: int) -> ChunkResult:
    """Chunk `ci` (units a..b-1) from `store` when this very render stored it before, else rendered and stored."""
    if store is None:
        return run_chunk(r, ci, a, b, n)
    # what the chunk's pixels depend on: the model, the user's options, the shape, the device, the targets; not
    # what the run resolved at run time (the memory budget, the chunk size after an out-of-memory retry)
    blob = json.dumps({"model": r.model.sha256, "options": r.options.to_json(), "shape": list(r.shape),
                       "device": str(r.dev), "targets": r.names, "units": [a, b],
                       "init": None if r.accent is None else hashlib.sha256(r.accent.init.cpu().numpy().tobytes())
                       .hexdigest()}, sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()
    got = store.get(key)
    if got is not None:
        return ChunkResult(run=chunk_run(r, ci, a, b, n), **got)
    part = run_chunk(r, ci, a, b, n)
    store.put(key, {"images": part.images, "values": part.values, "best": part.best, "traces": part.traces,
                    "steps": part.steps, "init_distances": part.init_distances})
    return part


def _retried(r: Render, old: int, new: int) -> None:
    r.settings["chunk_units"] = new
    r.notes(f"out of memory on {r.dev} with {old} units at once: continuing with {new} at a time "
            f"(set --max-memory lower to start there)")


def _result(r: Render, parts: Sequence[ChunkResult], seconds: float) -> Result:
    images = np.moveaxis(np.concatenate([p.images for p in parts]), 1, -1)  # (N, H, W, C) or (N, L, C)
    values = np.concatenate([p.values for p in parts]).astype(np.float32)
    blank = nan_units(r, values)
    if blank:
        r.notes(f"the objective of {', '.join(blank[:8])}{' ...' if len(blank) > 8 else ''} is NaN: "
                f"{'its image is' if len(blank) == 1 else 'their images are'} blank")
    return Result(images=images, values=values, traces=[t for p in parts for t in p.traces], units=r.units,
                  settings=r.settings, model=r.model.summary(), timings={"seconds": seconds},
                  warnings=r.notes.messages, trace_steps=parts[-1].steps,
                  best_values=np.concatenate([p.best for p in parts]).astype(np.float32), extras=_init_extras(r, parts))


def _init_extras(r: Render, parts: Sequence[ChunkResult]) -> dict[str, Any]:
    """`{"init": {"file", "pixel_rms", "feature_distance"}}` for a render that started from a picture, else {}."""
    if r.options.init is None:
        return {}
    dist = [p.init_distances or {} for p in parts]
    return {"init": {"file": r.options.to_json()["init"],
                     **{key: [v for d in dist for v in d.get(key, [])] for key in ("pixel_rms", "feature_distance")}}}
