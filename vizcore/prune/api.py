"""`prune(model_path, out, ...)`: find, remove, verify, measure, write."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from .. import onnxfile
from ..errors import OptionError, OutputError
from . import cost, inputs, runtime, surgery, verify
from .channels import analyze
from .evidence import Evidence, read_check
from .graph import Graph
from .plan import Plan, decide
from .report import PruneReport


def load(path: str | Path) -> tuple[onnx.ModelProto, bool]:
    """The model with its weights (read by the one safe reader, `onnxfile.read`), and whether they lived in
    external data files."""
    f = onnxfile.read(path)
    return f.proto, f.external


def _feeds(model: onnx.ModelProto, n: int, size: int, seed: int, first: np.ndarray | None = None) -> dict:
    sp = inputs.specs(model)
    feed = {}
    for i, s in enumerate(sp):
        feed[s.name] = first if (i == 0 and first is not None) else inputs.noise(s, n, size, seed + 17 * i, model)
    return feed


def _size(model: onnx.ModelProto, size: int | None) -> int:
    dims = inputs.specs(model)[0].dims
    fixed = [d for d in dims[2:] if d is not None]
    return size or (fixed[0] if fixed else 224)


def _input_sets(model, size, seed, probes, data, verify_data) -> tuple[dict, dict]:
    """Evidence sets (probes, --data) and verification-only sets (--verify-data, fresh random at batch 1 and 3)."""
    spec = inputs.specs(model)[0]
    ev = {"probes": _feeds(model, probes, size, seed)}
    if data is not None:
        x = inputs.load_data(data, spec, size, model)
        ev["data"] = _feeds(model, len(x), size, seed + 1, x)
    ver = {}
    if verify_data is not None:
        x = inputs.load_data(verify_data, spec, size, model)
        ver["verify-data"] = _feeds(model, len(x), size, seed + 2, x)
    ver["random"] = _feeds(model, 3, size, seed + 3)
    return ev, ver


def gather_evidence(model, ch, sets: dict, check, batch: int) -> Evidence:
    """Sink-tensor statistics over every evidence input."""
    ev = Evidence(check=check)
    tensors = sorted({s.tensor for s in ch.sinks} | {t for gate in ch.gates for t in gate[:2]})
    if not tensors:
        return ev
    sess = runtime.session(model, tensors)
    start = 0
    for name, feed in sets.items():
        n = len(next(iter(feed.values())))
        ev.sources[name] = n
        for out in runtime.run_all(sess, runtime.chunks(feed, batch)):
            ev.collect({t: out[t] for t in tensors}, start)
            start += len(out[tensors[0]])
    return ev


def _verify(model, pruned, sets: dict, batches: tuple[int, ...]) -> list[verify.Comparison]:
    sa, sb = runtime.session(model), runtime.session(pruned)
    out = []
    for name, feed in sets.items():
        for b in batches:
            n = len(next(iter(feed.values())))
            sub = {k: v[:max(b, min(n, 3 * b))] for k, v in feed.items()} if name == "random" else feed
            out.append(verify.compare(sa, sb, f"{name} (batch {b})", sub, b))
    return out


def _culprit(model, ch, plan: Plan, ev, sets, batches, tol) -> dict:
    """Bisect the plan's actions for the first whose removal pushes a difference over the tolerance."""
    actions = plan.actions()

    def fails(acts) -> bool:
        sub = plan.only({r for _, r in acts})
        pruned = surgery.apply(model, ch, sub, ev)
        return any(c.worst > tol for c in _verify(model, pruned, sets, batches))

    (kind, root), alone = verify.bisect(actions, fails)
    return {"unit": plan.labels.get(root, f"class {root}"), "action": kind, "fails_alone": alone}


