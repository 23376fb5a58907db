"""`vizcore render MODEL TARGET... --out DIR`: feature visualizations as PNGs, a grid and a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import OtherInputError
from ..files import check_out_dir
from ..inputs import require_readable
from ..outdir import check_creatable
from ._exemplars import EXEMPLARS_HELP, add_exemplars, add_trust, open_data
from ._model_flags import add_model_flags, load_kwargs
from ._progress import PlainLines, RenderLines


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("render", help="render what units of a model want to see",
                       description="Gradient ascent on the input: one image per target unit. Targets: LAYER:CH, "
                                   "LAYER:CH@X,Y, LAYER:A-B, LAYER:all, LAYER (DeepDream), class:IDX, OUTPUT:IDX. "
                                   "LAYER is a name or index from `vizcore inspect`.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="what to maximize, e.g. 40:7 or class:1")
    p.add_argument("--out", "-o", type=Path, default=None, help="output folder (default: vizcore-out)")
    p.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--steps", default=None, help="optimization steps (default 144; --quality best: 576, plain: 256)")
    add_model_flags(p, "image side in pixels, or H,W (default: the model's own input, else 224; a fixed "
                       "non-square input keeps its aspect)", EXEMPLARS_HELP)
    p.add_argument("--param", default="auto",
                   help="parameterization: auto (default: fft for images; signal, with the ends penalty, for 1-D), "
                        "fft, pixel, signal, or a plugin's")
    p.add_argument("--param-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the parameterization, e.g. dc=false or rms=0.5 for signal; repeatable")
    p.add_argument("--transforms", default=None,
                   help="transform preset or comma list: standard (default), none, pad, jitter, scale, rotate, blur, "
                        "crops (random crops with noise; --crops N of them per step)")
    _add_quality(p)
    p.add_argument("--lr", default=None, help="learning rate (default 0.3 for the standardized Fourier image of "
                   "--quality default and best, 0.05 otherwise: pixels, 1-D signals, --init, --quality plain)")
    p.add_argument("--l1", default="0", help="L1 penalty weight")
    p.add_argument("--l2", default="0", help="L2 penalty weight")
    p.add_argument("--tv", default="0", help="total-variation penalty weight")
    _add_init(p)
    p.add_argument("--seed", default="0", help="random seed (CPU renders are reproducible)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--max-memory", default=None, help="memory budget for a chunk of units, e.g. 2G")
    p.add_argument("--any-size", action="store_true",
                   help="run the layers at --size even though the model fixes its input size, when every op up to "
                        "the targets works at any size (convolutions, pools, activations): a 64 px render of a "
                        "224 px model costs 1/12 of the work (default: the picture is resized to the model's size)")
    p.add_argument("--relu-override", default="0.25",
                   help="fraction of steps using the ReLU gradient override (default 0.25)")
    p.add_argument("--finish", default=None,
                   help="fraction of the last steps that ascend the picture itself, without the transforms "
                        "(default 0; 0.0625: the last 16 of 256): raises the picture's own value, not its value "
                        "under small transforms (README)")
    p.add_argument("--images-per-unit", default="1", help="images per target (e.g. with diversity)")
    p.add_argument("--export", action="append", default=None, metavar="NAME",
                   help="more exporters to run besides png and manifest (always written): alpha (where the picture "
                        "matters: each unit's accumulated |gradient| as its PNG's alpha and a heat map); plugins "
                        "add more, e.g. gif")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="reuse the chunks a stopped render of the same model, "
                   "targets and settings into the same --out finished (kept in .OUT.vizcore-partial beside it)")
    p.add_argument("--trust", default="auto", choices=("auto", "full", "off"),
                   help="a trust verdict per unit (trusted / doubtful / misleading, with its numbers, in "
                        "manifest.json): auto (default: activation ratio and path similarity with --data, "
                        "transform robustness, seed stability when --images-per-unit >= 2), full (also seed "
                        "stability from a second render: twice the time), off")
    p.add_argument("--transfer", metavar="OTHER.onnx", default=None,
                   help="another classifier of the same classes: the probability it gives each class unit's picture")
    p.add_argument("--executor", default="local", metavar="local|ray|ray://HOST:PORT",
                   help="where chunks run: this process (default) or a Ray cluster (same images)")
    return p


def _add_init(p: argparse.ArgumentParser) -> None:
    """Feature accentuation's flags: the start picture and how near the render stays to it."""
    p.add_argument("--init", default=None, metavar="IMAGE",
                   help="feature accentuation: start from this picture (resized to the render size) and stay near "
                        "it; manifest.json records each unit's distance to it")
    p.add_argument("--init-pixel", default=None, metavar="W",
                   help="with --init: weight of the pixel distance to the picture (default 256, in units of the "
                        "objective's size)")
    p.add_argument("--init-feature", default=None, metavar="W",
                   help="with --init: weight of the relative distance of the layer below the target to the "
                        "picture's (default 0.05)")


