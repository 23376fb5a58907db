"""Dead and constant units from probe statistics and a short gradient ascent.

A unit is **dead** when no probe and no ascent drives it above `dead_threshold` × its layer's largest |value|;
**constant** when probes drive it, but its output at every position is the same for every probe (it does not
depend on the input). A dead unit is not also reported as constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
