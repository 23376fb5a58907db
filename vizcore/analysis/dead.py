"""Per-unit verdicts from probe statistics and a short gradient ascent: `dead`, `alive` or `inconclusive`.

- **dead**: a gated unit (a ReLU-like gate follows it, see `gating`) that no probe and none of the user's data drove
  above `threshold` (= dead_threshold x its layer's largest |value|), and whose gradient ascent (measured before the
  gate, with the ReLU gradient override) stalled below the threshold: it cannot be opened.
- **inconclusive**: as dead, except the ascent ran out of steps while still climbing (or did not run). Reported, not
  a failure unless `fail-on-inconclusive`.
- **alive**: everything else. A linear unit (no gate) is never dead: a small output is no evidence. Zero weights
  are a separate, exact finding (`zero_weights`).

**constant**: driven above the threshold, but its output at every position is the same for every probe.
**dead on your data**: APoZ (fraction of outputs <= 0, Hu et al. 2016) is 100 % on the user's data (`--data`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..channelstats import LayerStats

#: Floor of the dead threshold, for layers whose every value is zero.
ABS_FLOOR = 1e-12


@dataclass(frozen=True)
class Ascent:
    """What the ascent did for one unit: the best value reached (before the gate) and whether it stalled there."""

    best: float
    stalled: bool
    steps: int = 0


@dataclass
class UnitEvidence:
    """One unit's verdict and what it rests on."""

    channel: int
    verdict: str  # "alive", "dead", "inconclusive"
    apoz: float | None
    peak: float | None
    ascent_best: float | None
    threshold: float
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"channel": self.channel, "verdict": self.verdict, "apoz": self.apoz, "peak": self.peak,
                "ascent_best": self.ascent_best, "threshold": self.threshold, "reason": self.reason}


@dataclass
class UnitVerdict:
    """Channel lists of one layer by finding, each unit's evidence, and what the ascent did."""

    dead: list[int] = field(default_factory=list)
    inconclusive: list[int] = field(default_factory=list)
    constant: list[int] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)
    dead_on_data: list[int] = field(default_factory=list)
    threshold: float = 0.0
    candidates: list[int] = field(default_factory=list)  # gated units no probe drove
    revived: list[int] = field(default_factory=list)  # driven only by the ascent
    ascent: str = "not needed"  # "ran", "not needed", "disabled", "failed: ..."
    units: list[UnitEvidence] = field(default_factory=list)


def threshold(stats: LayerStats, dead_threshold: float) -> float:
    """The value a unit of this layer must exceed to be alive."""
    return max(dead_threshold * stats.scale, ABS_FLOOR)


def candidates(stats: LayerStats, dead_threshold: float) -> list[int]:
    """Channels that no probe drove above the threshold (the ones the ascent must try, if gated)."""
    thr = threshold(stats, dead_threshold)
    ok = np.isfinite(stats.peak)
    return [int(i) for i in np.nonzero(ok & (stats.peak <= thr))[0]]


def merge(a: LayerStats, b: LayerStats | None) -> LayerStats:
    """Stats over both probe sets (spread: the larger of the two; positions of different sizes do not mix)."""
    if b is None:
        return a
    tot = a.count + b.count
    apoz = None
    if a.apoz is not None and b.apoz is not None and tot:
        apoz = (a.apoz * a.count + b.apoz * b.count) / tot
    return LayerStats(np.fmax(a.peak, b.peak), np.fmax(a.spread, b.spread), a.nonfinite | b.nonfinite,
                      max(a.scale, b.scale), apoz, tot)


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _judge_unit(c: int, gated: bool, cand: bool, asc: Ascent | None, thr: float, zero_w: bool,
                can_ascend: bool, bounded: bool = False) -> tuple[str, str]:
    if not gated:
        return "alive", "linear unit (no gate follows it): never dead" + ("; its weights are all zero" if zero_w
                                                                            else "")
    if not cand:
        return "alive", "a probe drove it above the threshold"
    if asc is not None and asc.best > thr:
        return "alive", f"opened by the gradient ascent in {asc.steps} steps"
    if asc is not None and asc.stalled:
        return "dead", f"closed on every probe; the ascent stalled at {asc.best:.3g} <= {thr:.3g}"
    if zero_w:
        return "dead", "closed on every probe and its weights are all zero"
    if bounded:
        return "dead", "closed on every probe, and no input in the model's range can open it (its weights and bias)"
    if asc is None:
        return "inconclusive", "closed on every probe; no ascent" + ("" if can_ascend else " (disabled)")
    return "inconclusive", f"closed on every probe; the ascent ran out of steps at {asc.best:.3g} <= {thr:.3g}"


def judge(stats: LayerStats, *, gated: bool, dead_threshold: float, constant_tolerance: float,
          ascent: Mapping[int, Ascent] | None = None, data: LayerStats | None = None,
          zero_weights: Sequence[int] = (), can_ascend: bool = True, closed: Sequence[int] = ()) -> UnitVerdict:
    """The verdict of every unit of one layer; `stats` covers every probe (the user's data included). `closed`:
    units that no input in the model's range can open (`gating.closed_for_every_input`)."""
    thr = threshold(stats, dead_threshold)
    cand = candidates(stats, dead_threshold) if gated else []
    ascent, zero, shut = ascent or {}, set(zero_weights), set(closed)
    v = UnitVerdict(threshold=thr, candidates=cand)
    cset = set(cand)
    for c in range(len(stats.peak)):
        verdict, why = _judge_unit(c, gated, c in cset, ascent.get(c), thr, c in zero, can_ascend, c in shut)
        asc = ascent.get(c)
        apoz = _finite(stats.apoz[c]) if stats.apoz is not None and gated else None
        v.units.append(UnitEvidence(c, verdict, apoz, _finite(stats.peak[c]), _finite(asc.best) if asc else None,
                                    thr, why))
        if verdict == "dead":
            v.dead.append(c)
        elif verdict == "inconclusive":
            v.inconclusive.append(c)
        elif c in cset:
            v.revived.append(c)
    finite = ~stats.nonfinite & np.isfinite(stats.peak) & np.isfinite(stats.spread)
    const = finite & (stats.peak > thr) & (stats.spread <= constant_tolerance * stats.scale)
    v.constant = [int(i) for i in np.nonzero(const)[0]]
    v.nonfinite = [int(i) for i in np.nonzero(stats.nonfinite)[0]]
    if data is not None and data.apoz is not None and gated:
        v.dead_on_data = [int(i) for i in np.nonzero(data.apoz >= 1.0)[0]]
    return v


def classify(stats: LayerStats, ascent_best: dict[int, float] | None, dead_threshold: float,
             constant_tolerance: float) -> UnitVerdict:
    """`judge` for a gated layer whose ascent (if any) stalled wherever it ended (the rule before verdicts had
    evidence: a candidate the ascent did not open is dead)."""
    asc = {c: Ascent(b, True) for c, b in (ascent_best or {}).items()}
    cand = candidates(stats, dead_threshold)
    asc.update({c: Ascent(-np.inf, True) for c in cand if c not in asc})
    return judge(stats, gated=True, dead_threshold=dead_threshold, constant_tolerance=constant_tolerance, ascent=asc)