def _add_quality(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quality", default="default", choices=("default", "best", "plain"),
                   help="a preset for the options not given: default (NAdam, 144 steps, a standardized Fourier "
                        "image at contrast 2 with 1/f^1.5, lr 0.3: horama's pictures in a fifth of its time), "
                        "best (the same for 576 steps: higher logits and transfer than horama's in 0.77x its time), "
                        "or plain (Adam, 256 steps, Lucid's Fourier image, lr 0.05: the check's ascent); see "
                        "bench/RESULTS.md")
    p.add_argument("--optimizer", default=None, choices=("nadam", "adam"),
                   help="nadam (default) or adam (--quality plain)")
    p.add_argument("--crops", default=None, help="random crops of each image per step, the objective averaged over "
                   "them (with the crops transform, --transforms crops; default 1)")


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

    def stop(self, done: bool) -> None:
        """Stop the bar (started at the first step: a bad target prints none); when `done`, mark it complete (also
        after an early stop), so that it shows the elapsed time, not an ETA."""
        if self.task is None:
            return
        if done:
            self.progress.update(self.task, completed=self.progress.tasks[0].total)
        self.progress.stop()


def _bar(args: argparse.Namespace, err: Console, progress: Progress) -> Any:
    """The render's progress: a rich bar on a terminal, plain lines every few seconds without one, or none."""
    if args.quiet or args.executor != "local":
        return None
    return _Progress(progress) if err.is_terminal else RenderLines(PlainLines("render"))


def _chunk_cache(args: argparse.Namespace, out: Path) -> Any:
    """Where finished chunks go as they finish (local renders): kept by a stopped render, reused with --resume,
    started afresh without it."""
    from ..chunkcache import ChunkCache, partial_folder

    if args.executor != "local":
        return None
    cache = ChunkCache(partial_folder(out))
    if not args.resume:
        cache.clear()
    return cache


def _param_option(text: str) -> tuple[str, Any]:
    """'KEY=VALUE' -> (key, value): true/false as booleans, numbers as numbers, else the text."""
    from ..errors import OptionError

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise OptionError(f"cannot read --param-option {text!r}", "write KEY=VALUE, e.g. --param-option dc=false")
    v = value.strip()
    if v.lower() in ("true", "false"):
        return key.strip(), v.lower() == "true"
    try:
        return key.strip(), int(v) if v.lstrip("-").isdigit() else float(v)
    except ValueError:
        return key.strip(), v


def options(args: argparse.Namespace) -> Any:
    """The render options from the command line, built and validated once (OptionError, one line) before any work;
    `--size` is read there, and the load and the render take it from them."""
    from ..engine.options import RenderOptions, integer, number, split_names

    given = {k: v for k, v in {
        "steps": None if args.steps is None else integer("--steps", args.steps),
        "lr": None if args.lr is None else number("--lr", args.lr),
        "optimizer": args.optimizer,
        "crops": None if args.crops is None else integer("--crops", args.crops),
        "finish": None if args.finish is None else number("--finish", args.finish),
        "transforms": None if args.transforms is None else split_names(args.transforms),
        "param_options": dict(_param_option(t) for t in args.param_option) or None}.items() if v is not None}
    return RenderOptions.from_env(
        **given, quality=args.quality, size=args.size, param=args.param,
        regularizers={k: number(f"--{k.replace('_', '-')}", getattr(args, k))
                      for k in ("l1", "l2", "tv", "init_pixel", "init_feature") if getattr(args, k) is not None},
        init=args.init, seed=integer("--seed", args.seed), device=args.device, amp=args.amp,
        max_memory=args.max_memory, relu_override=number("--relu-override", args.relu_override),
        preprocess=args.preprocess, value_range=args.value_range,
        images_per_unit=integer("--images-per-unit", args.images_per_unit), free_size=args.any_size)


