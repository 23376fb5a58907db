"""An atlas's units on an executor: planned once per layer, streamed into the atlas cache as chunks finish, resumable.

The chunk plan of each layer is stored next to the cache (`.cache/plans/`, keyed by model sha256, settings and
layer) before the first chunk starts, so a run that is killed resumes with the same chunks: the units it still
needs come out bitwise the same as in an uninterrupted run, and finished chunks are not rendered again. A unit
that cannot be rendered is reported (a placeholder image and a `failed: ...` flag); a re-run tries it again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VizcoreError
from ..executors import Chunk, ChunkResult, Executor, resolve_executor
from ..executors.run import run_chunks
from ..exporters.alpha import NAME as ALPHA
from ..files import atomic_write_bytes, atomic_write_text
from ..images import unit_image
from ..inputs import read_json
from .render import alpha_pictures

if TYPE_CHECKING:
    from ..engine.options import RenderOptions
    from ..model import Model

#: vizcore.atlas.build's types, not imported (build imports this module): its UnitSpec, UnitCache and PNG encoder
#: come in as arguments.
UnitSpec = UnitCache = Any
Encode = Callable[[Any], bytes]

PLAN_VERSION = 1
#: Settings that say how units are computed on the worker, not what the report shows: kept out of the records.
_RUN_ONLY = ("targets", "chunk_units", "max_memory")


class PlanStore:
    """Chunk plans by (model, settings, layer): JSON files written atomically before any chunk of them runs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str, settings: dict[str, Any], group: tuple[str, int]) -> Path:
        blob = json.dumps({"v": PLAN_VERSION, "model": sha256, "settings": settings, "group": list(group)},
                          sort_keys=True, default=str)
        return self.root / f"{hashlib.sha256(blob.encode()).hexdigest()}.json"

    def load(self, path: Path) -> dict[str, Any] | None:
        try:
            plan = read_json(path, "plan record")
        except VizcoreError:
            return None
        ok = isinstance(plan, dict) and isinstance(plan.get("chunks"), list) and isinstance(plan.get("budget"), int)
        return plan if ok else None

    def save(self, path: Path, plan: dict[str, Any]) -> None:
        atomic_write_text(path, json.dumps(plan))


def _group_chunks(model: Model, group: list[tuple[UnitSpec, str]], settings: dict[str, Any], options: RenderOptions,
                  ex: Executor, store: PlanStore, gid: tuple[str, int], encode: Encode,
                  exporters: tuple[str, ...]) -> list[Chunk]:
    """The chunks of one layer that hold a missing unit, from its stored plan (or a new plan over the missing);
    `settings` key the stored plan, `options` (the same settings, validated once) go with the chunks."""
    from ..engine.budget import chunks as _chunks
    make = type(group[0][0])  # UnitSpec

    want = {key for _, key in group}
    path = store.path(model.sha256, settings, gid)
    plan = store.load(path)
    if plan is None or not want <= {u[0] for c in plan["chunks"] for u in c}:
        size, budget = ex.plan([s.objective() for s, _ in group], options)
        plan = {"budget": int(budget), "chunks": [[[key, s.kind, s.layer.index, s.channel] for s, key in group[a:b]]
                                                 for a, b in _chunks(len(group), size)]}
        store.save(path, plan)
    out = []
    budgeted = options.replace(max_memory=plan["budget"])
    for planned in plan["chunks"]:
        if not any(u[0] in want for u in planned):
            continue  # finished in an earlier run
        specs = [make(kind, model.layers[li], ch) for _, kind, li, ch in planned]
        out.append(Chunk([s.objective() for s in specs], budgeted.replace(batch_size=len(specs)),
                         [(s, u[0], u[0] in want) for s, u in zip(specs, planned)], encode=encode,
                         exporters=exporters))
    return out


def _store(model: Model, cache: UnitCache, chunk: Chunk, res: ChunkResult) -> None:
    """Write each unit of a finished chunk that the atlas still lacks (image and alpha map first, then its record)."""
    used = {k: v for k, v in res.settings.items() if k not in _RUN_ONLY}
    alpha = ALPHA in chunk.exporters
    extra = alpha_pictures(res, [unit_image(img) for img in res.images]) if alpha else [None] * len(chunk)
    for i, (spec, key, needed) in enumerate(chunk.tags):
        if not needed or cache.has(key, alpha):
            continue
        rec = {**spec.ident, "model_sha256": model.sha256, "value": _finite(res.values[i]),
               "trace": [_finite(v) for v in res.traces[i]], "trace_steps": res.trace_steps, "settings": used,
               "seconds": res.seconds / len(chunk), "worker": res.worker}
        cache.put(key, res.pngs[i], rec, alpha=extra[i])


