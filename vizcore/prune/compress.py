"""`prune(..., budget=...)`: the lossy mode. Search under the budget on the calibration data (`--data`), optionally
recover by distillation, then verify on the held-out data (`--verify-data`, read only now: it never chooses), check
the graph and its interface, measure, and write only when the budget holds on both sets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx

from .. import onnxfile
from ..errors import OptionError
from . import cost, runtime
from .budget import Budget, agreement, check_applies
from .inputs import feeder
from .options import PruneOptions
from .reconstruct import Reconstructor
from .recover import recover
from .report import PruneReport
from .search import Measure, Search
from .writer import checker, write


def compress(model_path: str | Path, out_path: Path | None, file: onnxfile.ModelFile, o: PruneOptions,
             say: Callable[[str], None]) -> PruneReport:
    """The lossy prune of one model (options validated, output path checked by the caller)."""
    budget = o.budget
    assert isinstance(budget, Budget)
    if o.data is None:
        raise OptionError("--budget needs --data: the calibration inputs the budget is measured on",
                          "pass --data DIR (and --verify-data DIR, a held-out set the result must also meet)")
    model = file.proto
    feed = feeder(model, size=o.size, preprocess=o.preprocess, value_range=o.value_range, layout=o.layout,
                  feeds=o.feeds)
    calib = feed.feed(feed.data(o.data, "--data"), o.seed + 1)
    fixed = feed.fixed_batch
    batch = fixed or max(o.batch, 16)
    one = runtime.head(calib, fixed or 1)
    say("running the original on the calibration data")
    ref = runtime.outputs(model, calib, batch)
    check_applies(budget, ref)
    measure = Measure(calib, ref, batch, one)
    rec = [] if o.reconstruct == "off" else [lambda: Reconstructor(model, feed.natural[2:], calib, seed=o.seed)]
    if o.reconstruct == "trial":
        say("sampling the original's layer outputs for the least-squares re-fit")
        rec = [rec[0]()]
    s = Search(budget, measure, size=feed.natural[2:], max_steps=o.max_steps, max_time=o.max_time,
               duplicates=o.duplicates == "merge", seed=o.seed, say=say, ranking=o.ranking,
               multiple=o.channel_multiple, curve_cost=o.sensitivity_cost,
               reconstruct=rec[0] if o.reconstruct == "trial" else None)
    best, rounds = _rounds(s, model, rec, feed.natural[2:], o, say)
    calib_got = measure.agreement(best) if s.steps else agreement(ref, ref)
    rep = PruneReport(model=str(model_path), out=str(out_path) if out_path else None, tolerance=o.tolerance,
                      evidence={"sources": {"data": len(ref[0])}, "input_space": feed.space.to_json(),
                                "importance": s.importance}, dry_run=o.dry_run)
    rep.notes.extend(f"input space: {w}" for w in feed.space.warnings)
    if rec and isinstance(rec[0], Reconstructor):
        rep.reconstruction = {"mode": o.reconstruct, **rec[0].to_json()}
    if rounds:
        rep.recovery = {"rounds": rounds, "steps": sum(r["steps"] for r in rounds),
                        "kept": any(r["kept"] for r in rounds), "device": rounds[0]["device"],
                        "seconds": sum(r["seconds"] for r in rounds)}
    checker(best)
    rep.checker = "passed (onnx.checker, full_check=True)"
    rep.interface = interface(model, best)
    held = _held_out(s, model, best, feed, o, batch)
    _finish(rep, s, budget, calib_got, held, o, best)
    rep.layers, rep.cost = cost.compare(model, best, one, o.latency_reps)
    if rep.verified and out_path is not None and not o.dry_run:
        write(best, out_path, file.external, o.force)
        rep.written = True
    return rep


def _rounds(s: Search, model: onnx.ModelProto, rec: list, size, o: PruneOptions,
            say: Callable[[str], None]) -> tuple[onnx.ModelProto, list[dict]]:
    """Search, re-fit and recover, in up to ROUNDS rounds with --recover; the best model and the recovery rounds.
    `rec`: empty (no re-fit), the re-fit of every trial, or how to make the one after each round (made once, when
    the first round removed something: `rec[0]` then holds it)."""
    best, rounds = model, []
    for r in range(ROUNDS if o.recover else 1):
        n0 = len(s.steps)
        best = s.run(best)
        if len(s.steps) == n0:
            break  # nothing (more) removed: nothing (more) to re-fit or recover
        if rec and o.reconstruct == "final":
            if not isinstance(rec[0], Reconstructor):
                say("sampling the original's layer outputs for the least-squares re-fit")
                rec[0] = rec[0]()
            _refit(s, rec[0], say)
            best = s.model
        if not o.recover:
            break
        say(f"recovery round {r + 1}/{ROUNDS}")
        rounds.append(_recover(s, best, size, o, say, model if o.recover_augment else None))
        best = s.model
        if not rounds[-1]["kept"]:
            break
    return best, rounds


#: search / recovery rounds with --recover: the steps are split among them, each round searches on from the
#: recovered model (the classic prune, fine-tune, prune again)
ROUNDS = 3


def _recover(s: Search, model: onnx.ModelProto, size, o: PruneOptions, say: Callable[[str], None],
             teacher: onnx.ModelProto | None = None) -> dict:
    """One recovery round (o.recover / ROUNDS steps; with `teacher`, the original, on augmented calibration
    inputs); kept (recorded as a step) only if it helped on the calibration data."""
    before = s.steps[-1].calibration
    tuned, info = recover(model, size, s.measure.feed, s.measure.ref, steps=max(1, o.recover // ROUNDS),
                          metric=s.budget.metric, seed=o.seed, lr=o.recover_lr, device=o.device, say=say,
                          teacher=teacher)
    got = s.measure.agreement(tuned)
    info.update(calibration_before=before, calibration_after=got, kept=_better(s.budget, got, before))
    if info["kept"]:
        s.recovered(tuned, got, info)
    return info


def _refit(s: Search, rec: Reconstructor, say: Callable[[str], None]) -> None:
    """Re-fit the readers of the search's result by least squares once; kept (a step) only if it helped on the
    calibration data."""
    say("least-squares re-fit of the layers that read pruned channels")
    before = s.steps[-1].calibration
    fitted = rec(s.model, s.origin)
    got = s.measure.agreement(fitted)
    if fitted is not s.model and _better(s.budget, got, before):
        s.recovered(fitted, got, {}, {"kind": "reconstruction", "unit": "least-squares re-fit", "macs": 0})


def _better(budget: Budget, new: dict, old: dict) -> bool:
    """Whether recovery helped on the calibration data: the budget's metric, ties broken by KL / cosine."""
    key = budget.metric
    if new[key] != old[key]:
        return new[key] > old[key] if budget.higher else new[key] < old[key]
    tie = "kl" if "kl" in new else "cos"
    return new[tie] < old[tie] if tie == "kl" else new[tie] >= old[tie]


