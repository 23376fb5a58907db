"""`vizcore render MODEL TARGET... --out DIR`: feature visualizations as PNGs, a grid and a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..files import check_out_dir
from ..inputs import require_readable


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("render", help="render what units of a model want to see",
                       description="Gradient ascent on the input: one image per target unit. Targets: LAYER:CH, "
                                   "LAYER:CH@X,Y, LAYER:A-B, LAYER:all, LAYER (DeepDream), class:IDX, OUTPUT:IDX. "
                                   "LAYER is a name or index from `vizcore inspect`.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="what to maximize, e.g. 40:7 or class:1")
    p.add_argument("--out", "-o", type=Path, default=None, help="output folder (default: vizcore-out)")
    p.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: model's, else 224)")
    p.add_argument("--param", default="fft", help="parameterization: fft (default), pixel, or a plugin's")
    p.add_argument("--transforms", default="standard",
                   help="transform preset or comma list: standard (default), none, pad, jitter, scale, rotate, blur")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--l1", type=float, default=0.0, help="L1 penalty weight")
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty weight")
    p.add_argument("--tv", type=float, default=0.0, help="total-variation penalty weight")
    p.add_argument("--seed", type=int, default=0, help="random seed (CPU renders are reproducible)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--max-memory", default=None, help="memory budget for a chunk of units, e.g. 2G")
    p.add_argument("--relu-override", type=float, default=0.25,
                   help="fraction of steps using the ReLU gradient override (default 0.25)")
    p.add_argument("--preprocess", default=None, help="imagenet | none | mean=A,B,C;std=D,E,F (default: metadata)")
    p.add_argument("--range", dest="value_range", default=None, help="model input range: 0,1 | 0,255 | -1,1")
    p.add_argument("--images-per-unit", type=int, default=1, help="images per target (e.g. with diversity)")
    p.add_argument("--export", action="append", default=None, metavar="NAME",
                   help="exporter(s) to run (default: png and manifest); plugins add more, e.g. gif")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--executor", default="local", metavar="local|ray|ray://HOST:PORT",
                   help="where chunks run: this process (default) or a Ray cluster (same images)")
    return p


class _Progress:
    """The render's `on_step`: drives a rich progress bar (this render only, not a global plugin)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.every = 4

    def __call__(self, run: Any, state: Any) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("render", total=run.steps * run.n_chunks,
                                               units=f"0/{run.total_units}", value="")
        if state.step == 1:  # a new chunk (after an out-of-memory retry there are more, smaller ones)
            self.progress.update(self.task, total=run.steps * run.n_chunks,
                                 units=f"{run.unit_offset + len(run.units)}/{run.total_units}")
        done = run.chunk * run.steps + state.step
        if state.step % self.every == 0 or state.step == run.steps:
            v = state.values
            self.progress.update(self.task, completed=done, value=f"mean value {float(v.float().mean()):.3g}")


def _renderer(args: argparse.Namespace, err: Console, render: Any) -> Any:
    """`render` for local; else vizcore.executors.render on that executor, with a bar over all units."""
    if args.executor == "local":
        return render
    import functools

    from ..executors import render as render_on
    from ..executors import resolve_executor
    from ..executors.progress import UnitBar

    return functools.partial(render_on, executor=resolve_executor(args.executor,
                                                                  progress=UnitBar(err, disable=args.quiet)))


def run(args: argparse.Namespace, console: Console) -> int:
    from ..api import load, render

    require_readable(args.model)  # before anything else: a missing model is reported first
    pm = args.plugins
    exporters = args.export or ["png", "manifest"]
    for name in exporters:
        pm.get("exporters", name)
    out = check_out_dir(args.out or Path("vizcore-out"), force=args.force)  # refused early; created only to save
    model = load(args.model, size=args.size, plugins=pm)  # layer shapes (and neuron positions) at the render size
    err = Console(stderr=True)

    def warn(msg: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False)

    progress = Progress(TextColumn("[bold]{task.fields[units]}[/] units"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("steps"), TimeRemainingColumn(), TextColumn("{task.fields[value]}"),
                        console=err, disable=args.quiet, transient=False)
    bar = None if args.quiet else _Progress(progress)
    try:
        render_with = _renderer(args, err, render)  # vizcore.executors when --executor is not local
        result = render_with(model, args.targets, plugins=pm, exporters=exporters, steps=args.steps, size=args.size,
                        param=args.param,
                        transforms=args.transforms, l1=args.l1, l2=args.l2, tv=args.tv, lr=args.lr,
                        seed=args.seed, device=args.device, amp=args.amp, max_memory=args.max_memory,
                        relu_override=args.relu_override, preprocess=args.preprocess,
                        value_range=args.value_range, images_per_unit=args.images_per_unit, on_warning=warn,
                        on_step=bar if args.executor == "local" else None)
    finally:
        if bar is not None and bar.task is not None:  # started at the first step: a bad target prints no bar
            progress.stop()
    written = result.save(out, exporters=exporters, force=True)
    shown = min(len(result), 12)
    for i in range(shown):
        u = result.units[i]
        console.print(f"  {escape(u.target):<28} value {result.values[i]:>9.4g}  -> {escape(result.filename(i))}",
                      highlight=False)
    if len(result) > shown:
        console.print(f"  ... and {len(result) - shown} more")
    console.print(f"[green]wrote[/] {len(written)} files to {escape(str(out))} "
                  f"({result.timings['seconds']:.1f} s on {result.settings['device']})", highlight=False)
    return 0
