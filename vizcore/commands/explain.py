"""`vizcore explain MODEL IMAGE`: the units that fire most on one image, per layer, each with its heat map over the
image and its picture (a short fresh render); a table, PNGs and `explain.json` in one output folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..files import check_out_dir
from ..outdir import check_creatable
from ..text import json_text
from ._model_flags import add_model_flags, load_kwargs, size_of


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("explain", help="which units fire most on an image, with heat maps and their pictures",
                       description="What does the network see here? For each layer (default: four across the "
                                   "depth, among the layers `vizcore check` measures), the units whose largest "
                                   "activation on IMAGE is highest, each with its activation map over the image "
                                   "(NAME_heat.png) and a short render of what it wants to see (NAME.png).")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("image", help="an image file, or an .npy of one example (C, ...) in the model's input units")
    p.add_argument("--layer", action="append", default=None, metavar="LAYER",
                   help="a layer to look at: name, output tensor name or index; repeatable")
    p.add_argument("--top", type=int, default=8, metavar="N", help="units per layer (default 8)")
    p.add_argument("--out", "-o", type=Path, default=Path("vizcore-explain"),
                   help="output folder (default: vizcore-explain)")
    p.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--steps", type=int, default=64,
                   help="render steps for each unit's picture (default 64; 0: heat maps only)")
    p.add_argument("--render-size", type=int, default=None, metavar="PX",
                   help="side of the pictures (default: the model's fixed size, else 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the renders (default 0)")
    add_model_flags(p, "the image is read at this size: PX or H,W (default: the model's, else 224)")
    return p


def _names(lay: Any, channel: int) -> tuple[str, str]:
    """The files of one unit: numbers only (a model's names never steer a path)."""
    base = f"layer-{lay.index}_unit-{channel}"
    return f"{base}_heat.png", f"{base}.png"


def _write(out: Any, folder: Path, meta: dict[str, Any]) -> list[Path]:
    from ..files import atomic_write_bytes, atomic_write_text, inside
    from ..images import png_bytes

    written, layers = [], []
    for lay in out.layers:
        units = []
        for f in out.units[lay.index]:
            heat, pic = _names(lay, f.channel)
            entry = f.to_json()
            over = out.overlay(f)
            if over is not None:
                written.append(atomic_write_bytes(inside(folder, heat), png_bytes(over)))
                entry["heat"] = heat
            if (lay.index, f.channel) in out.pictures:
                written.append(atomic_write_bytes(inside(folder, pic), png_bytes(out.pictures[(lay.index,
                                                                                               f.channel)])))
                entry["picture"] = pic
            units.append(entry)
        layers.append({"index": lay.index, "name": lay.name, "units": units})
    text = json_text({**meta, "layers": layers}, indent=1)  # strict JSON: a NaN activation is null
    written.append(atomic_write_text(inside(folder, "explain.json"), text + "\n"))
    return written


def _table(out: Any, console: Console) -> None:
    table = Table(title="units that fire most (activation: the channel's largest value)", title_justify="left")
    for col, j in (("layer", "left"), ("unit", "right"), ("activation", "right"), ("mean", "right"),
                   ("at", "left")):
        table.add_column(col, justify=j, overflow="fold")
    for lay in out.layers:
        for i, f in enumerate(out.units[lay.index]):
            at = ",".join(map(str, f.position)) if f.position is not None else "-"
            table.add_row(escape(f"{lay.index} {lay.name}") if i == 0 else "", str(f.channel),
                          f"{f.activation:.4g}", f"{f.mean:.4g}", at)
    console.print(table)


def run(args: argparse.Namespace, console: Console) -> int:
    from ..api import load
    from ..errors import OptionError
    from ..evidence import explain
    from ..outdir import write_folder

    if args.top < 1 or args.steps < 0:
        raise OptionError("--top must be at least 1 and --steps at least 0")
    check_out_dir(args.out, force=args.force)
    check_creatable(args.out)
    size = size_of(args)
    model = load(args.model, plugins=args.plugins, **load_kwargs(args, size))
    layers = [model.layer(k) for k in args.layer] if args.layer else None  # unknown names: closest, exit 2
    if args.steps:
        Console(stderr=True).print(f"rendering each unit's picture ({args.steps} steps; --steps 0 skips it)",
                                   highlight=False)
    out = explain(model, args.image, layers, args.top, size=size, preprocess=args.preprocess,
                  value_range=args.value_range, steps=args.steps, render_size=args.render_size, seed=args.seed,
                  plugins=args.plugins)
    meta = {"model": {"path": str(model.path), "sha256": model.sha256}, "image": str(args.image),
            "ranking": "activation = the channel's largest value over positions", "steps": args.steps}
    written = write_folder(args.out, args.force, lambda folder: _write(out, folder, meta))
    _table(out, console)
    console.print(f"[green]wrote[/] {len(written)} files to {escape(str(args.out))}", highlight=False)
    return 0
