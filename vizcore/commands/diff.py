"""`vizcore diff OLD NEW`: what changed between two exports of a model (dead and constant units, duplicate filters,
fidelity, layers added/removed), failing on regressions; OLD/NEW are .onnx models or `vizcore check --json` files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..files import refuse_inputs
from ._model_flags import add_model_flags, model_or_path
from ._options import (
    add_output_options,
    add_threshold_options,
    config_from_args,
    progress_status,
    verdict,
    write_reports,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("diff", help="compare two exports of a model and fail on health regressions",
                       description="Check two models (or compare two `vizcore check --json` reports) and report, per "
                       "layer present in both, the change in dead and constant units and duplicate filters, layers "
                       "added or removed, and fidelity. Exit code 0: no regression over the thresholds, 1: a "
                       "regression, 2: usage or model error.")
    p.add_argument("old", help="the old model (.onnx) or its check report (.json)")
    p.add_argument("new", help="the new model (.onnx) or its check report (.json)")
    g = p.add_argument_group("regression thresholds")
    g.add_argument("--max-dead-increase", type=float, metavar="F", help="fail if a layer's dead fraction rises by "
                   "more than this (default 0.02)")
    g.add_argument("--max-constant-increase", type=float, metavar="F", help="fail if a layer's constant fraction rises "
                   "by more than this (default 0.02)")
    g.add_argument("--fail-on-new-duplicates", action=argparse.BooleanOptionalAction, default=None,
                   help="fail if a layer has duplicate filter pairs it did not have (default: report only)")
    g.add_argument("--max-fidelity-increase", type=float, metavar="D", help="fail if |torch - onnxruntime| rises by "
                   "more than this (default 1e-3)")
    add_threshold_options(p)
    add_output_options(p)
    add_model_flags(p, None, "probes the verdicts also rest on (they say so)")
    return p


def _side(args: argparse.Namespace, path: str, cfg: Any, progress: Any, label: str) -> Any:
    from ..health import check, read_report

    if Path(path).suffix.lower() == ".json":
        return read_report(path)
    return check(model_or_path(args, path, cfg.size), cfg, plugins=args.plugins,
                 progress=(lambda m: progress(f"{label}: {m}")) if progress else None)


def print_diff(diff: Any, console: Console, verbose: bool = False) -> None:
    """A table of the layers that changed (all with --verbose), layers added/removed, fidelity."""
    f = diff.fidelity
    if f.get("change") is not None:
        console.print(f"fidelity  max |torch - onnxruntime|: {f['old']:.2e} -> {f['new']:.2e}")
    changed = [d for d in diff.layers if verbose or d.new.dead != d.old.dead or d.new.constant != d.old.constant
               or d.new_duplicates() or d.gone_duplicates() or not d.same_channels]
    failed = {(x.check, x.layer) for x in diff.failures}
    table = Table(title=f"{len(changed)} of {len(diff.layers)} common layers changed" if not verbose else
                  f"{len(diff.layers)} common layers", title_justify="left")
    for col, j in (("layer", "left"), ("ch", "right"), ("dead", "right"), ("const", "right"), ("dup pairs", "right"),
                   ("", "left")):
        table.add_column(col, justify=j, no_wrap=col != "layer", overflow="fold")  # names whole, folded
    for d in changed:
        ok = not any((c, d.name) in failed for c in ("dead", "constant", "duplicates"))
        ch = str(d.new.channels) if d.same_channels else f"{d.old.channels}→{d.new.channels}"
        table.add_row(escape(d.name), ch,
                      f"{len(d.old.dead)}→{len(d.new.dead)} ({d.dead_change:+.0%})",
                      f"{len(d.old.constant)}→{len(d.new.constant)}",
                      f"{len(d.old.duplicates)}→{len(d.new.duplicates)}", "[green]ok[/]" if ok else "[bold red]FAIL[/]")
    if changed:
        console.print(table)
    for what, names in (("added", diff.added), ("removed", diff.removed)):
        if names:
            console.print(f"layers {what}: " + escape(", ".join(names[:12]) + (" …" if len(names) > 12 else "")),
                          highlight=False)


def run(args: argparse.Namespace, console: Console) -> int:
    from ..health.diff import compare

    refuse_inputs({"--json": args.json, "--junit": args.junit}, [args.old, args.new, args.config])
    new_model = args.new if Path(args.new).suffix.lower() != ".json" else None
    cfg = config_from_args(args, new_model)
    cfg = cfg.with_options(max_dead_increase=args.max_dead_increase, max_constant_increase=args.max_constant_increase,
                           fail_on_new_duplicates=args.fail_on_new_duplicates,
                           max_fidelity_increase=args.max_fidelity_increase)
    t0 = time.perf_counter()
    with progress_status(console, args.quiet or args.json == "-", "diff") as progress:
        old = _side(args, args.old, cfg, progress, "old")
        new = _side(args, args.new, cfg, progress, "new")
    diff = compare(old, new, cfg)
    diff.timings["total"] = time.perf_counter() - t0
    write_reports(diff, args, console)
    if args.json != "-":
        if not args.quiet:
            print_diff(diff, console, args.verbose)
        verdict(console, diff.passed, diff.failures, f"{args.old} -> {args.new}")
    return 0 if diff.passed else 1
