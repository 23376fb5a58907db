"""`prune(model_path, out, ...)`: find, remove, verify, measure, write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import onnxfile
from ..errors import OptionError
from ..samples import refuse_probe_memory
from . import cost, runtime, surgery, verify
from .channels import analyze
from .evidence import CheckVerdicts, Evidence, gather_evidence, verdicts
from .graph import Graph
from .inputs import Feeder, feeder
from .options import PruneOptions
from .plan import Plan, decide
from .report import PruneReport
from .writer import check_out, checker, full_check, write


def _input_sets(feed: Feeder, o: PruneOptions) -> tuple[dict, dict, dict[str, int]]:
    """Evidence sets (probes, --data) and verification-only sets (--verify-data, fresh random at batch 1 and 3),
    every one made by the same `Feeder` (one input space, one layout); and the probes' count per source."""
    refuse_probe_memory(feed.natural, o.probes, o.batch, flag="--probes")
    probes, sources = feed.probes(o.probes, o.seed)
    ev = {"probes": feed.feed(probes, o.seed)}
    if o.data is not None:
        ev["data"] = feed.feed(feed.data(o.data, "--data"), o.seed + 1)
    ver = {}
    if o.verify_data is not None:
        ver["verify-data"] = feed.feed(feed.data(o.verify_data, "--verify-data"), o.seed + 2)
    ver["random"] = feed.feed(feed.probes(3, o.seed + 3, photos=False)[0][:3], o.seed + 3)
    return ev, ver, sources


def _verify(model, pruned, sets: dict, batches: tuple[int, ...]) -> list[verify.Comparison]:
    sa, sb = runtime.session(model), runtime.session(pruned)
    out = []
    for name, feed in sets.items():
        for b in batches:
            n = len(next(iter(feed.values())))
            sub = runtime.head(feed, max(b, min(n, 3 * b))) if name == "random" else feed
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

    With `budget` (e.g. "top1=0.99", see `vizcore.prune.budget`) the prune is lossy: channel classes, near copies,
    residual branches and shape-preserving runs go while the agreement with the original on `data` (the
    calibration set) stays within the budget; `recover=STEPS` distils the result; `verify_data` (held-out, read
    only after the search) must meet the budget too, else nothing is written (see `vizcore.prune.compress`).
    """
    o = (options or PruneOptions()).replace(**overrides)
    say = progress or (lambda msg: None)
    out_path = check_out(model_path, out, o.force, o.dry_run)
    say("loading")
    file = onnxfile.read(model_path)
    if o.budget is not None:
        from .compress import compress

        return compress(model_path, out_path, file, o, say)
    model, external = file.proto, file.external
    check = _read_check(o.from_check, file.sha256) if o.from_check else None
    feed = feeder(model, size=o.size, preprocess=o.preprocess, value_range=o.value_range, layout=o.layout,
                  feeds=o.feeds)
    ev_sets, ver_sets, probe_sources = _input_sets(feed, o)
    fixed = feed.fixed_batch
    batches = (fixed,) if fixed else (1, 3)
    say("tracing channels")
    one = runtime.head(ev_sets["probes"], fixed or 1)
    values: dict = {}
    shapes = runtime.shapes(model, one, values)  # onnxruntime's refusal is a one-line error (onnxfile)
    ch = analyze(Graph(model), shapes, values)
    say("gathering evidence")
    ev = gather_evidence(model, ch, ev_sets, check, fixed or o.batch)
    plan = decide(ch, Graph(model), ev, duplicates=o.duplicates == "merge", margin=o.margin)
    report = _report(model_path, out_path, ch, plan, ev, o.tolerance, o.dry_run)
    report.evidence.update(probe_sources=probe_sources, input_space=feed.space.to_json())
    report.notes.extend([*feed.notes, *(f"input space: {w}" for w in feed.space.warnings)])
    say("pruning and verifying")
    pruned = surgery.apply(model, ch, plan, ev)
    checker(pruned, full_check(model))
    report.verification = _verify(model, pruned, {**ev_sets, **ver_sets}, batches)
    if not report.verified:
        say("bisecting")
        report.culprit = _culprit(model, ch, plan, ev, {**ev_sets, **ver_sets}, batches, o.tolerance)
        return report
    say("measuring")
    report.layers, report.cost = cost.compare(model, pruned, one, o.latency_reps)
    if out_path is not None and not o.dry_run:
        write(pruned, out_path, external, o.force)
        report.written = True
    return report


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
