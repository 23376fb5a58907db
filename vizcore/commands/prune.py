"""`vizcore prune MODEL --out SMALLER.onnx`: remove dead (and duplicate) channels, verified in onnxruntime.

Exit codes: 0 pruned and verified (or a dry run), 1 verification failed (nothing written), 2 usage or model error.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..files import refuse_inputs
from ._model_flags import add_model_flags, size_of
from ._options import progress_status


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("prune", help="remove dead / duplicate channels; write a smaller, verified ONNX model",
                       description="Remove channels that are zero on every probe (and, with --from-check, that "
                       "`vizcore check` called dead), optionally merge exact duplicates; verify the result against "
                       "the original in onnxruntime and write it only if every output agrees within --tolerance. "
                       "Exit 0: written (or dry run), 1: verification failed (nothing written), 2: error.")
    p.add_argument("model", help="path to an .onnx file (never modified)")
    p.add_argument("--out", metavar="FILE", help="where to write the pruned model")
    p.add_argument("--from-check", metavar="JSON", help="a `vizcore check --json` report: only what it called dead "
                   "(probes and gradient ascent) is removed")
    p.add_argument("--verify-data", metavar="DIR", help="held-out inputs used only to verify (never as evidence)")
    p.add_argument("--duplicates", choices=("keep", "merge"), default="keep",
                   help="merge channels that are exact copies of another channel of the same layer")
    p.add_argument("--tolerance", type=float, default=1e-5, help="largest allowed |difference| per output, "
                   "relative to the output's largest |value| (default 1e-5)")
    p.add_argument("--margin", type=float, default=2.0, help="a unit behind a ReLU-like gate is dead only if its "
                   "input stayed this many standard deviations below the threshold on the probes (default 2; 0: off)")
    p.add_argument("--dry-run", action="store_true", help="report what would be removed; write nothing")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", metavar="FILE", help="write the JSON report here ('-': print it instead of tables)")
    p.add_argument("--probes", type=int, default=16, help="seeded noise probes, besides the sample photos (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes and random inputs (default 0)")
    p.add_argument("--latency-reps", type=int, default=20, help="interleaved latency repetitions (0: skip)")
    p.add_argument("--verbose", "-v", action="store_true", help="list every removed and kept unit")
    g = p.add_argument_group("lossy pruning under a budget (without --budget: lossless only)")
    g.add_argument("--budget", metavar="METRIC=BOUND", help="agreement with the original on --data (the calibration "
                   "set) the result must keep: top1=0.99, rel=0.02, cos=0.995 or kl=0.01; add ,macs=0.75 to require "
                   "at most 75%% of the MACs. --verify-data (held-out) must meet it too, else nothing is written")
    g.add_argument("--recover", type=int, default=0, metavar="STEPS", help="distil the result towards the "
                   "original's outputs on --data for STEPS minibatches (no labels), then verify again")
    g.add_argument("--max-steps", type=int, default=60, help="candidate sets the search may measure (default 60)")
    g.add_argument("--max-time", type=float, default=None, metavar="SECONDS", help="time the search may take")
    g.add_argument("--reconstruct", choices=("final", "trial", "off"), default="final", help="re-fit the layers "
                   "that read pruned channels by least squares towards the original's outputs on --data: once after "
                   "the search, kept if it helps (final, the default; before --recover's gradient steps), in every "
                   "search trial (trial: slower, and on MobileNetV2 it fitted the calibration set, not the held-out "
                   "one), or not at all")
    g.add_argument("--ranking", choices=("sensitivity", "taylor"), default="taylor", help="the search's order: one "
                   "global first-order Taylor ranking (taylor, the default), or each channel group's measured cost "
                   "of losing 1, 2, 4, 8, ... units of its channels, cheapest per MAC first (sensitivity)")
    g.add_argument("--channel-multiple", type=int, default=8, metavar="N", help="channels leave each group in units "
                   "of N, so tensors keep channel counts that are multiples of N (fast kernels; default 8, 1: any)")
    g.add_argument("--recover-augment", action="store_true", help="distil on freshly augmented calibration inputs "
                   "(crops, flips, colour jitter, mixup) towards the original's outputs on them")
    g.add_argument("--recover-lr", type=float, default=1e-5, help="recovery learning rate (Adam, default 1e-5)")
    g.add_argument("--device", default="auto", help="recovery device: auto (CUDA if there is a GPU), cpu, cuda")
    g.add_argument("--plot", metavar="FILE.png", help="write the agreement vs MACs curve here")
    add_model_flags(p, "input size for free spatial dims: PX or H,W (default: the model's, else 224)",
                    "evidence and verification")
    return p


def options(args: argparse.Namespace) -> Any:
    """The prune options from the command line, validated once (one-line OptionError)."""
    from ..errors import OptionError
    from ..graph_inputs import read_feed
    from ..prune.options import PruneOptions

    if args.input_node or args.input_shape:
        flag = "--input-node" if args.input_node else "--input-shape"
        raise OptionError(f"prune keeps the graph's own inputs as they are: {flag} does not apply",
                          "leave it out; give other inputs' values with --feed NAME=FILE.npy")
    return PruneOptions(
        from_check=args.from_check, data=args.data, verify_data=args.verify_data, duplicates=args.duplicates,
        tolerance=args.tolerance, margin=args.margin, dry_run=args.dry_run, force=args.force, probes=args.probes,
        seed=args.seed, latency_reps=args.latency_reps, budget=args.budget, recover=args.recover,
        max_steps=args.max_steps, max_time=args.max_time, recover_lr=args.recover_lr, device=args.device,
        reconstruct=args.reconstruct, ranking=args.ranking, channel_multiple=args.channel_multiple,
        recover_augment=args.recover_augment,
        size=size_of(args), preprocess=args.preprocess,
        value_range=args.value_range, layout=args.layout, feeds=dict(read_feed(t) for t in args.feed))


def run(args: argparse.Namespace, console: Console) -> int:
    from ..errors import OptionError
    from ..files import atomic_write_bytes, atomic_write_text
    from ..prune import prune

    refuse_inputs({"--json": args.json, "--out": args.out}, [args.model, args.from_check, args.data,
                                                            args.verify_data])
    opts = options(args)
    if args.plot and opts.budget is None:
        raise OptionError("--plot draws the curve of a lossy prune", "add --budget, or leave --plot out")

    lossless_log = opts.budget is None and not console.is_terminal  # seconds of work: no lines in a log
    with progress_status(console, args.json == "-" or lossless_log, "prune") as progress:
        rep = prune(args.model, args.out, opts, progress=progress)
    if args.plot and rep.budget is not None:
        from ..prune.plot import curve_png

        atomic_write_bytes(Path(args.plot), curve_png(rep.to_json()))
    if args.json == "-":
        print(rep.dumps(), end="")
    else:
        if args.json:
            atomic_write_text(Path(args.json), rep.dumps())
        show(rep, console, args.verbose)
    return 0 if rep.verified else 1


def show(rep: Any, console: Console, verbose: bool = False) -> None:
    """The rich tables: what was removed, the verification, what it bought."""
    if rep.budget is not None:
        return show_budget(rep, console, verbose)
    c = rep.counts()
    console.print(f"[bold]{escape(rep.model)}[/]: {c['removed']} dead removed, {c['folded']} constant folded, "
                  f"{c['merged']} duplicates merged; {c['kept']} candidates kept ({c['inconclusive']} inconclusive)")
    reasons = Counter(re.sub(r"within [-\d.e+]+ std", "within less than the margin in std", k["reason"])
                      for k in rep.kept)
    for why, n in reasons.most_common(None if verbose else 5):
        console.print(f"  [dim]kept {n}: {escape(why)}[/]", highlight=False)
    for op, n in list(rep.frozen_ops.items())[: None if verbose else 5]:
        console.print(f"  [yellow]not understood[/] {escape(op)} ({n}): channels reaching it are kept",
                      highlight=False)
    if verbose:
        for r in rep.removed:
            into = f" into {escape(r['into'])}" if r.get("into") else ""
            console.print(f"  {r['action']} {escape(r['unit'])}{into}", highlight=False)
    for note in rep.notes:
        console.print(f"  [dim]note: {escape(note)}[/]", highlight=False)
    _verification(rep, console)
    if rep.cost:
        _costs(rep, console)
    if rep.culprit:
        cu = rep.culprit
        console.print(f"[bold red]FAILED[/] verification: max relative difference {rep.max_relative_diff:.3g} > "
                      f"{rep.tolerance:g}; culprit: {cu['action']} {escape(cu['unit'])} "
                      f"({'fails alone' if cu['fails_alone'] else 'only together with earlier removals'}); "
                      "nothing written")
    elif rep.written:
        console.print(f"[bold green]VERIFIED[/] wrote {escape(str(rep.out))}")
    elif rep.dry_run:
        console.print("[bold green]VERIFIED[/] dry run: nothing written")


def _verification(rep: Any, console: Console) -> None:
    t = Table(title="verification (original vs pruned, onnxruntime)", title_justify="left")
    for col in ("inputs", "samples", "output", "max |diff|", "relative", "top-1"):
        t.add_column(col, justify="left" if col in ("inputs", "output") else "right")
    for comp in rep.verification:
        for name, o in comp.outputs.items():
            bad = o["relative"] > rep.tolerance
            top = f"{o['top1_agreement']:.1%}" if "top1_agreement" in o else "-"
            t.add_row(escape(comp.inputs), str(comp.samples), escape(name), f"{o['max_abs_diff']:.3g}",
                      f"[{'red' if bad else 'green'}]{o['relative']:.3g}[/]", top)
    console.print(t)


def _costs(rep: Any, console: Console) -> None:
    t = Table(title="what it bought", title_justify="left")
    for col in ("layer", "op", "channels", "params", "MACs", "kernel ms"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for lay in rep.layers:
        lat = lay.get("latency_s") or [None, None]
        ms = " → ".join("-" if v is None else f"{v * 1e3:.3g}" for v in lat)
        t.add_row(escape(lay["layer"]), lay["op"], "{} → {}".format(*lay["channels"]),
                  "{:,} → {:,}".format(*lay["params"]), "{:,} → {:,}".format(*lay["macs"]), ms)
    co = rep.cost
    t.add_row("[bold]total[/]", "", "", _ratio(co["params"]), _ratio(co["macs"]), "")
    console.print(t)
    fb = co["file_bytes"]
    line = f"file size {fb[0]:,} → {fb[1]:,} bytes ({fb[1] / fb[0]:.1%})"
    lat = co.get("latency") or {}
    if lat:
        line += (f"; onnxruntime latency (batch 1, median of {lat['reps']} interleaved) {lat['before_s'] * 1e3:.3g} → "
                 f"{lat['after_s'] * 1e3:.3g} ms (×{lat['ratio']:.2f})")
    console.print(line)


def _ratio(pair: list[int]) -> str:
    a, b = pair
    return f"{a:,} → {b:,} ({b / a:.1%})" if a else "0"


def _metric(values: dict | None, key: str) -> str:
    return "-" if not values or key not in values else f"{values[key]:.4g}"


def show_budget(rep: Any, console: Console, verbose: bool = False) -> None:
    """A lossy prune: the accepted steps, what it bought, the budget's verdict."""
    b = rep.budget
    key = b["metric"]
    macs0 = rep.cost["macs"][0] if rep.cost else None
    t = Table(title=f"accepted steps (budget {key}={b['bound']:g}; importance: {rep.evidence.get('importance')})",
              title_justify="left")
    for col in ("step", "removed", "MACs left", f"{key} calibration", f"{key} held-out", "latency"):
        t.add_column(col, justify="right" if col != "removed" else "left")
    for st in rep.steps:
        what = ", ".join(sorted({u["kind"] for u in st["units"]}))
        if verbose or len(st["units"]) == 1:
            what += ": " + "; ".join(u["unit"] for u in st["units"][: None if verbose else 1])
        else:
            what = f"{len(st['units'])} {what}"
        lat = st.get("latency") or {}
        t.add_row(str(st["step"]), escape(what), f"{st['macs'] / macs0:.1%}" if macs0 else "-",
                  _metric(st["calibration"], key), _metric(st.get("held_out"), key),
                  f"×{lat['ratio']:.2f}" if lat else "-")
    console.print(t)
    if rep.recovery:
        r = rep.recovery
        console.print(f"recovery: {r['steps']} steps on {r['device']} in {r['seconds']:.0f} s, loss "
                      f"{r['loss_first']:.4g} → {r['loss_last']:.4g}; calibration {key} "
                      f"{_metric(r['calibration_before'], key)} → "
                      f"{_metric(r['calibration_after'], key)} ({'kept' if r['kept'] else 'not better: dropped'})")
    for op, n in list(rep.frozen_ops.items())[: None if verbose else 5]:
        console.print(f"  [yellow]not understood[/] {escape(op)} ({n}): channels reaching it are kept",
                      highlight=False)
    for note in rep.notes:
        console.print(f"  [dim]note: {escape(note)}[/]", highlight=False)
    if rep.cost:
        _costs(rep, console)
    held = _metric(b.get("held_out"), key)
    line = (f"{key} calibration {_metric(b['calibration'], key)}, held-out {held}; MACs {b['macs_fraction']:.1%} of "
            f"the original; search stopped: {escape(b['stopped'] or '-')}")
    if rep.verified:
        done = f"wrote {escape(str(rep.out))}" if rep.written else "nothing written (dry run)"
        console.print(f"[bold green]BUDGET MET[/] {line}; {done}")
    else:
        missed = ", ".join(f"{k} by {v:.4g}" for k, v in b["missed_by"].items() if v)
        if rep.interface and not rep.interface["identical"]:
            missed = (missed + ", " if missed else "") + "the interface changed"
        console.print(f"[bold red]BUDGET MISSED[/] ({missed}) {line}; nothing written")

