"""`vizcore check MODEL`: dead and constant units, duplicate filters, NaN/Inf weights and conversion fidelity,
judged against thresholds; a rich table, `--json`, `--junit`; exit 0 passed, 1 a threshold exceeded, 2 an error.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..files import atomic_write_text

if TYPE_CHECKING:  # vizcore.health imports torch: only inside run
    from ..health.config import CheckConfig

#: Command-line options that override config-file settings: dest -> CheckConfig field.
OVERRIDES = ("max_dead_fraction", "max_constant_fraction", "fail_on_duplicates", "duplicate_threshold", "max_shift",
             "max_fidelity_diff", "dead_threshold", "constant_tolerance", "ascent", "ascent_steps", "ascent_size",
             "size", "seed", "device", "images", "batch", "noise_probes")


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `check` and `diff`: the config file, thresholds, probes and the ascent."""
    p.add_argument("--config", metavar="FILE", help="read [tool.vizcore.check] from this TOML file instead of a "
                   "vizcore.toml / pyproject.toml next to the model")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="layers to check (names or indices; default: every "
                   "Conv output, after its activation)")
    p.add_argument("--images", metavar="DIR", help="a folder of your own images to use as probes")
    g = p.add_argument_group("thresholds (override the config file)")
    g.add_argument("--max-dead-fraction", type=float, metavar="F", help="fail if a layer has more dead units "
                   "(default 0.25)")
    g.add_argument("--max-constant-fraction", type=float, metavar="F", help="fail if a layer has more constant units "
                   "(default 0.25)")
    g.add_argument("--fail-on-duplicates", action=argparse.BooleanOptionalAction, default=None,
                   help="fail if a layer has duplicate filters (default: report only)")
    g.add_argument("--duplicate-threshold", type=float, metavar="S", help="cosine similarity above which two filters "
                   "are duplicates (default 0.95)")
    g.add_argument("--max-shift", type=int, metavar="PX", help="spatial shifts tried between filters (default 1)")
    g.add_argument("--max-fidelity-diff", type=float, metavar="D", help="fail if |torch - onnxruntime| exceeds this "
                   "(default 1e-3)")
    g.add_argument("--dead-threshold", type=float, metavar="R", help="a unit is dead if it never exceeds this "
                   "fraction of its layer's largest value (default 0.01)")
    g.add_argument("--constant-tolerance", type=float, metavar="R", help="a unit is constant if its output varies "
                   "by less than this fraction across inputs (default 1e-4)")
    a = p.add_argument_group("probes and gradient ascent")
    a.add_argument("--ascent", choices=("candidates", "all", "none"), help="which units get the gradient ascent: "
                   "those no probe drove (default), all, or none")
    a.add_argument("--ascent-steps", type=int, metavar="N", help="gradient ascent steps (default 24)")
    a.add_argument("--ascent-size", type=int, metavar="PX", help="image size of the ascent (default 32)")
    a.add_argument("--size", type=int, metavar="PX", help="probe image size (default: the model's, else 224)")
    a.add_argument("--batch", type=int, metavar="N", help="probe batch size (default 8)")
    a.add_argument("--noise-probes", type=int, metavar="N", help="number of noise probe images (default 12)")
    a.add_argument("--seed", type=int, help="seed of the noise probes and the ascent (default 0)")
    a.add_argument("--device", help="device of the gradient ascent: cpu (default), cuda, auto")
    a.add_argument("--no-fidelity", action="store_true", help="skip the comparison with onnxruntime")
    a.add_argument("--no-dead", action="store_true", help="skip dead / constant units (no probes, no ascent)")
    a.add_argument("--no-duplicates", action="store_true", help="skip the duplicate-filter search")


def add_output_options(p: argparse.ArgumentParser) -> None:
    """--json, --junit, --verbose, --quiet."""
    p.add_argument("--json", metavar="FILE", help="write the JSON report here ('-': print it instead of the table)")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report here (one test case per check per layer)")
    p.add_argument("--verbose", "-v", action="store_true", help="list channel indices and notes")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the verdict")


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


def config_from_args(args: argparse.Namespace, model_path: str | None) -> CheckConfig:
    """The config file's settings with the command-line options applied on top."""
    from ..health.config import load_config

    cfg = load_config(model_path, args.config)
    opts = {k: getattr(args, k, None) for k in OVERRIDES}
    if getattr(args, "layers", None):
        opts["layers"] = tuple(args.layers)
    for flag, name in (("no_fidelity", "fidelity"), ("no_dead", "dead"), ("no_duplicates", "duplicates")):
        if getattr(args, flag, False):
            opts[name] = False
    return cfg.with_options(**opts)


@contextlib.contextmanager
def progress_status(console: Console, quiet: bool) -> Iterator[Any]:
    """A spinner with the current stage on a terminal; a no-op callback otherwise."""
    if quiet or not console.is_terminal:
        yield None
        return
    with console.status("checking…") as status:
        yield lambda msg: status.update(escape(msg))


def write_reports(report: Any, args: argparse.Namespace, console: Console) -> None:
    """--json and --junit files (or JSON on stdout for `--json -`)."""
    if args.json == "-":
        print(report.dumps(), end="")
    elif args.json:
        atomic_write_text(Path(args.json), report.dumps())
    if args.junit:
        atomic_write_text(Path(args.junit), report.junit())


def verdict(console: Console, passed: bool, failures: list[Any], what: str) -> None:
    """The closing line: PASSED, or FAILED with each failure."""
    if passed:
        console.print(f"[bold green]PASSED[/] {escape(what)}")
        return
    console.print(f"[bold red]FAILED[/] {escape(what)}: {len(failures)} threshold(s) exceeded")
    for f in failures:
        console.print(f"  [red]✗[/] [dim]{escape(f.check)}:[/] {escape(f.message)}", highlight=False)


def _count(items: list[int], n: int, limit: float | None) -> str:
    if not items:
        return "[dim]0[/]"
    frac = len(items) / n if n else 0.0
    style = "red" if limit is not None and frac > limit else "yellow"
    return f"[{style}]{len(items)}[/] ({frac:.0%})"


def elide(name: str, width: int) -> str:
    """`name` shortened from the left to `width` characters (the end of a layer path is the telling part)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


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
    from ..inputs import require_readable

    require_readable(args.model)
    cfg = config_from_args(args, args.model)
    with progress_status(console, args.quiet or args.json == "-") as progress:
        report = check(args.model, cfg, progress=progress)
    write_reports(report, args, console)
    if args.json != "-":
        if not args.quiet:
            print_report(report, console, args.verbose)
        verdict(console, report.passed, report.failures, str(report.model.get("path")))
    return 0 if report.passed else 1
