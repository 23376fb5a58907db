"""`vizcore inspect MODEL`: producer, opset, inputs/outputs, parameter count, layer table, fidelity."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help="show a model's inputs, outputs and layers",
                       description="Show a model's inputs, outputs, layers and conversion fidelity.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--all", action="store_true", help="list every node, not only the ones people visualize")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--verbose", "-v", action="store_true", help="also list every pre-pass in order, with its changes")
    p.add_argument("--no-fidelity", action="store_true", help="skip the comparison with onnxruntime")
    p.add_argument("--size", type=int, default=None, help="spatial size of the probe input (default: model's, or 224)")
    p.add_argument("--layout", default=None, help="the input's layout if detection is wrong: NCHW NHWC NCL NLC NF")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D,D,...",
                   help="fix a graph input's dims (symbolic ones the weights do not determine); repeatable")
    p.add_argument("--input-node", default=None, metavar="TENSOR",
                   help="optimize this inner float tensor (e.g. a text model's embedding output) instead of an input")
    p.add_argument("--feed", action="append", default=[], metavar="NAME=FILE.npy",
                   help="value of another graph input (default: token ids 0, 1, ..., masks of ones); repeatable")
    return p


def _dims(shape: Any) -> str:
    return "×".join("?" if d is None else str(d) for d in shape)


def run(args: argparse.Namespace, console: Console) -> int:
    from ..api import load
    from ..graph_inputs import parse_shape, read_feed

    shapes = dict(parse_shape(t) for t in args.input_shape) or None
    feeds = dict(read_feed(t) for t in args.feed) or None
    model = load(args.model, size=args.size, plugins=args.plugins, layout=args.layout, input_shapes=shapes,
                 input=args.input_node, feeds=feeds)
    layers = model.layers if args.all else [l for l in model.layers if l.visual]
    fidelity = {"available": False, "reason": "skipped (--no-fidelity)"} if args.no_fidelity else model.fidelity(
        size=args.size)
    if args.json:
        data = model.summary()
        data.update({"batch_ok": model.batch_ok, "fidelity": fidelity, "layers": [l.to_json() for l in layers],
                     "layer_count": len(model.layers)})
        console.print_json(json.dumps(data, default=str)) if console.is_terminal else print(json.dumps(data,
                                                                                                     default=str))
        return 0
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]model[/]", escape(str(model.path)))
    head.add_row("producer", escape(model.producer))
    head.add_row("opset / IR", f"{model.opset} / {model.ir_version}")
    for t in model.inputs:
        lay = f"  layout {model.layout.name}" if model.layout is not None and t is model.input else ""
        head.add_row("input", f"{escape(t.name)}  {_dims(t.shape)}  {t.dtype}{lay}")
    for t in model.outputs:
        head.add_row("output", f"{escape(t.name)}  {_dims(t.shape)}  {t.dtype}")
    head.add_row("parameters", f"{model.param_count:,}")
    head.add_row("batch > 1", "yes" if model.batch_ok else "[yellow]no: the graph bakes batch 1 in; units render "
                 "one at a time[/]")
    if fidelity.get("error"):
        head.add_row("fidelity", f"[red]{escape(fidelity['error'])}[/]")
    elif fidelity.get("available"):
        d = fidelity["max_abs_diff"]
        style = "green" if d <= 1e-4 else "yellow" if d <= 1e-2 else "red"
        head.add_row("fidelity", f"[{style}]max |torch - onnxruntime| = {d:.2e}[/] on a seeded "
                     f"{_dims(fidelity['input_shape'])} input")
    else:
        head.add_row("fidelity", f"[yellow]not measured: {fidelity.get('reason')}[/]")
    if args.verbose:
        ran = [f"{escape(n)}: {c} change{'s' if c != 1 else ''}" if c else f"[dim]{escape(n)}: no change[/]"
               for n, c in model.prepasses]
        head.add_row("pre-passes", "\n".join(ran) or "none registered")
    console.print(head)
    title = f"{len(layers)} of {len(model.layers)} layers" + ("" if args.all else " (--all for every node)")
    table = Table(title=title, title_justify="left")
    for col, j in (("#", "right"), ("name", "left"), ("op", "left"), ("output shape", "left"), ("ch", "right")):
        table.add_column(col, justify=j, overflow="fold")
    for l in layers:
        table.add_row(str(l.index), escape(l.name), escape(l.op_type), _dims(l.shape) if l.shape else "-",
                      str(l.channels) if l.channels else "-")
    console.print(table)
    if model.unreachable:
        cut = Table(title=f"{len(model.unreachable)} nodes not reachable (not converted)", title_justify="left")
        for col in ("name", "op", "why"):
            cut.add_column(col, overflow="fold")
        for name, op, why in model.unreachable:
            cut.add_row(escape(name), escape(op), escape(why))
        console.print(cut)
    return 0
