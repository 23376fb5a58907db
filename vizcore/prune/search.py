"""The search under a budget: candidates ranked by their estimated damage per MAC saved, accepted greedily in
chunks, each chunk measured in onnxruntime on the calibration data (a chunk that breaks the budget is halved; a
single candidate that breaks it is skipped), re-ranked on the pruned model every few accepted steps.

Removals accumulate on a *base* (a model, its channel analysis and calibration statistics): a trial is the base
with the accepted channel classes, merges and bypasses plus the chunk; a re-rank makes the current model the new
base. Every accepted step is recorded with the recipe that rebuilds it (for the held-out replay after the search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from . import cost, runtime, surgery
from .budget import Budget, agreement, is_classifier
from .candidates import Candidate, channel_candidates, near_duplicates, structure
from .channels import analyze
from .evidence import Evidence, gather_evidence
from .graph import Channels, Graph
from .importance import taylor
from .plan import Plan, keep_one, labels
from .sensitivity import SAMPLES, Curve, Group, allocate, flip_risk, groups, measure, unit_scores

#: consecutive single candidates that may fail before the search stops
PATIENCE = 10
#: calibration inputs the per-channel means (folded into the consumers' biases) are taken over
STATS_SAMPLES = 64
#: calibration inputs a structural candidate is screened on (top-1 budgets)
SCREEN = 32
#: an estimated damage below this fraction of the mean estimate counts as none (ties go to the most MACs saved)
NEGLIGIBLE = 1e-3


@dataclass
class Base:
    """A model the removals are applied to, with its channel analysis and its calibration statistics."""

    model: onnx.ModelProto
    ch: Channels
    ev: Evidence
    shapes: dict
    offsets: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # bypass -> mean(target) - mean(source)
    origin: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> the original's index of each channel


@dataclass(frozen=True)
class Edit:
    """What is removed from a base: channel classes, merges (copy, original, scale), bypasses (target, source)."""

    channels: frozenset[int] = frozenset()
    merges: tuple[tuple[int, int, float], ...] = ()
    bypasses: tuple[tuple[str, str, bool], ...] = ()

    def plus(self, chunk: Sequence[Candidate]) -> Edit:
        return Edit(self.channels | {r for c in chunk if c.kind == "channel" for r in c.roots},
                    self.merges + tuple((c.roots[0], c.into, c.scale) for c in chunk if c.kind == "merge"),
                    self.bypasses + tuple((c.target, c.source, c.offset) for c in chunk if c.structural))


@dataclass
class Step:
    """One accepted step: what went, the measured MACs and parameters after it, the calibration agreement; the
    held-out agreement and latency are filled in after the search. `base`/`edit` rebuild its model."""

    index: int
    units: list[dict]
    macs: int
    params: int
    calibration: dict[str, float]
    base: int
    edit: Edit
    held_out: dict[str, float] | None = None
    latency: dict[str, float] | None = None

    def to_json(self) -> dict:
        kinds = sorted({u["kind"] for u in self.units})
        return {"step": self.index, "kinds": kinds, "removed": len(self.units), "units": self.units,
                "macs": self.macs, "params": self.params, "calibration": self.calibration,
                "held_out": self.held_out, "latency": self.latency}


@dataclass
class Measure:
    """The calibration inputs, the original's outputs on them, and how to run a model on them."""

    feed: dict[str, np.ndarray]
    ref: list[np.ndarray]
    batch: int
    one: dict[str, np.ndarray]

    def agreement(self, model: onnx.ModelProto, first: int | None = None) -> dict[str, float]:
        """Every metric on the calibration inputs (the `first` ones only, if given)."""
        if first is None:
            return agreement(self.ref, runtime.outputs(model, self.feed, self.batch))
        feed = runtime.head(self.feed, first)
        return agreement([r[:first] for r in self.ref], runtime.outputs(model, feed, self.batch))

    def cost(self, model: onnx.ModelProto) -> tuple[int, int]:
        """Measured MACs (per sample, from the graph's shapes on one input) and parameters."""
        return cost.macs(model, runtime.shapes(model, self.one)), cost.params(model)


