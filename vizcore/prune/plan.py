"""From the channel classes and the evidence to a plan: which classes go (dead), which fold into biases
(constant), which merge into a copy (duplicates), and why every other candidate stays.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .evidence import CheckVerdicts, Evidence
from .graph import Channels, Graph, Sink, attr


@dataclass
class Plan:
    """Classes (by root atom) to remove, fold or merge, with a label for each and the reasons for kept ones."""

    remove: set[int] = field(default_factory=set)
    fold: set[int] = field(default_factory=set)
    merge: dict[int, int] = field(default_factory=dict)  # removed copy -> kept original
    scale: dict[int, float] = field(default_factory=dict)  # merged copy -> its factor (a near copy ~ scale * original)
    approx: set[int] = field(default_factory=set)  # lossy: removed, its mean folded into the consumers' biases
    kept: list[tuple[int, str]] = field(default_factory=list)
    inconclusive: int = 0
    labels: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def drop(self) -> set[int]:
        return self.remove | self.fold | set(self.merge) | self.approx

    def only(self, roots: set[int]) -> Plan:
        """The same plan restricted to `roots` (for the bisection)."""
        return Plan(self.remove & roots, self.fold & roots, {b: a for b, a in self.merge.items() if b in roots},
                    {b: s for b, s in self.scale.items() if b in roots}, self.approx & roots, labels=self.labels)

    def actions(self) -> list[tuple[str, int]]:
        return sorted([("remove", r) for r in self.remove] + [("fold", r) for r in self.fold] +
                      [("merge", r) for r in self.merge] + [("approx", r) for r in self.approx], key=lambda x: x[1])


def labels(ch: Channels) -> dict[int, str]:
    """A readable name per class: the first Conv/Gemm that produces it and the channel index there."""
    out: dict[int, str] = {}
    for e in ch.edits:
        if e[0] in ("out", "dw"):
            node, tensor = e[1], e[-1]
            for i, a in enumerate(ch.atoms.get(tensor, [])):
                out.setdefault(ch.uf.find(int(a)), f"{node.name or node.output[0]}:{i}")
    for t, atoms in ch.atoms.items():
        for i, a in enumerate(atoms):
            out.setdefault(ch.uf.find(int(a)), f"{t}:{i}")
    return out


def sink_reads(ch: Channels) -> dict[int, list[tuple[Sink, int]]]:
    """Per class, every (sink, channel index in the sink's input tensor) that reads it."""
    reads: dict[int, list[tuple[Sink, int]]] = defaultdict(list)
    for s in ch.sinks:
        for k, r in enumerate(ch.uf.roots(ch.atoms[s.tensor])):
            reads[int(r)].append((s, k))
    return reads


def _check_roots(ch: Channels, g: Graph, check: CheckVerdicts, plan: Plan) -> tuple[set[int], set[int]]:
    """The classes the check measured and those it called dead."""
    by_node = {n.name: n.output[0] for n in g.model.graph.node if n.name and n.output}
    covered, dead, missing = set(), set(), []
    for layer, chans in check.dead.items():
        t = by_node.get(layer, layer)
        if t not in ch.atoms:
            missing.append(layer)
            continue
        roots = ch.uf.roots(ch.atoms[t])
        covered.update(int(r) for r in roots)
        dead.update(int(roots[c]) for c in chans if 0 <= c < len(roots))
    if missing:
        plan.notes.append(f"{len(missing)} check layer(s) not found in this model: {', '.join(missing[:5])}")
    return covered, dead


def foldable(s: Sink) -> str | None:
    """None if a constant input channel of this sink folds exactly into its bias, else why not."""
    n = s.node
    if n.op_type == "Conv":
        if any(int(p) for p in attr(n, "pads", [])) or attr(n, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return f"{n.name or 'Conv'} pads with zeros (the border would change)"
        return None
    if n.op_type == "Gemm":
        return None
    return f"{n.op_type} {n.name} has no bias to fold into"


def _margins(ch: Channels, ev: Evidence, margin: float) -> dict[int, str]:
    """Classes that are zero behind a ReLU-like gate whose input came within `margin` std of the threshold."""
    close: dict[int, str] = {}
    if margin <= 0:
        return close
    for out, inp, thr in ch.gates:
        so, si = ev.stats.get(out), ev.stats.get(inp)
        if so is None or si is None:
            continue
        std = si.std
        for k, r in enumerate(ch.uf.roots(ch.atoms[out])):
            if so.maxabs[k] == 0 and si.hi[k] + margin * std[k] >= thr:
                gap = (thr - si.hi[k]) / std[k] if std[k] > 0 else 0.0
                close.setdefault(int(r), f"zero on the probes, but its input came within {gap:.2g} std of firing "
                                 f"(margin {margin:g})")
    return close


def decide(ch: Channels, g: Graph, ev: Evidence, duplicates: bool = False, margin: float = 2.0) -> Plan:
    """The plan: dead classes go (when clear of firing by `margin` std), constants fold where exact, duplicates
    merge when asked."""
    plan = Plan(labels=labels(ch))
    close = _margins(ch, ev, margin)
    frozen = ch.frozen_roots()
    reads = sink_reads(ch)
    covered, check_dead = _check_roots(ch, g, ev.check, plan) if ev.check else (set(), set())
    for root, rs in sorted(reads.items()):
        st = [(ev.stats[s.tensor], k) for s, k in rs]
        peak = max(float(t.maxabs[k]) for t, k in st)
        const = all(t.lo[k] == t.hi[k] for t, k in st)
        why_frozen = frozen.get(root)
        if peak == 0 or const:
            if why_frozen:
                plan.kept.append((root, f"{'zero' if peak == 0 else 'constant'} on the probes, but {why_frozen}"))
                continue
        if peak == 0 and root in close:
            plan.inconclusive += 1
            plan.kept.append((root, close[root]))
        elif peak == 0:
            if ev.check is None:
                plan.remove.add(root)
            elif root not in covered:
                plan.inconclusive += 1
                plan.kept.append((root, "zero on the probes; the check did not measure it"))
            elif root not in check_dead:
                plan.inconclusive += 1
                plan.kept.append((root, "zero on the probes, but the check (probes/ascent) saw it fire"))
            else:
                plan.remove.add(root)
        elif const:
            why = next((w for w in (foldable(s) for s, _ in rs) if w), None)
            if why:
                plan.kept.append((root, f"constant {peak:.4g}: {why}"))
            else:
                plan.fold.add(root)
        elif ev.check and root in check_dead:
            plan.inconclusive += 1
            plan.kept.append((root, f"the check called it dead, but it reaches {peak:.3g} on the probes"))
    if duplicates:
        _duplicates(ch, ev, reads, frozen, plan)
    keep_one(ch, plan)
    return plan


def _same(ta, ka: int, tb, kb: int) -> bool:
    scale = max(float(ta.maxabs[ka]), float(tb.maxabs[kb]), 1e-30)
    if abs(ta.lo[ka] - tb.lo[kb]) > 1e-6 * scale or abs(ta.hi[ka] - tb.hi[kb]) > 1e-6 * scale:
        return False
    sa, sb = ta.sketch[ka], tb.sketch[kb]
    return bool(np.all(np.abs(sa - sb) <= 1e-6 * (np.abs(sa) + np.abs(sb) + scale * ta.samples)))


def _duplicates(ch: Channels, ev: Evidence, reads, frozen, plan: Plan) -> None:
    """Classes whose every sink read equals another class's read in the same tensor (occurrence by occurrence)."""
    taken = plan.drop
    for root, rs in sorted(reads.items()):
        if root in taken or root in frozen:
            continue
        s0, k0 = rs[0]
        roots0 = ch.uf.roots(ch.atoms[s0.tensor])
        for cand in sorted(set(int(r) for r in roots0[:k0])):
            if cand in taken or cand == root or cand in frozen:
                continue
            if all(_matches(ch, ev, s, k, root, cand) for s, k in rs):
                plan.merge[root] = cand
                taken.add(root)
                break


def _matches(ch: Channels, ev: Evidence, s: Sink, k: int, root: int, cand: int) -> bool:
    roots = ch.uf.roots(ch.atoms[s.tensor])
    occ = int(np.sum(roots[:k] == root))
    where = np.flatnonzero(roots == cand)
    if len(where) != int(np.sum(roots == root)) or occ >= len(where):
        return False
    t = ev.stats[s.tensor]
    return _same(t, int(where[occ]), t, k)


def keep_one(ch: Channels, plan: Plan) -> None:
    """Never empty a tensor: where every channel would go, the first one stays."""
    changed = True
    while changed:
        changed = False
        drop = plan.drop
        for t, atoms in ch.atoms.items():
            roots = ch.uf.roots(atoms)
            if len(roots) and all(int(r) in drop for r in roots):
                r = int(roots[0])
                plan.remove.discard(r)
                plan.fold.discard(r)
                plan.approx.discard(r)
                plan.merge.pop(r, None)
                for b, a in list(plan.merge.items()):
                    if a == r:
                        plan.merge.pop(b)
                plan.kept.append((r, f"the last channel of {t} stays"))
                changed = True
                break
