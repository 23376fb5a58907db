"""Dead and constant units from probe statistics and a short gradient ascent.

A unit is **dead** when no probe and no ascent drives it above `dead_threshold` × its layer's largest |value|;
**constant** when probes drive it, but its output at every position is the same for every probe (it does not
depend on the input). A dead unit is not also reported as constant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OptionError
from ..model import Layer, Model
from .probes import LayerStats

#: Floor of the dead threshold, for layers whose every value is zero.
ABS_FLOOR = 1e-12


@dataclass
class UnitVerdict:
    """Dead, constant and non-finite channel indices of one layer, and what the ascent did."""

    dead: list[int] = field(default_factory=list)
    constant: list[int] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)
    threshold: float = 0.0
    candidates: list[int] = field(default_factory=list)  # not driven by any probe
    revived: list[int] = field(default_factory=list)  # driven only by the ascent
    ascent: str = "not needed"  # "ran", "not needed", "unavailable: ...", "disabled"


def threshold(stats: LayerStats, dead_threshold: float) -> float:
    """The value a unit of this layer must exceed to be alive."""
    return max(dead_threshold * stats.scale, ABS_FLOOR)


def candidates(stats: LayerStats, dead_threshold: float) -> list[int]:
    """Channels that no probe drove above the threshold (the ones the ascent must try)."""
    thr = threshold(stats, dead_threshold)
    ok = np.isfinite(stats.peak)
    return [int(i) for i in np.nonzero(ok & (stats.peak <= thr))[0]]


def classify(stats: LayerStats, ascent_best: dict[int, float] | None, dead_threshold: float,
             constant_tolerance: float) -> UnitVerdict:
    """The verdict for one layer from its probe stats and the best value the ascent reached per channel."""
    thr = threshold(stats, dead_threshold)
    cand = candidates(stats, dead_threshold)
    ascent_best = ascent_best or {}
    revived = [c for c in cand if ascent_best.get(c, -np.inf) > thr]
    dead = sorted(set(cand) - set(revived))
    finite = ~stats.nonfinite & np.isfinite(stats.peak) & np.isfinite(stats.spread)
    const_mask = finite & (stats.peak > thr) & (stats.spread <= constant_tolerance * stats.scale)
    return UnitVerdict(dead=dead, constant=[int(i) for i in np.nonzero(const_mask)[0]],
                       nonfinite=[int(i) for i in np.nonzero(stats.nonfinite)[0]], threshold=thr,
                       candidates=cand, revived=revived)


def render_available() -> bool:
    """Whether the engine's `vizcore.render` is there (the ascent needs it)."""
    import vizcore

    return callable(getattr(vizcore, "render", None))


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
    for group in depth_groups(model, jobs):
        s = size
        while True:
            try:
                got = ascend_once(model, group, steps=steps, size=s, lr=lr, seed=seed, device=device,
                                  on_warning=on_warning)
                break
            except OptionError as exc:  # e.g. a 5x5 kernel deep in the net needs more than 32 pixels
                full = model.input_shape(1)[-1]
                if s is None or s >= full or "cannot run on a" not in exc.message:
                    raise
                s = min(2 * s, full)
                if on_warning:
                    on_warning(f"the model needs a larger input: gradient ascent at {s} pixels")
        for li, vals in got.items():
            out.setdefault(li, {}).update(vals)
    return out


def ascend_once(model: Model, jobs: Sequence[Job], *, steps: int, size: int | None, lr: float = 0.05,
                seed: int = 0, device: str = "cpu",
                on_warning: Callable[[str], None] | None = None) -> dict[int, dict[int, float]]:
    """`ascend` in one render: {layer index: {channel: best value at the layer's centre}}.

    `jobs` are (layer, channels or None for all, threshold): every unit of every job goes into one render (one
    batch, one forward per step through the graph cut at the deepest layer), which stops early once all units
    of a chunk beat their layer's threshold. The ReLU gradient override is on for every step, so a unit blocked
    only by ReLU gradients still gets driven. The one place the checks call the render engine.
    """
    import vizcore

    from ..objectives import Neuron

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
    res = vizcore.render(model, targets, steps=steps, size=size, transforms="none", relu_override=1.0, lr=lr,
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
