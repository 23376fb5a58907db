"""`vizcore check MODEL`: dead and constant units, duplicate filters, NaN/Inf weights and conversion fidelity,
judged against thresholds; a rich table, `--json`, `--junit`; exit 0 passed, 1 a threshold exceeded, 2 an error.
"""

from __future__ import annotations

import argparse
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
    p = sub.add_parser("check", help="health checks for CI: dead units, duplicate filters, NaN weights, fidelity",
                       description="Check a model for dead and constant units, duplicate filters, NaN/Inf weights and "
                       "conversion fidelity. Exit code 0: passed, 1: a threshold was exceeded, 2: usage or model "
                       "error. Thresholds come from options, else [tool.vizcore.check] in a vizcore.toml or "
                       "pyproject.toml next to the model.")
    p.add_argument("model", help="path to an .onnx file")
    add_threshold_options(p)
    add_output_options(p)
    add_model_flags(p, None, "probes the verdicts also rest on (they say so)")
    return p


def _count(items: list[int], n: int, limit: float | None) -> str:
    if not items:
        return "[dim]0[/]"
    frac = len(items) / n if n else 0.0
    style = "red" if limit is not None and frac > limit else "yellow"
    return f"[{style}]{len(items)}[/] ({frac:.0%})"


def _indices(items: list[int], n: int = 32) -> str:
    return ", ".join(map(str, items[:n])) + (f", … ({len(items)} in all)" if len(items) > n else "")


def _print_head(report: Any, console: Console) -> None:
    """Model path, fidelity and weights."""
    m = report.model
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]model[/]", escape(str(m.get("path"))))
    fid = report.fidelity
    if fid.get("available") and fid.get("error"):
        head.add_row("fidelity", f"[red]{escape(str(fid['error']))}[/]")
    elif fid.get("available"):
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


def _apoz(lay: Any) -> str:
    vals = [u["apoz"] for u in lay.units if isinstance(u.get("apoz"), (int, float))]
    return f"{sum(vals) / len(vals):.0%}" if vals else "[dim]-[/]"


def _row(lay: Any, failed: set[tuple[str, str | None]], judged: bool) -> list[str]:
    """One table row; the layer name is folded onto more lines rather than cut, so it stays whole and copyable."""
    lim = lay.limits
    no_dups = not lay.duplicates and any(n.startswith("duplicates:") for n in lay.notes)
    dups = "[dim]-[/]" if no_dups else "[dim]0[/]" if not lay.duplicates else f"[yellow]{len(lay.duplicates)}[/]"
    ok = not any((c, lay.name) in failed for c in ("dead", "constant", "duplicates", "nonfinite-activations",
                                                    "inconclusive"))
    status = "[yellow]skip[/]" if lay.skipped else "[green]ok[/]" if ok else "[bold red]FAIL[/]"
    dash = "[dim]-[/]"
    return [str(lay.index) if lay.index is not None else "", escape(lay.name), escape(lay.op),
            escape(lay.gate or "linear"), str(lay.channels),
            _count(lay.dead, lay.channels, lim.max_dead_fraction if lim else None) if judged else dash,
            (f"[yellow]{len(lay.inconclusive)}[/]" if lay.inconclusive else "[dim]0[/]") if judged else dash,
            _apoz(lay) if judged else dash,
            _count(lay.constant, lay.channels, lim.max_constant_fraction if lim else None) if judged else dash,
            dups, status]


#: Narrower than this, the layer names leave the table for a numbered list under it (whole and copyable).
WIDE_TABLE = 120


