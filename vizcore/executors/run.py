"""The driver: keep an executor busy with chunks, split a chunk that fails, report a unit that cannot be rendered;
and `render_result`, a `vizcore.render` whose chunks run on an executor."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DeviceError, OptionError, VizcoreError, oneline
from ..result import DEFAULT_EXPORTERS
from .base import Chunk, ChunkResult, Executor
from .progress import JobProgress
from .resolve import resolve_executor

if TYPE_CHECKING:
    from ..engine.options import RenderOptions
    from ..plugins import Manager
    from ..result import Exporters

Progress = Callable[[JobProgress], None]
#: Units that fail one by one, with not one unit rendered, mean a broken job rather than a bad unit: stop.
GIVE_UP_AFTER = 8


def describe(exc: BaseException) -> str:
    """One line for the atlas and the JSON: the exception's type and first line."""
    return oneline(exc)


def _fatal(exc: BaseException) -> bool:
    """A user error (an option, a plugin) fails every chunk alike: raise it instead of splitting."""
    return isinstance(exc, VizcoreError) and not isinstance(exc, DeviceError)


def run_chunks(executor: Executor, chunks: Sequence[Chunk], on_result: Callable[[Chunk, ChunkResult], None],
               progress: Progress | None = None) -> list[tuple[Any, str]]:
    """Run every chunk; `on_result` gets each as it finishes (any order). Returns (tag, error) of failed units."""
    report = progress or getattr(executor, "progress", None) or (lambda _p: None)
    queue = deque(chunks)
    state = JobProgress(total=sum(len(c) for c in chunks))
    failed: list[tuple[Any, str]] = []
    capacity = max(1, int(getattr(executor, "capacity", executor.workers)))
    try:
        while queue or executor.pending():
            while queue and executor.pending() < capacity:
                executor.submit(queue.popleft())
            state.running = executor.running() if hasattr(executor, "running") else 0
            report(state)
            for chunk, out in executor.wait():
                if isinstance(out, ChunkResult):
                    on_result(chunk, out)
                    state.done += len(chunk)
                elif _fatal(out):
                    raise out
                elif len(chunk) > 1:  # a chunk that keeps failing (out of memory, a bad unit): halves
                    queue.extendleft(reversed(chunk.split()))
                else:
                    failed.append((chunk.tags[0], describe(out)))
                    state.failed += 1
                    if state.done == 0 and state.failed >= GIVE_UP_AFTER:
                        raise out
            state.running = executor.running() if hasattr(executor, "running") else 0
    finally:
        state.finished = True
        report(state)
    return failed


def render_result(model: Any, targets: Any, executor: str | Executor | None, options: RenderOptions | None,
                  overrides: Mapping[str, Any], *, plugins: Manager | None = None,
                  exporters: Sequence[str] | Exporters = DEFAULT_EXPORTERS,
                  on_warning: Callable[[str], None] | None = None, on_step: Any = None) -> Any:
    """`vizcore.render(model, targets, options, **overrides)` with the chunks on `executor`: a `Result` in target
    order. The options are built and checked once here; every chunk carries them (with its plan's batch and budget).

    A unit that cannot be rendered gets a blank image and NaN values; `result.extras["failed"]` maps its index to
    the error and the message is in `result.warnings`.
    """
    from ..api import bind, load, select_exporters
    from ..engine.budget import chunks as cut
    from ..engine.options import with_keywords
    from ..engine.setup import unit
    from ..model import Model

    if on_step is not None:
        raise OptionError("on_step is called in this process only", "use executor='local', or drop on_step")
    opts = with_keywords(options, overrides)
    chosen = select_exporters(exporters, plugins)
    warn = on_warning or (lambda _m: None)
    t0 = time.perf_counter()
    model = model if isinstance(model, Model) else load(model, size=opts.size, plugins=plugins)
    objs, names = bind(model, targets, plugins)
    k = opts.images_per_unit
    units = [unit(o, n) for o, n in zip(objs, names) for _ in range(k)]
    ex = resolve_executor(executor)
    ex.start(model, opts.size, opts.device, plugins=plugins)
    done: dict[int, tuple[Chunk, ChunkResult]] = {}
    try:
        chunk, budget = ex.plan(objs, opts)
        planned = opts.replace(max_memory=budget)
        chunks = [Chunk(objs[a:b], planned.replace(batch_size=b - a), list(range(a, b)), exporters=chosen.names)
                  for a, b in cut(len(objs), chunk)]
        failed = dict(run_chunks(ex, chunks, lambda c, r: done.__setitem__(c.tags[0], (c, r))))
    finally:
        ex.close()
    result = _assemble(model, units, names, k, done, failed, warn, time.perf_counter() - t0,
                       {"chunk_units": chunk, "max_memory": budget, "executor": ex.name})
    result.exporter_table = dict(chosen.table)
    return result


def _assemble(model: Any, units: list[Any], names: list[str], k: int, done: dict[int, tuple[Chunk, ChunkResult]],
              failed: dict[int, str], warn: Callable[[str], None], seconds: float, extra: dict[str, Any]) -> Any:
    """One Result from chunk results (in unit order); failed units blank, with NaN values."""
    from ..result import Result

    first = next(iter(done.values()))[1] if done else None
    if first is None:
        raise DeviceError(f"no unit could be rendered: {next(iter(failed.values()), 'unknown error')}",
                          "see the error; try --executor local to reproduce it here")
    n_steps = len(first.trace_steps)
    images, values, best, traces = [], [], [], []
    messages: list[str] = []
    extras: dict[str, Any] = {"failed": failed}
    for start, (_, r) in sorted(done.items()):  # per-image data (alpha maps): indices of the whole render
        for name, per in r.extras.items():
            extras.setdefault(name, {}).update({start * k + j: v for j, v in per.items()})
    for i in range(len(names)):
        if i in failed:
            images.append(np.zeros((k, *first.images.shape[1:]), dtype=np.uint8))
            values.append(np.full(k, np.nan, np.float32))
            best.append(np.full(k, np.nan, np.float32))
            traces.extend([[float("nan")] * n_steps] * k)
            messages.append(f"unit {names[i]} could not be rendered: {failed[i]}")
            continue
        start = max(s for s in done if s <= i)
        r = done[start][1]
        j = (i - start) * k
        images.append(r.images[j:j + k])
        values.append(r.values[j:j + k])
        best.append(r.best_values[j:j + k])
        traces.extend(r.traces[j:j + k])
    for _, (_, r) in sorted(done.items()):
        messages.extend(m for m in r.warnings if m not in messages)
    for m in messages:
        warn(m)
    settings = {**first.settings, "targets": names, **extra}
    return Result(images=np.concatenate(images), values=np.concatenate(values).astype(np.float32), traces=traces,
                  units=units, settings=settings, model=model.summary(), timings={"seconds": seconds},
                  warnings=messages, trace_steps=list(first.trace_steps),
                  best_values=np.concatenate(best).astype(np.float32), extras=extras)
