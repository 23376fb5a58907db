"""What `vizcore check` and `vizcore diff` share: the threshold/probe/output flags, the config they build, the
progress callback, the report writers, the closing verdict and name folding for tables."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..files import atomic_write_text
from ..health.config import CheckConfig, load_config
from ._progress import PlainLines

#: Command-line options that override config-file settings: dest -> CheckConfig field.
OVERRIDES = ("max_dead_fraction", "max_constant_fraction", "fail_on_duplicates", "duplicate_threshold", "max_shift",
             "max_fidelity_diff", "dead_threshold", "constant_tolerance", "ascent", "ascent_steps", "ascent_size",
             "size", "seed", "device", "images", "data", "batch", "noise_probes", "fail_on_inconclusive",
             "preprocess", "value_range", "allow_empty")


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `check` and `diff`: the config file, thresholds, probes and the ascent."""
    p.add_argument("--config", metavar="FILE", help="read [tool.vizcore.check] from this TOML file instead of a "
                   "vizcore.toml / pyproject.toml next to the model")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="layers to check (names or indices; default: every "
                   "Conv output, after its activation; without convolutions, every dense layer an activation follows)")
    p.add_argument("--images", metavar="DIR", help="a folder of your own images to use as probes")
    g = p.add_argument_group("thresholds (override the config file)")
    g.add_argument("--max-dead-fraction", type=float, metavar="F", help="fail if a layer has more dead units "
                   "(default 0.25)")
    g.add_argument("--max-constant-fraction", type=float, metavar="F", help="fail if a layer has more constant units "
                   "(default 0.25)")
    g.add_argument("--fail-on-duplicates", action=argparse.BooleanOptionalAction, default=None,
                   help="fail if a layer has duplicate filters (default: report only)")
    g.add_argument("--fail-on-inconclusive", action=argparse.BooleanOptionalAction, default=None,
                   help="fail if a gated unit stays closed and the ascent ran out of steps (default: report only)")
    g.add_argument("--allow-empty", action="store_true", default=None,
                   help="pass when no layer could be checked at all (default: that fails the check)")
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


def config_from_args(args: argparse.Namespace, model_path: str | None) -> CheckConfig:
    """The config file's settings with the command-line options applied on top."""
    cfg = load_config(model_path, args.config)
    opts = {k: getattr(args, k, None) for k in OVERRIDES}
    if getattr(args, "layers", None):
        opts["layers"] = tuple(args.layers)
    for flag, name in (("no_fidelity", "fidelity"), ("no_dead", "dead"), ("no_duplicates", "duplicates")):
        if getattr(args, flag, False):
            opts[name] = False
    return cfg.with_options(**opts)


@contextlib.contextmanager
def progress_status(console: Console, quiet: bool, command: str = "check") -> Iterator[Any]:
    """A spinner with the current stage on a terminal; plain `COMMAND: stage, 12 s, ETA 30 s` lines on stderr
    every few seconds without one (`_progress.PlainLines`); None when `quiet`."""
    if quiet:
        yield None
        return
    if not console.is_terminal:
        yield PlainLines(command)
        return
    with console.status(f"{command}…") as status:
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


def elide(name: str, width: int) -> str:
    """`name` shortened to `width` characters by cutting its middle: the start (which block) and the end (which
    node) both stay, so shortened names stay distinguishable. Tables fold whole names instead; use this only where
    one line is a must."""
    if len(name) <= width:
        return name
    head = max(1, (width - 1) // 3)
    return name[:head] + "…" + name[-(width - 1 - head):]
