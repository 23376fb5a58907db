"""The check's one call into the render engine: a short gradient ascent that tries to open candidate dead units.

Runs through `api.render` with a manager of built-ins only, so a check's verdicts never depend on installed plugins
(no third-party lifecycle hooks, no GIF recorder riding along).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..api import render
from ..errors import InputTooSmallError
from ..model import Layer, Model
from ..objectives import Neuron
from ..plugins import Manager, builtins_only


class _EarlyStop:
    """A render's `on_step`: keeps each unit's best value and stops a chunk once every unit in it beat its bar."""

    def __init__(self, bars: np.ndarray) -> None:
        self.bars = bars
        self.best = np.full(len(bars), -np.inf)

    def __call__(self, run: Any, state: Any) -> None:
        v = state.values.detach().float().cpu().numpy().reshape(-1)
        a = run.unit_offset
        sl = slice(a, a + len(v))
        self.best[sl] = np.fmax(self.best[sl], v)
        if bool(np.all(self.best[sl] > self.bars[sl])):
            state.stop = True


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
           device: str = "cpu", on_warning: Callable[[str], None] | None = None) -> dict[int, dict[int, float]]:
    """Best value each unit reached at the centre of its layer in a short gradient ascent:
    {layer index: {channel: value}}; the jobs run in a few renders grouped by depth (`depth_groups`)."""
    out: dict[int, dict[int, float]] = {}
    builtins = builtins_only()  # built-in params/transforms only: no plugin hooks ride along
    for group in depth_groups(model, jobs):
        s = size
        while True:
            try:
                got = ascend_once(model, group, steps=steps, size=s, lr=lr, seed=seed, device=device,
                                  on_warning=on_warning, plugins=builtins)
                break
            except InputTooSmallError:  # e.g. a 5x5 kernel deep in the net needs more than 32 pixels
                full = model.input_shape(1)[-1]
                if s is None or s >= full:
                    raise
                s = min(2 * s, full)
                if on_warning:
                    on_warning(f"the model needs a larger input: gradient ascent at {s} pixels")
        for li, vals in got.items():
            out.setdefault(li, {}).update(vals)
    return out


def ascend_once(model: Model, jobs: Sequence[Job], *, steps: int, size: int | None, lr: float = 0.05,
                seed: int = 0, device: str = "cpu", on_warning: Callable[[str], None] | None = None,
                plugins: Manager | None = None) -> dict[int, dict[int, float]]:
    """`ascend` in one render: {layer index: {channel: best value at the layer's centre}}.

    `jobs` are (layer, channels or None for all, threshold): every unit of every job goes into one render (one
    batch, one forward per step through the graph cut at the deepest layer), which stops early once all units
    of a chunk beat their layer's threshold. The ReLU gradient override is on for every step, so a unit blocked
    only by ReLU gradients still gets driven. The one place the checks call the render engine.
    """
    targets: list[Neuron] = []
    owners: list[tuple[int, int]] = []
    bars: list[float] = []
    for layer, channels, bar in jobs:
        chans = list(range(layer.channels or 0)) if channels is None else list(channels)
        targets += [Neuron(layer.index, c) for c in chans]  # the centre position: probes measure peaks too
        owners += [(layer.index, c) for c in chans]
        bars += [bar] * len(chans)
    if not targets:
        return {}
    stopper = _EarlyStop(np.asarray(bars, dtype=np.float64))
    res = render(model, targets, plugins=plugins or builtins_only(),
                 steps=steps, size=size, transforms="none", relu_override=1.0, lr=lr,
                         seed=seed, device=device, record_every=max(1, steps // 4),
                         on_warning=on_warning or (lambda m: None), on_step=stopper)
    # the best finite value each unit reached during the ascent or on its final image
    best = np.fmax(np.asarray(res.values, dtype=np.float64), np.asarray(res.best_values, dtype=np.float64))
    out: dict[int, dict[int, float]] = {}
    for k, unit in enumerate(res.units):
        li, c = owners[k]
        if unit.layer_index is not None and unit.channel is not None:
            li, c = int(unit.layer_index), int(unit.channel)
        if np.isfinite(best[k]):
            cur = out.setdefault(li, {})
            cur[c] = max(cur.get(c, -np.inf), float(best[k]))
    return out