def _print_table(report: Any, console: Console) -> None:
    failed = {(f.check, f.layer) for f in report.failures}
    wide = console.width >= WIDE_TABLE
    table = Table(title=f"{len(report.layers)} layers checked", title_justify="left")
    for col, j in (("#", "right"), ("layer", "left"), ("op", "left"), ("gate", "left"), ("ch", "right"),
                   ("dead", "right"), ("incon.", "right"), ("APoZ", "right"), ("const", "right"),
                   ("dup pairs", "right")):
        if col == "layer" and not wide:
            continue
        folds = col == "layer"  # names wrap, whole; the row number (the key to the list below) is never cut
        widths = {"layer": min(24, max((len(lay.name) for lay in report.layers), default=8)),
                  "#": max((len(str(lay.index)) for lay in report.layers), default=1)}
        table.add_column(col, justify=j, no_wrap=not folds, overflow="fold" if folds else "ellipsis",
                         min_width=widths.get(col))
    table.add_column("", no_wrap=True, min_width=4)
    judged = report.config is None or report.config.dead
    for lay in report.layers:
        row = _row(lay, failed, judged)
        table.add_row(*(row if wide else row[:1] + row[2:]))
    console.print(table)
    if not wide:  # a narrow terminal or a CI log: every name in full, by the row's number
        for lay in report.layers:
            console.print(f"  {lay.index if lay.index is not None else '':>4}  {escape(lay.name)}", highlight=False,
                          soft_wrap=True)
    skipped = sum(1 for lay in report.layers if not lay.duplicates and any(n.startswith("duplicates:")
                                                                          for n in lay.notes))
    if skipped:
        console.print(f"[dim]dup -: {skipped} layers without comparable filters (depthwise, or no weights)[/]")
    console.print("[dim]dead: gated units closed on every probe that the ascent could not open; incon.: closed, "
                  "the ascent ran out of steps; APoZ: mean fraction of outputs <= 0; dup pairs: (filter, copy) "
                  "pairs[/]")


def _print_details(report: Any, console: Console) -> None:
    """--verbose: channel indices, duplicate groups and notes per layer."""
    from ..health.results import duplicate_groups

    for lay in report.layers:
        lines = [f"{what}: {_indices(items)}" for what, items in
                 (("dead", lay.dead), ("inconclusive", lay.inconclusive), ("dead on your data", lay.dead_on_data),
                  ("zero weights", lay.zero_weights), ("constant", lay.constant)) if items]
        for g in duplicate_groups(lay.duplicates)[:12]:
            lines.append(f"filter {g['filter']} has copies: " + ", ".join(
                f"{c['filter']} = {c['transform']}({c['of']}) {c['similarity']:.3f}" for c in g["copies"]))
        if lay.skipped:
            lines.append(f"skipped: {lay.skipped}")
        lines += [n for n in lay.notes if not n.startswith("duplicates:")]
        if lines:
            console.print(f"[bold]{escape(lay.name)}[/] [dim]({escape(', '.join(lay.nodes))}; weight "
                          f"{escape(str(lay.weight))})[/]", highlight=False)
            for line in lines:
                console.print(f"  {escape(line)}", highlight=False)
    for n in report.notes:
        console.print(f"[dim]note: {escape(n)}[/]", highlight=False)


def print_report(report: Any, console: Console, verbose: bool = False) -> None:
    """The rich summary: model facts, one row per layer, then (verbose) indices, copies and notes."""
    _print_head(report, console)
    _print_table(report, console)
    if verbose:
        _print_details(report, console)
    else:
        for n in report.notes:
            if any(w in n for w in ("unavailable", "not installed", "skipped", "failed", "no layers to check")):
                console.print(f"[yellow]note:[/] {escape(n)}", highlight=False)
    from ..result import rose_line

    for lay in report.layers:  # --ascent all: the article's number, last
        if lay.rose_above:
            console.print(escape(rose_line(lay.rose_above)), highlight=False)
    if report.timings:
        console.print("[dim]time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()) + "[/]")


def run(args: argparse.Namespace, console: Console) -> int:
    from ..health import check

    refuse_inputs({"--json": args.json, "--junit": args.junit}, [args.model, args.config])
    cfg = config_from_args(args, args.model)
    model = model_or_path(args, args.model, cfg.size)  # with input flags: the model loaded that way
    with progress_status(console, args.quiet or args.json == "-") as progress:
        report = check(model, cfg, progress=progress, plugins=args.plugins)
    write_reports(report, args, console)
    if args.json != "-":
        if not args.quiet:
            print_report(report, console, args.verbose)
        if report.nothing_checked and report.passed:
            console.print(f"[yellow]nothing was checked (--allow-empty):[/] {escape(report.nothing_checked)}",
                          highlight=False)
        verdict(console, report.passed, report.failures, str(report.model.get("path")))
    return 0 if report.passed else 1
