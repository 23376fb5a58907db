"""The check's one call into the render engine: a short gradient ascent that tries to open candidate dead units.

Runs through `api.render` with a manager of built-ins only, so a check's verdicts never depend on installed plugins
(no third-party lifecycle hooks, no GIF recorder riding along).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..analysis.dead import Ascent
from ..api import render
from ..errors import InputTooSmallError, oneline
from ..model import Layer, Model
from ..objectives import Neuron
from ..plugins import Manager, builtins_only

#: The first pass gives every unit this many steps; only the units it did not open get their whole budget, in a
#: second pass (most units open within a few steps, and a batch runs as long as its slowest unit)
QUICK_STEPS = 6
#: ... when there are at least this many units: with fewer, a step costs about the same for any batch and the quick
#: pass is paid again by the units it leaves (MobileNetV2's 81 units: +0.7 s of 2.7 s, bench/check_speed.py)
QUICK_MIN_UNITS = 128
#: A unit stalls when its best value rose by less than this fraction (of |best| + |bar|) over STALL_STEPS steps.
STALL_RISE = 1e-3
STALL_STEPS = 6


class _Progress:
    """One progress line over the renders of one ascent pass (`ascend` runs a few, grouped by depth): units
    finished so far, with an ETA from the time they took."""

    def __init__(self, total: int, report: Callable[[str], None] | None, label: str = "") -> None:
        self.total, self.report = max(total, 1), report
        self.label = label or f"gradient ascent on {total} units"
        self.done = 0.0  # units of earlier chunks and renders, finished
        self.t0 = time.perf_counter()

    def show(self, running: float) -> None:
        """`running`: the finished part (in units) of the chunk now running."""
        if self.report is None:
            return
        frac = min(1.0, (self.done + running) / self.total)
        el = time.perf_counter() - self.t0
        eta = el / frac - el if frac > 0 else float("nan")
        self.report(f"{self.label}: {frac:.0%}, ETA {eta:.0f} s")


class _EarlyStop:
    """A render's `on_step`: keeps each unit's best value and when it last rose, and stops a chunk once every
    unit in it beat its bar, stalled below it, or used its layer's step budget. Reports to a `_Progress`."""

    def __init__(self, bars: np.ndarray, budgets: np.ndarray, progress: _Progress | None = None) -> None:
        self.bars, self.budgets, self.progress = bars, budgets, progress
        self.best = np.full(len(bars), -np.inf)
        self.mark = np.full(len(bars), -np.inf)  # best value STALL_STEPS steps ago
        self.steps = np.zeros(len(bars), dtype=np.int64)
        self.stalled = np.zeros(len(bars), dtype=bool)
        self.opened = np.zeros(len(bars), dtype=np.int64)  # the step each unit first beat its bar (0: never)

    def __call__(self, run: Any, state: Any) -> None:
        v = state.values.detach().float().cpu().numpy().reshape(-1)
        a = run.unit_offset
        sl = slice(a, a + len(v))
        self.best[sl] = np.fmax(self.best[sl], v)
        self.steps[sl] = state.step  # the engine counts steps from 1
        self.opened[sl] = np.where((self.opened[sl] == 0) & (self.best[sl] > self.bars[sl]), state.step,
                                   self.opened[sl])
        if state.step % STALL_STEPS == 0:
            rise = self.best[sl] - self.mark[sl]
            tol = STALL_RISE * (np.abs(self.best[sl]) + np.abs(self.bars[sl])) + 1e-12
            self.stalled[sl] = np.isfinite(self.mark[sl]) & (rise <= tol)
            self.mark[sl] = self.best[sl]
        finished = (self.best[sl] > self.bars[sl]) | self.stalled[sl] | (self.steps[sl] >= self.budgets[sl])
        if bool(np.all(finished)):
            state.stop = True
        self._report(sl, state.step, bool(state.stop))

    def _report(self, sl: slice, step: int, stop: bool) -> None:
        if self.progress is None:
            return
        budget = int(self.budgets[sl].max())
        k = sl.stop - sl.start
        if stop or step >= budget:
            self.progress.done += k
            self.progress.show(0.0)
        else:
            self.progress.show(k * step / max(budget, 1))


Job = tuple[Layer, Sequence[int] | None, float]


