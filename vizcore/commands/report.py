"""`vizcore report MODEL --out DIR`: a static, offline HTML atlas of a model, grown incrementally from a cache."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from ..errors import LayerNotFoundError, OptionError
from ._model_flags import add_model_flags, load_kwargs

if TYPE_CHECKING:
    from ..model import Model


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="write a static HTML atlas of a model's units",
                       description="Write a static, offline HTML atlas: model summary, layer table, health, and a "
                                   "page per layer with every rendered unit. Re-running with more layers renders "
                                   "only what is new (cached by model hash and settings in OUT/.cache); growing a "
                                   "report, --steps, --size, --seed and --units-per-layer default to the last run's.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--out", "-o", required=True, help="output folder (an earlier report there is grown in place)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--layers", nargs="+", metavar="LAYER",
                       help="layers to render: names, output tensor names or indices (space- or comma-separated)")
    which.add_argument("--auto", action="store_true",
                       help="pick convolutions spread through the depth, each shown before its activation, with a "
                            "budget that takes minutes on a CPU")
    which.add_argument("--all-units", action="store_true",
                       help="every channel of every conv, before its activation (an estimate first; resumable)")
    p.add_argument("--executor", default=None, metavar="local|ray|ray://HOST:PORT",
                   help="where chunks run: this process (local, default) or a Ray cluster; resumable either way")
    p.add_argument("--units-per-layer", type=int, default=None, metavar="N",
                   help="channels rendered per layer, from channel 0 (default 8)")
    p.add_argument("--classes", default=None, metavar="I,J,K", help="class logits to render, e.g. 1,9,130")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names: JSON list or text with one name a line (default: the model's vizcore.labels)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimization steps per unit (default 128; --auto 64)")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default: the model's fixed size, else 128; --auto 112)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    health = p.add_mutually_exclusive_group()
    health.add_argument("--check", default=None, metavar="FILE",
                        help="use stored `vizcore check --json` results instead of running the check")
    health.add_argument("--no-health", action="store_true",
                        help="skip the health check (by default `vizcore check` runs on the rendered layers)")
    p.add_argument("--no-fidelity", action="store_true", help="skip the comparison with onnxruntime")
    p.add_argument("--alpha", action="store_true",
                   help="show where each picture matters: the render's gradient on it as transparency and as a heat "
                        "map (render --export alpha's maps; units cached without one are rendered again)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder that is not a report")
    add_model_flags(p, None, "each unit's top inputs from your data (exemplar crops with the unit's heat map over "
                             "each) and its trust verdict (trusted / doubtful / misleading, with the numbers) on its "
                             "page")
    return p


def _layer_keys(model: Model, items: list[str] | None) -> list[str] | None:
    """Layer keys from the command line: an item that names a layer stays whole, others split on commas."""
    if not items:
        return None
    keys: list[str] = []
    for item in items:
        try:
            model.layer(item)
            keys.append(item)
        except LayerNotFoundError:
            parts = [s.strip() for s in item.split(",") if s.strip()]
            if len(parts) <= 1:
                raise
            keys.extend(parts)
    return keys


def _executor(args: argparse.Namespace, err: Console) -> Any:
    """The executor with a progress bar over all units; None keeps the plain path (no --executor, no --all-units)."""
    if args.executor is None and not args.all_units:
        return None
    from ..executors import resolve_executor
    from ..executors.progress import UnitBar

    return resolve_executor(args.executor or "local", progress=UnitBar(err))


def run(args: argparse.Namespace, console: Console) -> int:
    from ..api import load
    from ..atlas import ReportOptions, build_report, read_labels
    from ..atlas.health import load_check

    if not args.layers and not args.auto and not args.classes and not args.all_units:
        raise OptionError("nothing to render", "pass --layers A B, --auto, or --classes 1,9,130")
    labels = read_labels(args.labels) if args.labels else None  # bad input fails before any work
    stored = load_check(args.check) if args.check else None
    model = load(args.model, plugins=args.plugins, **load_kwargs(args, args.size))
    err = Console(stderr=True)
    space = {k: v for k, v in (("preprocess", args.preprocess), ("value_range", args.value_range)) if v is not None}
    device = {"device": args.device} if args.device != "auto" else {}
    options = ReportOptions(layers=_layer_keys(model, args.layers), auto=args.auto, all_units=args.all_units,
                            units_per_layer=args.units_per_layer, classes=args.classes, labels=labels,
                            steps=args.steps, size=args.size, seed=args.seed, fidelity=not args.no_fidelity,
                            render_options={**device, **space} or None, data=args.data, alpha=args.alpha)
    index = build_report(model, args.out, options, health=stored if stored is not None else not args.no_health,
                         force=args.force, plugins=args.plugins, executor=_executor(args, err),
                         log=lambda m: err.print(f"[dim]{escape(m)}[/]", highlight=False))
    console.print(f"report: [bold]{escape(str(index))}[/]", highlight=False)
    return 0
