"""`vizcore inspect MODEL`: producer, opset, inputs/outputs, parameter count, layer table, fidelity."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..text import json_text, printable
from ._model_flags import add_model_flags, load_kwargs


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help="show a model's inputs, outputs and layers",
                       description="Show a model's inputs, outputs, layers and conversion fidelity.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--all", action="store_true", help="list every node, not only the ones people visualize")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--verbose", "-v", action="store_true", help="also list every pre-pass in order, with its changes")
    p.add_argument("--no-fidelity", action="store_true", help="skip the comparison with onnxruntime")
    add_model_flags(p, "spatial size of the probe input: PX or H,W (default: the model's, or 224)")
    return p


def _dims(shape: Any) -> str:
    return "×".join("?" if d is None else printable(d) for d in shape)


def _tensor(t: Any) -> str:
    return f"{escape(printable(t.name))}  {escape(_dims(t.shape))}  {escape(printable(t.dtype))}"


def run(args: argparse.Namespace, console: Console) -> int:
    from ..analysis.fidelity import fidelity
    from ..api import load

    kwargs = load_kwargs(args)
    model = load(args.model, plugins=args.plugins, **kwargs)
    layers = model.layers if args.all else [l for l in model.layers if l.visual]
    fid = ({"available": False, "reason": "skipped (--no-fidelity)"} if args.no_fidelity
           else fidelity(model, size=kwargs["size"]))
    space = _input_space(model, args)
    if args.json:  # whole names, strict JSON (NaN/Inf as null); json escapes control characters itself
        data = model.summary()
        data.update({"batch_ok": model.batch_ok, "fidelity": fid, "layers": [l.to_json() for l in layers],
                     "layer_count": len(model.layers), "input_space": space.to_json() if space else None})
        text = json_text(data)
        console.print_json(text) if console.is_terminal else print(text)
        return 0
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]model[/]", escape(printable(model.path)))
    head.add_row("producer", escape(printable(model.producer)))
    head.add_row("opset / IR", f"{model.opset} / {model.ir_version}")
    for t in model.inputs:
        lay = f"  layout {model.layout.name}" if model.layout is not None and t is model.input else ""
        head.add_row("input", _tensor(t) + lay)
    for t in model.outputs:
        head.add_row("output", _tensor(t))
    if space is not None:
        guessed = "".join(f"\n[yellow]{escape(w)}[/]" for w in space.warnings)
        head.add_row("input space", escape(space.describe()) + guessed)
    head.add_row("parameters", f"{model.param_count:,}")
    head.add_row("batch > 1", "yes" if model.batch_ok else "[yellow]no: the graph bakes batch 1 in; units render "
                 "one at a time[/]")
    head.add_row("fidelity", _fidelity(fid))
    if args.verbose:
        ran = [f"{escape(printable(n))}: {c} change{'s' if c != 1 else ''}" if c
               else f"[dim]{escape(printable(n))}: no change[/]" for n, c in model.prepasses]
        head.add_row("pre-passes", "\n".join(ran) or "none registered")
    console.print(head)
    if model.nothing_converted:
        console.print(f"[yellow]{escape(printable(model.nothing_converted))}[/]", highlight=False)
    title = f"{len(layers)} of {len(model.layers)} layers" + ("" if args.all else " (--all for every node)")
    print_layers(console, layers, title)
    if model.unreachable:
        cut = Table(title=f"{len(model.unreachable)} nodes not reachable (not converted)", title_justify="left")
        for col in ("name", "op", "why"):
            cut.add_column(col, overflow="fold")
        for name, op, why in model.unreachable:
            cut.add_row(escape(printable(name)), escape(printable(op)), escape(printable(why)))
        console.print(cut)
    return 0


def _input_space(model: Any, args: argparse.Namespace) -> Any:
    """The input space every command would use with these flags (None for a model without a float input)."""
    from ..inputspace import resolve

    return resolve(model, args.preprocess, args.value_range) if model.has_float_input else None


def _fidelity(fidelity: dict[str, Any]) -> str:
    if fidelity.get("error"):
        return f"[red]{escape(printable(fidelity['error']))}[/]"
    if fidelity.get("available"):
        d = fidelity["max_abs_diff"]
        style = "green" if d <= 1e-4 else "yellow" if d <= 1e-2 else "red"
        return (f"[{style}]max |torch - onnxruntime| = {d:.2e}[/] on a seeded "
                f"{_dims(fidelity['input_shape'])} input")
    return f"[yellow]not measured: {escape(printable(fidelity.get('reason')))}[/]"


def _shape(layer: Any) -> str:
    """A layer's shape; a channel-last one (a graph tensor N×L×C) is shown channels first, as vizcore uses it."""
    if not layer.shape:
        return "-"
    return _dims(layer.shape) + (" (graph: N×L×C)" if layer.channel_last else "")


def print_layers(console: Console, layers: list[Any], title: str) -> None:
    """The layer table; names are never cut or folded mid-token: when the longest does not fit the terminal,
    each layer takes two lines, its facts and then its full name on a line of its own (copyable)."""
    rows = [(str(l.index), printable(l.name), printable(l.op_type), _shape(l), str(l.channels) if l.channels else "-")
            for l in layers]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_COLUMNS)]
    if sum(widths) + 3 * len(widths) + 1 <= console.width:  # cells + padding + borders of a rich table
        table = Table(title=title, title_justify="left")
        for (col, j), w in zip(_COLUMNS.items(), widths):
            table.add_column(col, justify=j, no_wrap=True, min_width=w)
        for r in rows:
            table.add_row(*map(escape, r))
        console.print(table)
        return
    console.print(f"{escape(title)}, each as: #  op  output shape  ch, then the name", highlight=False, soft_wrap=True)
    w = [widths[0], widths[2], widths[3]]
    for idx, name, op, shape, ch in rows:
        console.print(f"{idx:>{w[0]}}  {escape(op.ljust(w[1]))}  {escape(shape.ljust(w[2]))}  {ch}",
                      highlight=False, soft_wrap=True)
        console.print(f"{'':>{w[0]}}  {escape(name)}", highlight=False, soft_wrap=True)


_COLUMNS = {"#": "right", "name": "left", "op": "left", "output shape": "left", "ch": "right"}