def prune(model_path: str | Path, out: str | Path | None = None, *, from_check: str | Path | None = None,
          data: str | Path | None = None, verify_data: str | Path | None = None, duplicates: str | None = None,
          tolerance: float = 1e-5, margin: float = 2.0, dry_run: bool = False, force: bool = False, probes: int = 16,
          size: int | None = None, seed: int = 0, batch: int = 4, latency_reps: int = 20,
          progress: Callable[[str], None] | None = None) -> PruneReport:
    """Remove dead (and, with duplicates="merge", duplicate) channels; verify in onnxruntime; write `out`.

    A channel is dead when it is exactly zero at every channel-mixing consumer on every probe and --data input
    (and, with `from_check`, the check called it dead); behind a ReLU-like gate its input must also have stayed
    `margin` standard deviations below the threshold (0: no margin test).

    When the pruned outputs differ by more than `tolerance` (relative to each output's scale) the report has
    `verified == False` and a `culprit`, and nothing is written. The input file is only read.
    """
    say = progress or (lambda msg: None)
    out_path = _check_out(model_path, out, force, dry_run)
    if duplicates not in (None, "keep", "merge"):
        raise OptionError(f"--duplicates {duplicates!r}: unknown", "use --duplicates merge (or leave it out)")
    if not tolerance >= 0:
        raise OptionError("--tolerance must be >= 0")
    say("loading")
    model, external = load(model_path)
    sz = _size(model, size)
    check = read_check(from_check) if from_check else None
    ev_sets, ver_sets = _input_sets(model, sz, seed, probes, data, verify_data)
    fixed = inputs.specs(model)[0].fixed_batch
    batches = (fixed,) if fixed else (1, 3)
    say("tracing channels")
    one = {k: v[:fixed or 1] for k, v in ev_sets["probes"].items()}
    values: dict = {}
    shapes = runtime.shapes(model, one, values)
    ch = analyze(Graph(model), shapes, values)
    say("gathering evidence")
    ev = gather_evidence(model, ch, ev_sets, check, fixed or batch)
    plan = decide(ch, Graph(model), ev, duplicates=duplicates == "merge", margin=margin)
    report = _report(model_path, out_path, ch, plan, ev, tolerance, dry_run)
    say("pruning and verifying")
    pruned = surgery.apply(model, ch, plan, ev)
    _checker(pruned)
    report.verification = _verify(model, pruned, {**ev_sets, **ver_sets}, batches)
    if not report.verified:
        say("bisecting")
        report.culprit = _culprit(model, ch, plan, ev, {**ev_sets, **ver_sets}, batches, tolerance)
        return report
    say("measuring")
    _measure(report, model, pruned, one, latency_reps)
    if out_path is not None and not dry_run:
        write(pruned, out_path, external, force)
        report.written = True
    return report


def _check_out(model_path, out, force: bool, dry_run: bool) -> Path | None:
    if out is None:
        if not dry_run:
            raise OptionError("no output file", "pass --out SMALLER.onnx, or --dry-run to only report")
        return None
    p = Path(out)
    if p.resolve() == Path(model_path).resolve():
        raise OutputError(f"--out {p} is the input model", "the input is never overwritten; choose another --out")
    if p.exists() and not force and not dry_run:
        raise OutputError(f"{p} exists", "choose another --out, or pass --force to replace it")
    return p


def _checker(pruned: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # a bug in the surgery, not the user's fault: say so plainly
        raise RuntimeError(f"the pruned graph fails onnx.checker: {exc}") from exc


def _report(model_path, out_path, ch, plan: Plan, ev: Evidence, tol: float, dry_run: bool) -> PruneReport:
    src = {"sources": dict(ev.sources), "check": ev.check.path if ev.check else None}
    notes = list(plan.notes)
    if ev.check is None:
        notes.append("no --from-check: the evidence is the probes and --data only, without gradient-ascent "
                     "evidence; run `vizcore check MODEL --json check.json` first and pass --from-check")
    r = PruneReport(model=str(model_path), out=str(out_path) if out_path else None, evidence=src, tolerance=tol,
                    dry_run=dry_run, inconclusive=plan.inconclusive, frozen_ops=dict(ch.unknown_ops), notes=notes)
    for kind, root in plan.actions():
        entry = {"unit": plan.labels.get(root, f"class {root}"), "action": kind}
        if kind == "merge":
            entry["into"] = plan.labels.get(plan.merge[root], f"class {plan.merge[root]}")
        r.removed.append(entry)
    r.kept = [{"unit": plan.labels.get(root, f"class {root}"), "reason": why} for root, why in plan.kept]
    return r


def _measure(report: PruneReport, model, pruned, feed, reps: int) -> None:
    sa = runtime.shapes(model, feed)
    sb = runtime.shapes(pruned, feed)
    before, after = cost.layer_costs(model, sa), cost.layer_costs(pruned, sb)
    ta, tb = cost.layer_latency(model, pruned, feed, reps=max(3, reps // 2)) if reps else ({}, {})
    for key, b in before.items():
        a = after.get(key, {"channels": 0, "params": 0, "macs": 0})
        if a != b:
            report.layers.append({"layer": b["name"], "op": b["op"], "channels": [b["channels"], a["channels"]],
                                  "params": [b["params"], a["params"]], "macs": [b["macs"], a["macs"]],
                                  "latency_s": [ta.get(b["name"]), tb.get(a.get("name", b["name"]))]})
    lat = cost.latency(runtime.session(model), runtime.session(pruned), feed, reps=reps) if reps else {}
    report.cost = {"params": [cost.params(model), cost.params(pruned)], "macs": [cost.macs(model, sa),
                   cost.macs(pruned, sb)], "file_bytes": [cost.weight_bytes(model), cost.weight_bytes(pruned)],
                   "latency": lat}


def write(model: onnx.ModelProto, path: Path, external: bool, force: bool) -> None:
    """Write atomically (a temporary file and a rename); weights go to `NAME.data` when the input had external data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_model = Path(tmp) / path.name
        try:
            if external:
                onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=path.name + ".data", size_threshold=1024)
                data = Path(tmp) / (path.name + ".data")
                if data.exists():
                    os.replace(data, path.parent / data.name)
            else:
                onnx.save_model(model, str(tmp_model))
            if path.exists() and not force:
                raise OutputError(f"{path} appeared while pruning", "pass --force to replace it")
            os.replace(tmp_model, path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable --out") from exc