def depth_groups(model: Model, jobs: Sequence[Job], overhead: float = 4.0) -> list[list[Job]]:
    """Split jobs (sorted by depth) into consecutive groups that minimize the estimated ascent cost.

    Each group is one render whose every image runs to the group's deepest layer, so a unit of an early layer
    should not ride along to the last one; each render also has a fixed cost (about `overhead` images' worth).
    Cost of a layer = activation numel of the graph up to it (a proxy for compute).
    """
    jobs = sorted(jobs, key=lambda j: j[0].index)
    if len(jobs) <= 1:
        return [list(jobs)] if jobs else []
    cum = np.cumsum([float(np.prod(lay.shape)) if lay.shape else 0.0 for lay in model.layers])
    size = [len(ch) if ch is not None else int(lay.channels or 0) for lay, ch, _ in jobs]
    w = [float(cum[lay.index]) for lay, _, _ in jobs]
    k = len(jobs)
    best = [0.0] + [np.inf] * k  # best[j]: cost of the first j jobs
    cut = [0] * (k + 1)
    for j in range(1, k + 1):
        n = 0
        for i in range(j, 0, -1):  # last group = jobs i-1 .. j-1
            n += size[i - 1]
            c = best[i - 1] + (n + overhead) * w[j - 1]
            if c < best[j]:
                best[j], cut[j] = c, i - 1
    groups = []
    j = k
    while j > 0:
        groups.append(jobs[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def ascend(model: Model, jobs: Sequence[Job], *, steps: int, size: int | None, lr: float = 0.05, seed: int = 0,
           device: str = "cpu", on_warning: Callable[[str], None] | None = None,
           budgets: dict[int, int] | None = None, progress: Callable[[str], None] | None = None,
           failed: dict[int, str] | None = None, space: tuple[str | None, str | None] = (None, None)
           ) -> dict[int, dict[int, Ascent]]:
    """What a short gradient ascent did for each unit: {layer index: {channel: Ascent}}; the jobs run in a few
    renders grouped by depth (`depth_groups`); with QUICK_MIN_UNITS units or more, first QUICK_STEPS steps for
    every unit, then the whole budget for the units that did not open (a batch runs as long as its slowest unit,
    so the slow ones go apart). `budgets` caps the steps per layer index (default `steps`); a
    render that fails puts its layers' reason into `failed` (the others still run). `space` is the check's
    (--preprocess, --range), so the ascent explores the input box the probes did."""
    budgets, n = budgets or {}, sum(_count(j) for j in jobs)
    kw = dict(steps=steps, size=size, lr=lr, seed=seed, device=device, on_warning=on_warning, failed=failed,
              space=space)
    if n < QUICK_MIN_UNITS:
        return _ascend_groups(model, jobs, budgets=budgets, progress=_Progress(n, progress), **kw)
    quick = {lay.index: min(QUICK_STEPS, budgets.get(lay.index, steps)) for lay, _, _ in jobs}
    first = _Progress(n, progress, f"gradient ascent on {n} units, first {QUICK_STEPS} steps")
    out = _ascend_groups(model, jobs, budgets=quick, progress=first, **kw)
    again = _unopened(jobs, out, quick, budgets, steps)
    if again:
        k = sum(_count(j) for j in again)
        rest = _Progress(k, progress, f"gradient ascent on the {k} units still closed")
        second = _ascend_groups(model, again, budgets=budgets, progress=rest, **kw)
        for li, vals in second.items():
            for c, a in vals.items():
                first = out.get(li, {}).get(c)
                best = a.best if first is None else max(a.best, first.best)
                out.setdefault(li, {})[c] = Ascent(best, a.stalled, a.steps)
    return out


def _unopened(jobs: Sequence[Job], got: dict[int, dict[int, Ascent]], quick: dict[int, int],
              budgets: dict[int, int], steps: int) -> list[Job]:
    """The jobs again, with the units the quick pass left below their bar whose budget allows more steps."""
    again = []
    for lay, channels, bar in jobs:
        if budgets.get(lay.index, steps) <= quick[lay.index]:
            continue
        chans = list(range(lay.channels or 0)) if channels is None else list(channels)
        done = got.get(lay.index, {})
        left = [c for c in chans if c not in done or done[c].best <= bar]
        if left:
            again.append((lay, left, bar))
    return again


def _ascend_groups(model: Model, jobs: Sequence[Job], *, steps: int, size: int | None, lr: float, seed: int,
                   device: str, on_warning: Callable[[str], None] | None, budgets: dict[int, int],
                   progress: _Progress, failed: dict[int, str] | None, space: tuple[str | None, str | None]
                   ) -> dict[int, dict[int, Ascent]]:
    out: dict[int, dict[int, Ascent]] = {}
    builtins = builtins_only()  # built-in params/transforms only: no plugin hooks ride along
    for group in depth_groups(model, jobs):
        # a model that fixes its input still ascends at `size` when the graph up to the group works at any size
        fixed = model.fixed_size
        s = size if size is None or fixed is None else (min(size, max(fixed)) if model.size_free(
            [j[0] for j in group]) else None)
        try:
            got = _with_size_retry(model, group, steps=steps, size=s, lr=lr, seed=seed, device=device,
                                   on_warning=on_warning, plugins=builtins, budgets=budgets, progress=progress,
                                   space=space)
        except Exception as exc:  # noqa: BLE001 - reported per layer, the rest of the check runs
            if failed is None:
                raise
            failed.update({lay.index: oneline(exc) for lay, _, _ in group})
            continue
        for li, vals in got.items():
            out.setdefault(li, {}).update(vals)
    return out


def _count(job: Job) -> int:
    layer, channels, _ = job
    return len(channels) if channels is not None else int(layer.channels or 0)


def _with_size_retry(model: Model, group: Sequence[Job], *, size: int | None, on_warning: Callable[[str], None] | None,
                     **kw: Any) -> dict[int, dict[int, Ascent]]:
    s = size
    while True:
        try:
            return ascend_once(model, group, size=s, on_warning=on_warning, **kw)
        except InputTooSmallError:  # e.g. a 5x5 kernel deep in the net needs more than 32 pixels
            full = max(model.input_shape(1)[2:])
            if s is None or s >= full:
                raise
            s = min(2 * s, full)
            if on_warning:
                on_warning(f"the model needs a larger input: gradient ascent at {s} pixels")


def ascend_once(model: Model, jobs: Sequence[Job], *, steps: int, size: int | None, lr: float = 0.05,
                seed: int = 0, device: str = "cpu", on_warning: Callable[[str], None] | None = None,
                plugins: Manager | None = None, budgets: dict[int, int] | None = None,
                progress: _Progress | Callable[[str], None] | None = None,
                space: tuple[str | None, str | None] = (None, None)) -> dict[int, dict[int, Ascent]]:
    """`ascend` in one render: {layer index: {channel: Ascent}} (best value at the layer's centre).

    `jobs` are (layer, channels or None for all, threshold): every unit of every job goes into one render (the
    engine's batches, one forward per step through the graph cut at the deepest layer), which stops a chunk early
    once each unit beat its threshold, stalled, or used its layer's budget. The ReLU gradient override is on for
    every step, so a unit blocked only by ReLU gradients still gets driven. The one place the checks call the
    render engine.
    """
    budgets = budgets or {}
    targets: list[Neuron] = []
    owners: list[tuple[int, int]] = []
    bars: list[float] = []
    limit: list[int] = []
    for layer, channels, bar in jobs:
        chans = list(range(layer.channels or 0)) if channels is None else list(channels)
        targets += [Neuron(layer.index, c) for c in chans]  # the centre position: probes measure peaks too
        owners += [(layer.index, c) for c in chans]
        bars += [bar] * len(chans)
        limit += [min(steps, budgets.get(layer.index, steps))] * len(chans)
    if not targets:
        return {}
    if progress is not None and not isinstance(progress, _Progress):
        progress = _Progress(len(targets), progress)
    stopper = _EarlyStop(np.asarray(bars, dtype=np.float64), np.asarray(limit), progress)
    # the highest value, not a picture: the plain ascent (Adam, Lucid's Fourier image) its thresholds were set with
    res = render(model, targets, plugins=plugins or builtins_only(), param="fft", quality="plain",
                 steps=max(limit), size=size, transforms="none", relu_override=1.0, lr=lr, free_size=True,
                 seed=seed, device=device, record_every=max(1, steps // 4), preprocess=space[0], value_range=space[1],
                 on_warning=on_warning or (lambda m: None), on_step=stopper)
    # the best finite value each unit reached during the ascent or on its final image
    best = np.fmax(np.asarray(res.values, dtype=np.float64), np.asarray(res.best_values, dtype=np.float64))
    best = np.fmax(best, stopper.best)
    out: dict[int, dict[int, Ascent]] = {}
    for k, unit in enumerate(res.units):
        li, c = owners[k]
        if unit.layer_index is not None and unit.channel is not None:
            li, c = int(unit.layer_index), int(unit.channel)
        if np.isfinite(best[k]):
            ran = int(stopper.opened[k] or stopper.steps[k])  # the step it opened, else the steps it ran
            out.setdefault(li, {})[c] = Ascent(float(best[k]), bool(stopper.stalled[k]), ran)
    return out
