"""Channel units and the per-group sensitivity allocation of the lossy search.

A *group* is the set of channel classes read by the same channel-mixing layers (the hidden channels of one
inverted-residual block, the channels of one residual stream): they cost the same per channel and, removed, disturb
the same reads. Channels leave a group in *units* of `multiple` (8 by default), so that every tensor keeps a
channel count that is a multiple of it (onnxruntime's vectorised kernels run odd counts slower: fewer MACs would
be more time); a group with a count that is not a multiple first loses the remainder; a group never loses its
last `multiple` channels.

The sensitivity of a group is measured, not estimated: its lowest-ranked units (first-order ranking within the
group) are removed alone, 1, 2, 4, 8, ... units (up to 75 % of its channels), and the change of the outputs on
the first calibration inputs is measured in onnxruntime (KL for classifier outputs, else 1 - cosine; the flips of a
top-1 budget). The allocation then orders every unit by the measured marginal cost of the step of the curve it
belongs to per MAC saved (non-decreasing within a group: a group's units stay in order), so that the search spends
the budget on the groups that are cheap to thin out first, instead of on a global per-channel ranking that favours
expensive high-resolution channels. A point that alone breaks the budget on those inputs ends its group's curve.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .candidates import Candidate
from .graph import Channels
from .plan import sink_reads

#: the largest fraction of a group's channels whose removal is measured
LARGEST = 0.75
#: calibration inputs each sensitivity point is measured on
SAMPLES = 64
#: a measured cost below this counts as none (ties go to the most MACs saved)
FLOOR = 1e-7


@dataclass
class Group:
    """The channel candidates of one group, least important first, cut into units."""

    key: tuple[str, ...]
    label: str
    units: list[Candidate]
    channels: int  # classes in the group

    def removed(self, k: int) -> list[int]:
        """The roots of the first `k` units."""
        return [r for u in self.units[:k] for r in u.roots]


def flip_risk(a: np.ndarray, b: np.ndarray) -> float:
    """How much of the original's top-1 margin (top-1 minus second logit; at least 0.05) a change ate, averaged over
    the samples (0: none lost; 1 on a sample: it flipped at the edge), from the original's outputs `a` and the
    changed model's `b` (N, K)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    idx, top = np.arange(len(a64)), a64.argmax(1)

    def margin(y: np.ndarray) -> np.ndarray:
        other = y.copy()
        other[idx, top] = -np.inf
        return y[idx, top] - other.max(1)

    m0 = margin(a64)
    return float(np.mean(np.clip((m0 - margin(b64)) / np.maximum(m0, 0.05), 0.0, None)))


def group_key(c: Candidate, reads: dict) -> tuple[str, ...]:
    """The channel-mixing tensors that read a channel class (its label's layer where nothing reads it)."""
    tensors = sorted({s.tensor for s, _ in reads.get(c.roots[0], [])})
    return tuple(tensors) if tensors else (c.label.rsplit(":", 1)[0],)


def groups(cands: Sequence[Candidate], scores: Sequence[float | None], ch: Channels, multiple: int) -> list[Group]:
    """The single-class channel candidates `cands` (with their estimates `scores`; None: unknown, last) grouped,
    each group's classes ordered by estimate and cut into units of `multiple` (see the module doc)."""
    reads = sink_reads(ch)
    by_key: dict[tuple[str, ...], list[tuple[float, int, Candidate]]] = defaultdict(list)
    for i, (c, v) in enumerate(zip(cands, scores)):
        if c.kind == "channel" and len(c.roots) == 1:
            by_key[group_key(c, reads)].append((math.inf if v is None else v, i, c))
    out = []
    for key, members in sorted(by_key.items()):
        members.sort(key=lambda x: (x[0], x[1]))
        n = len(members)
        if n <= multiple or n < 2:
            continue
        sizes = ([n % multiple] if n % multiple else []) + [multiple] * ((n - n % multiple) // multiple - 1)
        name = members[0][2].label.rsplit(":", 1)[0]
        units, at = [], 0
        for j, size in enumerate(sizes):
            part = [c for _, _, c in members[at:at + size]]
            at += size
            units.append(Candidate("channel", f"{name}: {size} of {n} channels (unit {j + 1})",
                                   sum(c.macs for c in part), roots=tuple(r for c in part for r in c.roots),
                                   group=name))
        out.append(Group(key, name, units, n))
    return out


def unit_scores(grps: Sequence[Group], cands: Sequence[Candidate], scores: Sequence[float | None]
                ) -> dict[str, float | None]:
    """Each unit's estimate: the sum of its classes' (None when one is unknown)."""
    by_root = {c.roots[0]: v for c, v in zip(cands, scores) if c.kind == "channel"}
    out: dict[str, float | None] = {}
    for g in grps:
        for u in g.units:
            vs = [by_root.get(r) for r in u.roots]
            out[u.label] = None if any(v is None for v in vs) else float(sum(vs))  # type: ignore[arg-type]
    return out


def points(n_units: int, channels: int, sizes: Sequence[int]) -> list[int]:
    """Unit counts whose removal is measured: 1, 2, 4, 8, ... units (and all of them), up to LARGEST of the
    channels."""
    out, k, total = [], 1, 0
    while k <= n_units:
        total = sum(sizes[:k])
        if k > 1 and total > LARGEST * channels:
            break
        out.append(k)
        k *= 2
    if out and out[-1] < n_units and sum(sizes) <= LARGEST * channels:
        out.append(n_units)
    return out


@dataclass
class Curve:
    """The measured cost of removing the first `k` units of a group, for each measured `k` (cost, ok)."""

    group: Group
    measured: dict[int, tuple[float, bool]]


def measure(grps: Sequence[Group], run: Callable[[list[int]], dict | None], cost: Callable[[dict], float],
            ok: Callable[[dict], bool], say: Callable[[str], None] = lambda m: None) -> list[Curve]:
    """Each group's curve: `run(roots)` measures a removal (None: it could not be built), `cost` and `ok` read
    that measurement. Points beyond the first that is not ok are not measured."""
    out = []
    for i, g in enumerate(grps):
        got: dict[int, tuple[float, bool]] = {}
        for k in points(len(g.units), g.channels, [len(u.roots) for u in g.units]):
            m = run(g.removed(k))
            if m is None:
                break
            got[k] = (cost(m), ok(m))
            if not got[k][1]:
                break
        say(f"sensitivity {i + 1}/{len(grps)}: {g.label} ({g.channels} channels): " +
            ", ".join(f"{sum(len(u.roots) for u in g.units[:k])} -> {v:.3g}{'' if fine else ' (breaks)'}"
                      for k, (v, fine) in got.items()))
        out.append(Curve(g, got))
    return out


def allocate(curves: Sequence[Curve]) -> list[Candidate]:
    """Every unit up to each group's last admissible point, cheapest marginal cost per MAC first (see the module
    doc)."""
    keyed = []
    for gi, cv in enumerate(curves):
        units = cv.group.units
        prev_k, prev_cost, ratio = 0, 0.0, 0.0
        for k, (c, fine) in sorted(cv.measured.items()):
            if not fine:
                break
            macs = sum(u.macs for u in units[prev_k:k])
            if macs <= 0:
                break
            ratio = max(ratio, max(c - prev_cost, FLOOR) / macs)
            for j in range(prev_k, k):
                keyed.append((ratio, gi, j, units[j]))
            prev_k, prev_cost = k, max(c, prev_cost)
    keyed.sort(key=lambda x: x[:3])
    return [u for *_, u in keyed]
