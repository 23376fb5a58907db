"""`vizcore check MODEL`: dead and constant units, duplicate filters, NaN/Inf weights and conversion fidelity,
judged against thresholds; a rich table, `--json`, `--junit`; exit 0 passed, 1 a threshold exceeded, 2 an error.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._options import (
    add_output_options,
    add_threshold_options,
    config_from_args,
    elide,
    progress_status,
    verdict,
    write_reports,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="health checks for CI: dead units, duplicate filters, NaN weights, fidelity",
                       description="Check a model for dead and constant units, duplicate filters, NaN/Inf weights and "
                       "conversion fidelity. Exit code 0: passed, 1: a threshold was exceeded, 2: usage or model "
                       "error. Thresholds come from options, else [tool.vizcore.check] in a vizcore.toml or "
                       "pyproject.toml next to the model.")
    p.add_argument("model", help="path to an .onnx file")
    add_threshold_options(p)
    add_output_options(p)
    return p


def _count(items: list[int], n: int, limit: float | None) -> str:
    if not items:
        return "[dim]0[/]"
    frac = len(items) / n if n else 0.0
    style = "red" if limit is not None and frac > limit else "yellow"
    return f"[{style}]{len(items)}[/] ({frac:.0%})"


def _indices(items: list[int], n: int = 32) -> str:
    return ", ".join(map(str, items[:n])) + (f", … ({len(items)} in all)" if len(items) > n else "")


def print_report(report: Any, console: Console, verbose: bool = False) -> None:
    """The rich summary: model facts, one row per layer, then (verbose) indices, pairs and notes."""
    m = report.model
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]model[/]", escape(str(m.get("path"))))
    fid = report.fidelity
    if fid.get("available"):
        d = fid["max_abs_diff"]
        ok = isinstance(d, (int, float)) and d <= fid.get("limit", float("inf"))
        shown = f"{d:.2e}" if isinstance(d, (int, float)) else escape(str(d))
        head.add_row("fidelity", f"[{'green' if ok else 'red'}]max |torch - onnxruntime| = {shown}[/]"
                     f" (limit {fid.get('limit', float('nan')):g})")
    else:
        head.add_row("fidelity", f"[yellow]not measured: {escape(str(fid.get('reason')))}[/]")
    bad = m.get("nonfinite_weights") or []
    head.add_row("weights", "[green]all finite[/]" if not bad else
                 f"[red]{len(bad)} tensors with NaN/Inf[/]: " + escape(", ".join(f"{b['layer']}.{b['tensor']}"
                                                                                for b in bad[:5])))
    console.print(head)
    failed = {(f.check, f.layer) for f in report.failures}
    table = Table(title=f"{len(report.layers)} layers checked", title_justify="left")
    for col, j in (("#", "right"), ("layer", "left"), ("op", "left"), ("ch", "right"), ("dead", "right"),
                   ("const", "right"), ("dup", "right")):
        table.add_column(col, justify=j, no_wrap=True, overflow="ellipsis")
    table.add_column("", no_wrap=True, min_width=4)
    width = max(16, console.width - 74)
    judged = report.config is None or report.config.dead
    skipped_dups = 0
    for lay in report.layers:
        lim = lay.limits
        no_dups = not lay.duplicates and any(n.startswith("duplicates:") for n in lay.notes)
        skipped_dups += no_dups
        dups = "[dim]-[/]" if no_dups else "[dim]0[/]" if not lay.duplicates else f"[yellow]{len(lay.duplicates)}[/]"
        ok = not any((c, lay.name) in failed for c in ("dead", "constant", "duplicates", "nonfinite-activations"))
        table.add_row(str(lay.index) if lay.index is not None else "", escape(elide(lay.name, width)), escape(lay.op),
                      str(lay.channels),
                      _count(lay.dead, lay.channels, lim.max_dead_fraction if lim else None) if judged else "[dim]-[/]",
                      _count(lay.constant, lay.channels, lim.max_constant_fraction if lim else None) if judged
                      else "[dim]-[/]",
                      dups, "[green]ok[/]" if ok else "[bold red]FAIL[/]")
    console.print(table)
    if skipped_dups:
        console.print(f"[dim]dup -: {skipped_dups} layers without comparable filters (depthwise, or no weights)[/]")
    if verbose:
        for lay in report.layers:
            lines = []
            if lay.dead:
                lines.append(f"dead: {_indices(lay.dead)}")
            if lay.constant:
                lines.append(f"constant: {_indices(lay.constant)}")
            if lay.duplicates:
                lines.append("duplicates: " + "; ".join(f"{j} = {t}({i}) {s:.3f}" for i, j, t, s in
                                                        lay.duplicates[:12]) +
                             (f"; … ({len(lay.duplicates)} pairs)" if len(lay.duplicates) > 12 else ""))
            lines += [n for n in lay.notes if not n.startswith("duplicates:")]
            if lines:
                console.print(f"[bold]{escape(lay.name)}[/]", highlight=False)
                for line in lines:
                    console.print(f"  {escape(line)}", highlight=False)
        for n in report.notes:
            console.print(f"[dim]note: {escape(n)}[/]", highlight=False)
    else:
        for n in report.notes:
            if "unavailable" in n or "not installed" in n or "skipped" in n:
                console.print(f"[yellow]note:[/] {escape(n)}", highlight=False)
    if report.timings:
        console.print("[dim]time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()) + "[/]")


def run(args: argparse.Namespace, console: Console) -> int:
    from ..health import check

    cfg = config_from_args(args, args.model)
    with progress_status(console, args.quiet or args.json == "-") as progress:
        report = check(args.model, cfg, progress=progress)
    write_reports(report, args, console)
    if args.json != "-":
        if not args.quiet:
            print_report(report, console, args.verbose)
        verdict(console, report.passed, report.failures, str(report.model.get("path")))
    return 0 if report.passed else 1