def _preflight(args: argparse.Namespace, opts: Any) -> Any:
    """Everything that can be refused before loading the model: exporters (checked here once; the render and the
    save take the checked value), the output folder, an impossible size."""
    from ..api import select_exporters
    from ..engine.budget import default_budget, refuse_size
    from ..engine.device import resolve_device

    exporters = select_exporters([*(args.export or ()), *(["exemplars"] if args.data else [])], args.plugins)
    check_out_dir(args.out or Path("vizcore-out"), force=args.force)  # refused early; written only at the end
    check_creatable(args.out or Path("vizcore-out"))
    refuse_size(opts.size, opts.budget_bytes or default_budget(resolve_device(opts.device)))
    return exporters


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

    opts = options(args)
    exporters = _preflight(args, opts)
    out = args.out or Path("vizcore-out")
    model = load(args.model, plugins=args.plugins, **load_kwargs(args, size=opts.size))  # layer shapes at the size
    err = Console(stderr=True)

    def warn(msg: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False)

    progress = Progress(TextColumn("[bold]{task.fields[units]}[/] units"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("steps"), TimeRemainingColumn(elapsed_when_finished=True),
                        TextColumn("{task.fields[value]}"), console=err, disable=args.quiet, transient=False)
    bar = _bar(args, err, progress)
    cache = _chunk_cache(args, out)
    data = open_data(args.data, model.input_shape(1, opts.size)) if args.data else None  # checked before the render
    if args.transfer:
        require_readable(args.transfer)
    try:
        render_with = _renderer(args, err, render)  # vizcore.executors when --executor is not local
        kw = dict(plugins=args.plugins, exporters=exporters, on_warning=warn, on_step=bar,
                  **({"chunks": cache} if cache is not None else {}))
        try:
            result = render_with(model, args.targets, opts, **kw)
        except OtherInputError as exc:  # the target reads another float input: optimize that one, and say so
            if args.input_node:
                raise
            warn(f"layer {exc.layer!r} depends on input {exc.input!r}, not {model.input.name!r}: optimizing "
                 f"{exc.input!r} (--input-node {exc.input})")
            model = load(args.model, plugins=args.plugins, **{**load_kwargs(args, size=opts.size), "input": exc.input})
            result = render_with(model, args.targets, opts, **kw)
    except BaseException:
        if isinstance(bar, _Progress):
            bar.stop(done=False)
        raise
    if isinstance(bar, _Progress):
        bar.stop(done=True)
    ex = add_exemplars(result, model, data, opts, err, args.quiet) if data is not None else None
    if args.trust != "off":
        add_trust(result, model, ex, args, err)
    written = result.save(out, exporters=exporters, force=args.force)
    if cache is not None:
        if cache.hits:
            console.print(f"resumed {cache.hits} finished chunks", highlight=False)
        cache.clear()  # the folder is written whole: the chunks are not needed any more
    _report(console, result, written, out)
    return 0


_COLOURS = {"trusted": "green", "doubtful": "yellow", "misleading": "red"}


def _report(console: Console, result: Any, written: list[Path], out: Path) -> None:
    """One line per unit (with its file only if it was written), what was written where, then per layer how many
    units rose above 0."""
    from ..result import rose_line

    names = {p.name for p in written}
    shown = min(len(result), 12)
    for i in range(shown):
        u = result.units[i]
        f = result.filename(i)
        where = f"  -> {escape(f)}" if f in names else ""
        judged = result.trust[i] or {}
        v = judged.get("verdict")
        verdict = f"  [{_COLOURS[v]}]{v}[/]" if v in _COLOURS else ""
        console.print(f"  {escape(u.target):<28} value {result.values[i]:>9.4g}{verdict}{where}", highlight=False)
        tokens = result.extras.get("nearest_tokens")
        if tokens:
            ids = " ".join(str(pos[0][0]) for pos in tokens[i][:24]) + (" ..." if len(tokens[i]) > 24 else "")
            console.print(f"  {'':<28} nearest tokens: {ids}", highlight=False)
    if len(result) > shown:
        console.print(f"  ... and {len(result) - shown} more")
    if any((result.trust[i] or {}).get("not_measured") for i in range(len(result))):
        console.print("  [dim]trust: without --data DIR a verdict is at best doubtful (the activation ratio and the "
                      "path similarity need your data); see manifest.json's trust[/]", highlight=False)
    console.print(f"[green]wrote[/] {len(written)} files to {escape(str(out))} "
                  f"({result.timings['seconds']:.1f} s on {result.settings['device']})", highlight=False)
    for entry in result.rose_above():  # the article's number: how many units a gradient ascent could drive
        console.print(escape(rose_line(entry)), highlight=False)