def interface(a: onnx.ModelProto, b: onnx.ModelProto) -> dict:
    """The graph inputs and outputs of both models (name, element type, dims) and whether they are identical."""
    def sig(vs) -> list:
        tt = [v.type.tensor_type for v in vs]
        return [[v.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]] for v, t in zip(vs, tt)]

    def ins(m: onnx.ModelProto) -> list:
        inits = {t.name for t in m.graph.initializer}
        return [i for i in m.graph.input if i.name not in inits]

    same = sig(ins(a)) == sig(ins(b)) and sig(a.graph.output) == sig(b.graph.output)
    return {"identical": same, "inputs": sig(ins(b)), "outputs": sig(b.graph.output)}


def _held_out(s: Search, model, best, feed, o: PruneOptions, batch: int) -> dict | None:
    """After the search: the held-out agreement of the result and of every accepted step, and each step's latency
    (interleaved with the original's, onnxruntime, batch 1)."""
    reps = max(3, o.latency_reps // 4) if o.latency_reps else 0
    one = s.measure.one
    base_sess = runtime.session(model, timed=True) if reps else None
    hfeed = href = None
    if o.verify_data is not None:
        s.say("verifying on the held-out data (--verify-data)")
        hfeed = feed.feed(feed.data(o.verify_data, "--verify-data"), o.seed + 2)
        href = runtime.outputs(model, hfeed, batch)
    for st in s.steps:
        m = s.rebuild(st)
        if href is not None:
            st.held_out = agreement(href, runtime.outputs(m, hfeed, batch))
        if reps:
            st.latency = cost.latency(base_sess, runtime.session(m, timed=True), one, reps=reps)
    return agreement(href, runtime.outputs(best, hfeed, batch)) if href is not None else None


def _finish(rep: PruneReport, s: Search, budget: Budget, calib: dict, held: dict | None, o: PruneOptions,
            best: onnx.ModelProto) -> None:
    """The budget verdict, the steps, the removed units and the notes."""
    macs = s.measure.cost(best)[0]
    key = budget.metric
    misses = {"calibration": budget.missed_by(calib[key])}
    if held is not None:
        misses["held_out"] = budget.missed_by(held[key])
    macs_ok = budget.macs is None or macs <= budget.macs * s.macs0
    if not macs_ok:
        misses["macs"] = macs / s.macs0 - budget.macs
    met = all(v == 0 for v in misses.values()) and bool(rep.interface and rep.interface["identical"])
    rep.budget = {**budget.to_json(), "calibration": calib, "held_out": held, "met": met, "missed_by": misses,
                  "macs_fraction": macs / s.macs0 if s.macs0 else 1.0, "trials": s.trials, "stopped": s.stopped}
    rep.steps = [st.to_json() for st in s.steps]
    rep.frozen_ops = dict(s.bases[0].ch.unknown_ops) if s.bases else {}
    for st in s.steps:
        for u in st.units:
            if u["kind"] in ("recovery", "reconstruction"):
                continue
            rep.removed.append({"unit": u["unit"], "action": "remove" if u["kind"] == "channel" else u["kind"],
                                "step": st.index})
    if o.verify_data is None:
        rep.notes.append("no --verify-data: the budget was checked on the calibration data only, the same data that "
                         "chose the removals; pass a held-out set")
    if not s.steps:
        rep.notes.append(f"nothing fits the budget {budget} on the calibration data")
