"""`prune(model_path, out, ...)`: find, remove, verify, measure, write."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .. import onnxfile
from ..errors import ModelLoadError, OptionError, OutputError, oneline
from ..outdir import check_creatable
from . import cost, runtime, surgery, verify
from .channels import analyze
from .evidence import CheckVerdicts, Evidence, verdicts
from .graph import Graph
from .inputs import Feeder, feeder
from .options import PruneOptions
from .plan import Plan, decide
from .report import PruneReport

#: Values the probes and data of one prune may hold at once (float32): 1 GiB.
MAX_INPUT_VALUES = 1 << 28


def _input_sets(feed: Feeder, o: PruneOptions) -> tuple[dict, dict, dict[str, int]]:
    """Evidence sets (probes, --data) and verification-only sets (--verify-data, fresh random at batch 1 and 3),
    every one made by the same `Feeder` (one input space, one layout); and the probes' count per source."""
    per = int(np.prod(feed.natural))
    if (o.probes + 16) * per > MAX_INPUT_VALUES:
        raise OptionError(f"{o.probes} probes of shape {list(feed.natural)} would hold "
                          f"{(o.probes + 16) * per * 4 / 2**30:,.1f} GiB", "pass fewer --probes or a smaller --size")
    probes, sources = feed.probes(o.probes, o.seed)
    ev = {"probes": feed.feed(probes, o.seed)}
    if o.data is not None:
        ev["data"] = feed.feed(feed.data(o.data, "--data"), o.seed + 1)
    ver = {}
    if o.verify_data is not None:
        ver["verify-data"] = feed.feed(feed.data(o.verify_data, "--verify-data"), o.seed + 2)
    ver["random"] = feed.feed(feed.probes(3, o.seed + 3, photos=False)[0][:3], o.seed + 3)
    return ev, ver, sources


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


def prune(model_path: str | Path, out: str | Path | None = None, options: PruneOptions | None = None, *,
          progress: Callable[[str], None] | None = None, **overrides: Any) -> PruneReport:
    """Remove dead (and, with duplicates="merge", duplicate) channels; verify in onnxruntime; write `out`.

    `options` (a `PruneOptions`; keywords override its fields, e.g. `probes=8, data="images/"`) are validated once.
    A channel is dead when it is exactly zero at every channel-mixing consumer on every probe and --data input
    (and, with `from_check`, the check called it dead); behind a ReLU-like gate its input must also have stayed
    `margin` standard deviations below the threshold (0: no margin test). The inputs are made as `vizcore check`
    makes them: its probes and data reader, the model's one input space (--preprocess, --range), its layout.

    When the pruned outputs differ by more than `tolerance` (relative to each output's scale) the report has
    `verified == False` and a `culprit`, and nothing is written. The input file is only read.
    """
    o = (options or PruneOptions()).replace(**overrides)
    say = progress or (lambda msg: None)
    out_path = _check_out(model_path, out, o.force, o.dry_run)
    say("loading")
    file = onnxfile.read(model_path)
    model, external = file.proto, file.external
    check = _read_check(o.from_check, file.sha256) if o.from_check else None
    feed = feeder(model, size=o.size, preprocess=o.preprocess, value_range=o.value_range, layout=o.layout,
                  feeds=o.feeds)
    ev_sets, ver_sets, probe_sources = _input_sets(feed, o)
    fixed = feed.fixed_batch
    batches = (fixed,) if fixed else (1, 3)
    say("tracing channels")
    one = {k: v[:fixed or 1] for k, v in ev_sets["probes"].items()}
    values: dict = {}
    shapes = _first_run(model, one, values, model_path)
    ch = analyze(Graph(model), shapes, values)
    say("gathering evidence")
    ev = gather_evidence(model, ch, ev_sets, check, fixed or o.batch)
    plan = decide(ch, Graph(model), ev, duplicates=o.duplicates == "merge", margin=o.margin)
    report = _report(model_path, out_path, ch, plan, ev, o.tolerance, o.dry_run)
    report.evidence.update(probe_sources=probe_sources, input_space=feed.space.to_json())
    report.notes.extend(f"input space: {w}" for w in feed.space.warnings)
    say("pruning and verifying")
    pruned = surgery.apply(model, ch, plan, ev)
    _checker(pruned, _full_check(model))
    report.verification = _verify(model, pruned, {**ev_sets, **ver_sets}, batches)
    if not report.verified:
        say("bisecting")
        report.culprit = _culprit(model, ch, plan, ev, {**ev_sets, **ver_sets}, batches, o.tolerance)
        return report
    say("measuring")
    _measure(report, model, pruned, one, o.latency_reps)
    if out_path is not None and not o.dry_run:
        write(pruned, out_path, external, o.force)
        report.written = True
    return report


def _first_run(model: onnx.ModelProto, feed: dict, values: dict, path: str | Path) -> dict:
    """Every tensor's shape on one input; a graph that onnx's checker passes and onnxruntime refuses (duplicate node
    names, a bad If condition, mismatched Q/DQ zero points, ...) is a one-line ModelLoadError."""
    try:
        return runtime.shapes(model, feed, values)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        raise ModelLoadError(f"onnxruntime cannot run {Path(path).name}: {oneline(exc, 200, typed=False)}",
                             "prune needs a model onnxruntime runs; re-export it") from exc


def _read_check(path: str | Path, sha256: str) -> CheckVerdicts:
    """The check report's verdicts, refused when the report is about another model (its sha256 differs)."""
    from ..health.results import read_report

    report = read_report(path)
    want = report.model.get("sha256")
    have = sha256
    if want and want != have:
        raise OptionError(f"--from-check {path}: the report is about another model (sha256 {str(want)[:12]}…, this "
                          f"model {have[:12]}…)", "run `vizcore check` on this model and pass its report")
    return verdicts(report, str(path))


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
    if not dry_run:
        check_creatable(p)  # a folder under a regular file: refused before any work
    return p


def _full_check(model: onnx.ModelProto) -> bool:
    """Whether a graph passes onnx's checker with shape inference (the input may not: then nor can its pruning)."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:  # noqa: BLE001 - onnx raises several kinds
        return False


def _checker(pruned: onnx.ModelProto, full: bool) -> None:
    """The pruned graph passes the checker at least as strictly as the original did."""
    try:
        onnx.checker.check_model(pruned, full_check=full)
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
    lat = (cost.latency(runtime.session(model, timed=True), runtime.session(pruned, timed=True), feed, reps=reps)
           if reps else {})
    report.cost = {"params": [cost.params(model), cost.params(pruned)], "macs": [cost.macs(model, sa),
                   cost.macs(pruned, sb)], "file_bytes": [cost.weight_bytes(model), cost.weight_bytes(pruned)],
                   "latency": lat}


def write(model: onnx.ModelProto, path: Path, external: bool, force: bool) -> None:
    """Write atomically (a temporary file and a rename); weights go to `NAME.data` when the input had external data.
    Neither file replaces an existing one without `force`."""
    path = Path(path)
    data_path = path.parent / (path.name + ".data")
    for target in (path, data_path) if external else (path,):
        if target.exists() and not force:
            raise OutputError(f"{target} exists", "choose another --out, or pass --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
            tmp_model = Path(tmp) / path.name
            if external:
                onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_path.name, size_threshold=1024)
                data = Path(tmp) / data_path.name
                if data.exists():
                    os.replace(data, data_path)
            else:
                onnx.save_model(model, str(tmp_model))
            os.replace(tmp_model, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable --out") from exc