@dataclass
class Search:
    """The state of one search; `run()` fills `steps` and `model`."""

    budget: Budget
    measure: Measure
    size: Sequence[int] | None
    max_steps: int = 60
    max_time: float | None = None
    rerank: int = 4
    duplicates: bool = False
    seed: int = 0
    say: Callable[[str], None] = lambda m: None
    reconstruct: Callable[[onnx.ModelProto, dict], onnx.ModelProto] | None = None  # re-fit every trial's readers
    ranking: str = "taylor"  # "taylor": one global first-order ranking; "sensitivity": measured per-group curves
    multiple: int = 8  # channels leave each group in units of this many (1: one class at a time)
    curve_cost: str = "kl"  # what a sensitivity curve measures on classifier outputs: "kl", or "margin" (`flip_risk`)
    origin: dict[str, np.ndarray] = field(default_factory=dict)  # of `model`'s channels (empty: the original's)
    bases: list[Base] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    importance: str = ""
    trials: int = 0
    macs0: int = 0
    model: onnx.ModelProto | None = None
    stopped: str = ""

    def base(self, model: onnx.ModelProto) -> Base:
        """Analyse `model`: shapes, channel classes, statistics of every channel-mixing read on (up to
        STATS_SAMPLES) calibration inputs."""
        shapes_values: dict = {}
        shapes = runtime.shapes(model, self.measure.one, shapes_values)
        ch = analyze(Graph(model), shapes, shapes_values)
        sample = runtime.head(self.measure.feed, STATS_SAMPLES)
        ev = gather_evidence(model, ch, {"data": sample}, None, self.measure.batch, sketch=False)
        origin = self.origin or {t: np.arange(s[0][1]) for t, s in shapes.items() if len(s[0]) >= 2}
        b = Base(model, ch, ev, shapes, origin=origin)
        self.bases.append(b)
        return b

    def build(self, b: Base, edit: Edit, fit: bool = True) -> tuple[onnx.ModelProto | None, set[int]]:
        """The base with an edit applied (its readers re-fitted by least squares when the search reconstructs and
        `fit`), and the channel classes that really went (the last channel of a tensor stays)."""
        merges = [(c, a, s) for c, a, s in edit.merges if a not in edit.channels]
        plan = Plan(approx=set(edit.channels) | {c for c, a, _ in edit.merges if a in edit.channels},
                    merge={c: a for c, a, _ in merges}, scale={c: s for c, _, s in merges})
        keep_one(b.ch, plan)
        m = surgery.apply(b.model, b.ch, plan, b.ev) if plan.drop else b.model
        for target, source, offset in edit.bypasses:
            kt, ks = (np.array([int(r) not in plan.drop for r in b.ch.uf.roots(b.ch.atoms[t])])
                      if t in b.ch.atoms else None for t in (target, source))
            if kt is not None and ks is not None and (len(kt) != len(ks) or (kt != ks).any()):
                return None, set()  # the edit removed other channels from the two ends: they no longer match
            off = b.offsets.get((target, source)) if offset else None
            if off is not None and kt is not None:  # the channels the edit removed go from the offset too
                off = off[:, np.flatnonzero(kt)] if len(kt) == off.shape[1] else None
            m = surgery.bypass(m, target, source, off)
            if m is None:
                return None, set()
        if self.reconstruct is not None and fit and (plan.drop or edit.bypasses):
            m = self.reconstruct(m, origin(b, plan.drop))
        return m, plan.drop

    def ranked(self, b: Base, skip: set[str]) -> list[Candidate]:
        """The base's candidates, least estimated damage per MAC first; those without an estimate last."""
        g = Graph(b.model)
        cands = [c for c in channel_candidates(b.ch, g, b.shapes) + structure(b.model, b.shapes)
                 if c.macs > 0 and c.label not in skip]
        if self.duplicates:
            cands += self._merges(b)
        cands = self._screen(b, self._offsets(b, cands), skip)
        scores, self.importance = taylor(b.model, self.size, self.measure.feed, self.measure.ref, cands, b.ch,
                                         b.ev, seed=self.seed, say=self.say, offsets=b.offsets,
                                         margin=self.budget.metric == "top1")
        if self.multiple > 1 or self.ranking == "sensitivity":
            cands, scores = self._units(b, cands, scores)
        if self.ranking == "sensitivity":
            return self._allocated(b, cands, scores)
        known = [v for v in scores if v is not None]
        floor = NEGLIGIBLE * (float(np.mean(known)) if known else 0.0)  # below it: no damage, the most MACs first
        keyed = [(math.inf if v is None else max(v, floor) / c.macs, i) for i, (c, v) in enumerate(zip(cands, scores))]
        return [cands[i] for _, i in sorted(keyed)]

    def _units(self, b: Base, cands: list[Candidate], scores: list[float | None]
               ) -> tuple[list[Candidate], list[float | None]]:
        """The single channel classes replaced by the units of their groups (`sensitivity.groups`), with summed
        estimates; classes of a group too small for one unit are left out. Other candidates stay as they are."""
        grps = groups(cands, scores, b.ch, self.multiple)
        per = unit_scores(grps, cands, scores)
        other = [(c, v) for c, v in zip(cands, scores) if c.kind != "channel"]
        units = [(u, per[u.label]) for g in grps for u in g.units]
        return [c for c, _ in other + units], [v for _, v in other + units]

    def _allocated(self, b: Base, cands: list[Candidate], scores: list[float | None]) -> list[Candidate]:
        """The units in the order of the per-group sensitivity allocation (`sensitivity.py`), measured on this
        base; structural candidates are measured alone and placed by the same cost per MAC; merges last."""
        n = len(self.measure.ref[0])
        first = min(n, SAMPLES)
        allowed = math.floor((1 - self.budget.bound) * n + 1e-9)
        key = self.budget.metric
        feed, ref = runtime.head(self.measure.feed, first), [r[:first] for r in self.measure.ref]

        def run(roots: list[int], c: Candidate | None = None) -> dict | None:
            m, went = self.build(b, Edit().plus([c]) if c else Edit(channels=frozenset(roots)), fit=False)
            if m is None or (c is None and not went and roots):
                return None
            outs = runtime.outputs(m, feed, self.measure.batch)
            got = agreement(ref, outs)
            if self.curve_cost == "margin" and is_classifier(np.asarray(ref[0])):
                got["risk"] = flip_risk(ref[0], outs[0])
            return got

        def cost(got: dict, base: float = 0.0) -> float:
            """What a removal adds to the base's own cost (the base is already pruned after a re-rank)."""
            if "risk" in got:
                return float(got["risk"]) - base
            return (float(got["kl"]) if "kl" in got else 1.0 - float(got["cos"])) - base

        got0 = run([])
        own = cost(got0) if got0 is not None else 0.0

        def ok(got: dict) -> bool:
            if key == "top1":
                return round((1 - got["top1"]) * first) <= allowed
            return self.budget.met(got[key])

        by_group: dict[str, list[Candidate]] = {}
        for c in cands:
            if c.group:
                by_group.setdefault(c.group, []).append(c)
        grps = [Group((g,), g, us, sum(len(u.roots) for u in us) + self.multiple) for g, us in by_group.items()]
        self.say(f"sensitivity of {len(grps)} channel groups on {first} calibration inputs")
        curves = measure(grps, run, lambda got: cost(got, own), ok, self.say)
        for c in cands:
            if c.structural:
                got = run([], c)
                if got is not None:
                    curves.append(Curve(Group((c.label,), c.label, [c], 1), {1: (cost(got, own), ok(got))}))
        how = "top-1 margin lost" if self.curve_cost == "margin" else "KL"
        self.importance += f"; units of {self.multiple} ordered by per-group sensitivity ({how} on {first} inputs)"
        return allocate(curves) + [c for c in cands if c.kind == "merge"]

    def _offsets(self, b: Base, cands: list[Candidate]) -> list[Candidate]:
        """The mean of what each structural candidate removes (folded in as an offset, like a channel's mean)."""
        pairs = {(c.target, c.source) for c in cands if c.structural}
        names = sorted({t for p in pairs for t in p if len(b.shapes.get(t, ((),))[0]) >= 2})
        if not names:
            return cands
        sample = runtime.head(self.measure.feed, STATS_SAMPLES)
        mu = runtime.means(b.model, sample, self.measure.batch, names)
        b.offsets.update({(t, s): mu[t] - mu[s] for t, s in pairs if t in mu and s in mu and
                          mu[t].shape == mu[s].shape})
        return [replace(c, offset=True) if (c.target, c.source) in b.offsets else c for c in cands]

    def _screen(self, b: Base, cands: list[Candidate], skip: set[str]) -> list[Candidate]:
        """Top-1 budgets: each structural candidate alone on the first SCREEN calibration inputs; one that flips
        more of them than the budget allows on the whole set cannot pass (flips only add up): it is skipped."""
        n = len(self.measure.ref[0])
        allowed = math.floor((1 - self.budget.bound) * n + 1e-9)
        if self.budget.metric != "top1" or n <= SCREEN:
            return cands
        keep = []
        for c in cands:
            if c.structural:
                m, _ = self.build(b, Edit().plus([c]), fit=False)
                got = None if m is None else self.measure.agreement(m, SCREEN)
                if got is None or round((1 - got["top1"]) * SCREEN) > allowed:
                    skip.add(c.label)
                    continue
            keep.append(c)
        return keep

    def _merges(self, b: Base) -> list[Candidate]:
        acts = runtime.outputs(b.model, runtime.head(self.measure.feed, 16), self.measure.batch,
                               names=sorted({s.tensor for s in b.ch.sinks}), as_dict=True)
        names = labels(b.ch)
        by_root = {c.roots[0]: c for c in channel_candidates(b.ch, Graph(b.model), b.shapes)}
        return [Candidate("merge", f"{names.get(r, r)} ~ {s:.3g} x {names.get(a, a)}", by_root[r].macs, roots=(r,),
                          into=a, scale=s) for r, a, s in near_duplicates(b.ch, acts) if r in by_root]

    def run(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """Search from `model` (up to `max_steps` trials and `max_time` seconds more); the best model found (the
        input itself when nothing more fits the budget). Called again, it goes on from the model it is given."""
        t0, limit = time.monotonic(), self.trials + self.max_steps
        self.macs0 = self.macs0 or self.measure.cost(model)[0]
        self.model = model
        b, edit, ranked, pos, skip = self.base(model), Edit(), None, 0, set()
        k, fails, since = 1, 0, 0
        self.stopped = f"step limit ({self.max_steps} trials)"
        while self.trials < limit:
            if self.max_time is not None and time.monotonic() - t0 > self.max_time:
                self.stopped = f"time limit ({self.max_time:g} s)"
                break
            if ranked is None:
                ranked, pos = self.ranked(b, skip), 0
                k = max(k, len([c for c in ranked if c.kind == "channel"]) // 64, 1)
            chunk = _chunk(ranked, pos, k)
            if not chunk and self.ranking == "sensitivity" and since:
                b, edit, ranked, since = self.base(self.model), Edit(), None, 0  # measure again on the result
                continue
            if not chunk:
                self.stopped = "no candidate left"
                break
            m, went = self.build(b, edit.plus(chunk))
            if m is None or not any(c.structural or any(r in went for r in c.roots) for c in chunk):
                pos += len(chunk)  # gone with an earlier bypass, or the last channel of its tensor
                continue
            got = self.measure.agreement(m)
            self.trials += 1
            ok = self.budget.met(got[self.budget.metric])
            self._progress(t0, limit, got, ok, chunk)
            if ok:
                edit, pos, fails, since = edit.plus(chunk), pos + len(chunk), 0, since + 1
                self.origin = origin(b, went)
                self._accept(chunk, went, m, got, edit)
                k = min(2 * k, 4096)
                if self.budget.macs is not None and self.steps[-1].macs <= self.budget.macs * self.macs0:
                    self.stopped = "MACs target reached"
                    break
                if (since >= self.rerank and self.ranking != "sensitivity") or any(c.structural for c in chunk):
                    b, edit, ranked, since = self.base(m), Edit(), None, 0
            elif len(chunk) > 1:
                k = max(1, len(chunk) // 2)
            else:
                skip.add(chunk[0].label)
                if chunk[0].group and self.ranking == "sensitivity":  # its group's later units presuppose it
                    ranked = ranked[:pos + 1] + [c for c in ranked[pos + 1:] if c.group != chunk[0].group]
                pos, fails = pos + 1, fails + 1
                if fails >= PATIENCE:
                    self.stopped = f"{PATIENCE} candidates in a row broke the budget"
                    break
        return self.model

    def recovered(self, model: onnx.ModelProto, got: dict, info: dict, unit: dict | None = None) -> None:
        """Record a recovery (distillation, or a least-squares re-fit: `unit`) of the current model as a step: its
        model is a new base."""
        last = self.bases[-1]
        self.bases.append(Base(model, last.ch, last.ev, last.shapes, origin=last.origin))
        unit = unit or {"kind": "recovery", "unit": f"{info['steps']} distillation steps", "macs": 0}
        macs, params = self.measure.cost(model)
        self.steps.append(Step(len(self.steps) + 1, [unit], macs, params, got, len(self.bases) - 1, Edit()))
        self.model = model

    def _accept(self, chunk, went: set[int], m: onnx.ModelProto, got: dict, edit: Edit) -> None:
        units = [c.to_json() for c in chunk if c.structural or any(r in went for r in c.roots)]
        macs, params = self.measure.cost(m)
        self.steps.append(Step(len(self.steps) + 1, units, macs, params, got, len(self.bases) - 1, edit))
        self.model = m

    def _progress(self, t0: float, limit: int, got: dict, ok: bool, chunk: list[Candidate]) -> None:
        spent = time.monotonic() - t0
        done_here = self.trials - (limit - self.max_steps)
        left = (limit - self.trials) * spent / max(done_here, 1)
        if self.max_time is not None:
            left = min(left, max(self.max_time - spent, 0.0))
        frac = 1 - (self.steps[-1].macs / self.macs0 if self.steps and self.macs0 else 1.0)
        what = chunk[0].label if len(chunk) == 1 else f"{len(chunk)} candidates"
        m = self.budget.metric
        self.say(f"search trial {done_here}/{self.max_steps}: {what} {'accepted' if ok else 'rejected'} "
                 f"({m} {got[m]:.4g}); {frac:.1%} fewer MACs before it; ETA {eta(left)}")

    def rebuild(self, step: Step) -> onnx.ModelProto:
        """The model of an accepted step."""
        m, _ = self.build(self.bases[step.base], step.edit)
        assert m is not None
        return m


def origin(b: Base, drop: set[int]) -> dict[str, np.ndarray]:
    """The original's channel index of every channel left in the base's tensors once the classes `drop` go."""
    out = {}
    for t, o in b.origin.items():
        atoms = b.ch.atoms.get(t)
        if atoms is None or len(atoms) != len(o):
            out[t] = o
            continue
        out[t] = o[np.array([int(r) not in drop for r in b.ch.uf.roots(atoms)], dtype=bool)]
    return out


def _chunk(ranked: list[Candidate], pos: int, k: int) -> list[Candidate]:
    """The next candidates: one structural candidate alone, else up to `k` channel / merge candidates."""
    if pos >= len(ranked):
        return []
    if ranked[pos].structural:
        return [ranked[pos]]
    out = []
    for c in ranked[pos:]:
        if c.structural or len(out) >= k:
            break
        out.append(c)
    return out


def eta(seconds: float) -> str:
    """Seconds as 1m05s / 42s."""
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