def estimate(model: Model, chunks: Sequence[Chunk], workers: int, plugins: Any = None) -> str:
    """Units, steps and the time they take, from a warm-up here: 2 and 6 steps of up to 4 units of the deepest layer
    (the difference leaves out the setup); divided by the workers (assumed as fast as this device)."""
    from ..api import render

    units = sum(1 for c in chunks for t in c.tags if t[2])
    if not units:
        return "nothing to render"
    deepest = max(chunks, key=lambda c: c.tags[0][0].layer.index)
    steps = deepest.options.steps
    objs = deepest.objectives[:4]
    times = []
    for n in (2, 6):
        t0 = time.perf_counter()
        render(model, objs, deepest.options, steps=n, batch_size=len(objs), plugins=plugins,
               on_warning=lambda _m: None)
        times.append(time.perf_counter() - t0)
    per = max(times[1] - times[0], 1e-9) / (4 * len(objs))
    total = units * steps * per / max(1, workers)
    return (f"estimate: {units} units x {steps} steps at {per * 1e3:.2f} ms per unit-step (warm-up here, deepest "
            f"layer) on {workers} worker{'s' if workers != 1 else ''}: about {_human(total)}")


def _finite(v: Any) -> float | None:
    """A float for JSON; NaN and infinities become None (as the atlas stores them)."""
    f = float(v)
    return f if f == f and abs(f) != float("inf") else None


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_missing(model: Model, missing: list[tuple[UnitSpec, str]], settings: dict[str, Any], cache: UnitCache,
                   executor: str | Executor | None, say: Callable[[str], None], encode: Encode,
                   warm_up: bool = True, plugins: Any = None, alpha: bool = False) -> tuple[float, dict[str, str]]:
    """Render the atlas's missing units on `executor`, each chunk stored as it arrives (with `alpha`, with its alpha
    map); returns (seconds spent, {cache key: error} of units that could not be rendered)."""
    if not missing:
        return 0.0, {}
    groups: dict[tuple[str, int], list[tuple[UnitSpec, str]]] = {}
    for spec, key in missing:
        groups.setdefault((spec.kind, spec.layer.index), []).append((spec, key))
    from ..engine.options import with_keywords

    options = with_keywords(None, settings)  # validated once, for every chunk
    t0 = time.perf_counter()
    ex = resolve_executor(executor)
    ex.start(model, options.size, options.device, plugins=plugins)
    try:
        store = PlanStore(cache.root / "plans")
        chunks = [c for gid, group in groups.items()
                  for c in _group_chunks(model, group, settings, options, ex, store, gid, encode,
                                         (ALPHA,) if alpha else ())]
        say(f"{len(missing)} units in {len(chunks)} chunks on {ex.name} ({ex.workers} "
            f"worker{'s' if ex.workers != 1 else ''})")
        if warm_up and chunks:
            say(estimate(model, chunks, ex.workers, plugins))
        failed = run_chunks(ex, chunks, lambda c, r: _store(model, cache, c, r))
    finally:
        ex.close()
    for (spec, _key, _), err in failed:
        say(f"warning: unit {spec.layer.index}:{spec.channel} could not be rendered: {err}")
    return time.perf_counter() - t0, {tag[1]: err for tag, err in failed}


def failed_entry(out: Path, key: str, error: str, settings: dict[str, Any],
                 encode: Encode) -> tuple[dict[str, Any], Path]:
    """What the atlas shows for a unit that could not be rendered: a grey placeholder and the error."""
    import numpy as np

    side = int(settings.get("size") or 64)
    png = atomic_write_bytes(Path(out) / ".cache" / "failed" / f"{key}.png",
                             encode(np.full((side, side, 3), 128, np.uint8)))
    return {"value": None, "trace": [], "trace_steps": [], "settings": settings, "error": error}, png
