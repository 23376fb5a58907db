"""ONNX file -> `Model`, in one go: read (`onnxfile`), pre-pass, cut what cannot be converted, convert (`convert`),
probe the shapes, build the layer table and measure batching; the Model is made once, from the finished facts."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto
from torch import fx

from . import convert, layouts, onnxfile
from . import graph_inputs as inputs_mod
from .errors import ModelLoadError, OptionError, TargetError, VizcoreError, closest, oneline
from .model import Layer, Model, Network, TensorInfo, batch_axis
from .onnx_compat import Converter, Prepass
from .text import printable

#: Integer/bool input dtypes probed with default ids and masks when a model has no float input
_ID_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"})
#: Largest probe input (elements) that load/inspect will build: 64 Mi floats (256 MiB), e.g. 3 x 4096 x 5461.
MAX_PROBE_ELEMENTS = 64 * 2**20


def load(path: str | os.PathLike[str], *, size: int | Sequence[int] | None = None, prepasses: Sequence[Prepass] = (),
         converters: Sequence[Converter] = (), layout: str | None = None,
         input_shapes: dict[str, Sequence[int]] | None = None, input: str | None = None,  # noqa: A002
         feeds: dict[str, Any] | None = None) -> Model:
    """Load, validate, pre-pass and convert an ONNX file; raise `ModelLoadError` with a one-line cause if it can't.

    `size` is the spatial size of the probe input used to fill the layer table's shapes, one int or one value
    per spatial dim such as (H, W) (default: the model's fixed size, else 224; 1-D models: from their receptive
    field); a size whose probe input would exceed MAX_PROBE_ELEMENTS is refused. `prepasses` and `converters` are
    applied as given (`vizcore.load` passes those of a plugin manager); onnx2torch's converter table is left as it
    was found. Any unexpected exception from a malformed file becomes a `ModelLoadError` with its first line (the
    cause stays chained).
    `layout` overrides the detected input layout (NCHW, NHWC, NCL, NLC, NF); `input_shapes` ({name: dims}) fixes
    graph input dims (symbolic ones the weights do not determine). Nodes without a converter, and what depends
    on them, are left out when visual layers remain before them (`Model.unreachable` lists them).
    `input` names an inner float tensor to optimize instead of a graph input (a text model's embedding output);
    `feeds` ({input name: array}) gives the other graph inputs (default: token ids 0, 1, ..., masks of ones).
    """
    if size is not None:
        size = inputs_mod.parse_size(size, "size", least=1)
    try:
        return _load(Path(path), size, prepasses, converters, layout=layout, input_shapes=input_shapes, input=input,
                     feeds=feeds)
    except VizcoreError:
        raise
    except (Exception, MemoryError, RecursionError) as exc:
        raise ModelLoadError(f"cannot load {printable(Path(path).name[:200])}: {printable(oneline(exc))}",
                             "the file is malformed; run with --debug for the traceback") from exc


@dataclasses.dataclass(frozen=True)
class _Converted:
    """The converted graph, and what the layer table needs from the ONNX nodes it came from (in graph order)."""

    proto: onnx.ModelProto
    module: fx.GraphModule
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    layout: layouts.Layout | None
    names: list[str]  # the layer names shown to users
    originals: list[str]  # the export's own node names
    ops: list[str]
    outs_of: list[list[str]]
    ins_of: list[list[str]]
    prepasses: tuple[tuple[str, int], ...]
    unreachable: tuple[tuple[str, str, str], ...]
    cut: bytes | None  # the cut graph's bytes when nodes were left out
    primary: str | None = None  # the float graph input optimized (None: the model has none)
    primary_note: str | None = None  # the line saying so, when vizcore chose it among several


def _load(path: Path, size: int | Sequence[int] | None, prepasses: Sequence[Prepass],
          converters: Sequence[Converter], *,
          layout: str | None, input_shapes: dict[str, Sequence[int]] | None, input: str | None,  # noqa: A002
          feeds: dict[str, Any] | None) -> Model:
    file = onnxfile.read(path)
    values = inputs_mod.specialisable(file.proto, feeds or {}, file.metadata)
    fixed = inputs_mod.specialise(file.proto, values)  # a sample rate decides an If: fold it in (in place)
    # what onnxruntime compares against: taken before the pre-passes change the proto (with the fixed inputs)
    reference = file.proto.SerializeToString() if values else file.standalone()
    c = _convert(file, prepasses, converters, input_shapes, layout, input)
    said: list[str] = []  # what the load chose, one line each (`Model.choices`)
    net = _network(c, file.metadata, layout, input, {k: v for k, v in (feeds or {}).items() if k not in values}, said)
    shapes = _probe(net, size)
    layers, by_key = _layer_table(c, net.module, shapes, _channel_last(net, shapes, size))
    proto = c.proto
    choices = (*_specialised(fixed, c.prepasses), *said, *_choices(net, size))
    for line in choices:
        warnings.warn(line, UserWarning, stacklevel=4)
    return Model(**{f.name: getattr(net, f.name) for f in dataclasses.fields(Network)},
                 path=file.path, sha256=file.sha256,
                 producer=f"{proto.producer_name} {proto.producer_version}".strip() or "unknown",
                 opset=_opset(proto), ir_version=int(proto.ir_version), layers=layers, by_key=by_key,
                 batch_ok=_batch_ok(net), prepasses=c.prepasses, unreachable=c.unreachable,
                 probe_shape=net.input_shape(net.probe_batch, size) if net.has_float_input else None,
                 reference=c.cut if c.cut is not None else reference, choices=choices)


def _choices(net: Network, size: int | Sequence[int] | None) -> tuple[str, ...]:
    """One line per thing the load chose that the file does not say."""
    def dims(t: TensorInfo) -> str:
        return f"{t.name!r} [{', '.join(map(str, t.shape))}]"

    out = [f"input {dims(t)} holds its batch on axis {t.batch_axis}: fed that way" for t in net.inputs if t.batch_axis]
    if net.optimized is None and net.has_float_input and net.default_length and size is None \
            and "vizcore.size" not in net.metadata:
        out.append(f"input {dims(net.input)}: its length is free; vizcore uses {net.default_length} (twice the "
                   "receptive field of its convolutions, at least 32; --size L to choose)")
    return tuple(out)


def _specialised(fixed: Sequence[str], done: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """The line saying which inputs were folded in as constants and how many If nodes that resolved."""
    if not fixed:
        return ()
    n = dict(done).get("inline_constant_if", 0)
    return (f"specialised on {', '.join(fixed)}: folded {n} If node{'s' if n != 1 else ''}",)


def _convert(file: onnxfile.ModelFile, prepasses: Sequence[Prepass], converters: Sequence[Converter],
             input_shapes: dict[str, Sequence[int]] | None, layout: str | None, asked: str | None) -> _Converted:
    """Pre-pass the file's graph, cut it in front of nodes without a converter, and convert it (in place)."""
    proto = file.proto
    if not [vi for vi in proto.graph.input if vi.name not in {t.name for t in proto.graph.initializer}]:
        raise ModelLoadError(f"{file.path.name} has no inputs", "a model to visualize needs an input")
    if input_shapes:
        inputs_mod.apply_shapes(proto, input_shapes)
    inputs_mod.infer_dims(proto)

    done = _apply_prepasses(proto, prepasses)
    inits = {t.name for t in proto.graph.initializer}
    names = convert.display_names(list(proto.graph.node), inits)
    unreachable, cut = convert.cut_unconvertible(proto, names, converters)
    axes = inputs_mod.batch_axes(proto)
    inputs = tuple(TensorInfo(vi.name, *_shape_of(vi), batch_axis=axes.get(vi.name, 0)) for vi in proto.graph.input
                   if vi.name not in inits)
    outputs = tuple(TensorInfo(vi.name, *_shape_of(vi)) for vi in proto.graph.output)
    primary, note = _primary(proto, inputs, asked)
    found_layout = _detect_layout(proto, [t for t in inputs if t.name == primary], file.metadata, layout)
    nodes = list(proto.graph.node)
    originals = [n.name for n in nodes]
    outs_of = [list(n.output) for n in nodes]
    ins_of = [list(n.input) for n in nodes]
    ops = [n.op_type for n in nodes]
    for i, n in enumerate(nodes):
        n.name = f"n{i}"  # predictable fx names; the model's own names stay in the layer table
    gm = convert.convert(proto, names, converters)
    convert.outputs_one_to_one(gm, proto)
    return _Converted(proto=proto, module=gm, inputs=inputs, outputs=outputs, layout=found_layout, names=names,
                      originals=originals, ops=ops, outs_of=outs_of, ins_of=ins_of, prepasses=tuple(done),
                      unreachable=tuple(unreachable), cut=cut, primary=primary, primary_note=note)


def _primary(proto: onnx.ModelProto, inputs: Sequence[TensorInfo], asked: str | None) -> tuple[str | None, str | None]:
    """The float graph input to optimize and the line saying why (`graph_inputs.primary_input`, the rule prune
    shares)."""
    name, why = inputs_mod.primary_input(proto, [t.name for t in inputs if t.is_float], asked)
    return name, (f"optimizing input {name!r}: {why}; --input-node NAME to choose" if why else None)


def _network(c: _Converted, metadata: dict[str, str], layout: str | None, input: str | None,  # noqa: A002
             feeds: dict[str, Any] | None, said: list[str]) -> Network:
    """The converted module with its inputs: the values of the other graph inputs, the inner tensor to optimize
    (`input`) and, for a 1-D model without a fixed length, its default probe length."""
    net = Network(inputs=c.inputs, outputs=c.outputs, metadata=metadata, module=c.module, layout=c.layout,
                  primary=c.primary,
                  tokens=inputs_mod.token_inputs(c.proto),
                  given={k: torch.as_tensor(v) for k, v in inputs_mod.check_feeds(c.proto, feeds or {}).items()})
    if c.primary_note:
        said.append(c.primary_note)
    if input is not None and input != c.primary:
        net = dataclasses.replace(net, **_optimize_inner(net, c, input, layout, said))
    if net.layout is not None and net.layout.natural_rank == 3 and net.fixed_size is None:
        net = dataclasses.replace(net, default_length=inputs_mod.receptive_length(c.proto))
    return net


def _probe(net: Network, size: int | Sequence[int] | None) -> dict[str, tuple[int, ...] | None]:
    """Every fx node's output shape on the probe input (`size`), which must fit MAX_PROBE_ELEMENTS."""
    has_float = net.has_float_input
    if has_float:
        _check_probe(net, size)
    elif not all(t.dtype in _ID_TYPES for t in net.inputs):
        net.input  # noqa: B018  raises: a dtype that is neither float nor ids/masks (strings, unknown types)
    try:
        probe = (net.feeds(net.probe_input(net.probe_batch, size)) if has_float else
                 [net.default_feed(t, net.probe_batch) for t in net.inputs])
        return _shapes(net.module, probe)
    except Exception as exc:
        shape = list(net.input_shape(net.probe_batch, size)) if has_float else "default"
        raise ModelLoadError(f"the converted graph does not run on a {shape} input: "
                             f"{oneline(exc)}",
                             "pass the size the model expects, or run with --debug") from exc


def _check_probe(model: Network, size: int | Sequence[int] | None) -> tuple[int, ...]:
    """The probe input's shape, refused when it would be larger than MAX_PROBE_ELEMENTS."""
    shape = model.input_shape(model.probe_batch, size)
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    if n > MAX_PROBE_ELEMENTS:
        raise OptionError(f"the probe input {list(shape)} would hold {n:,} values ({n * 4 / 2**30:,.1f} GiB as "
                          f"float32), more than the {MAX_PROBE_ELEMENTS:,} vizcore allows",
                          "pass a smaller --size" if size else "the model's fixed input is too large to probe")
    return shape


def _layer_table(c: _Converted, module: fx.GraphModule, shapes: dict[str, tuple[int, ...] | None], last: set[str]
                 ) -> tuple[tuple[Layer, ...], dict[str, Layer]]:
    """The layer table (one Layer per converted node, channel-last ones shown channels first) and its lookup
    by name, output tensor name and the export's own node name."""
    fx_names = {n.target.rsplit("/", 1)[-1]: n.name for n in module.graph.nodes if n.op == "call_module"}
    layers, aliases = [], []
    for i, name in enumerate(c.names):
        fxn = fx_names.get(f"n{i}")
        if fxn is None:
            continue
        shape = shapes.get(fxn)
        shape = (shape[0], shape[2], shape[1]) if fxn in last and shape else shape
        layers.append(Layer(index=len(layers), name=name, op_type=c.ops[i],
                            output=c.outs_of[i][0] if c.outs_of[i] else "", fx_name=fxn, shape=shape,
                            inputs=tuple(c.ins_of[i]), channel_last=fxn in last))
        aliases.append(c.originals[i])
    by_key: dict[str, Layer] = {}
    for l in layers:
        by_key.setdefault(l.name, l)
    for l in layers:
        by_key.setdefault(l.output, l)
    for l, original in zip(layers, aliases):  # a dynamo export's own node names (node_Conv_12) stay addressable
        if original:
            by_key.setdefault(original, l)
    return tuple(layers), by_key


def _batch_ok(net: Network) -> bool:
    """Whether the converted graph runs at batch > 1 and gives per-element results equal to batch 1 (two
    forward passes, measured once at load, on the CPU)."""
    if not net.has_float_input:  # token ids only: the same default ids in every sample
        try:
            with torch.no_grad():
                both = _first_tensor(net.module(*[net.default_feed(t, 2) for t in net.inputs]))
                one = _first_tensor(net.module(*[net.default_feed(t, 1) for t in net.inputs]))
            axis = batch_axis(tuple(both.shape), tuple(one.shape))
            return axis is not None and bool(torch.allclose(both.narrow(axis, 1, 1), one, atol=1e-4))
        except Exception:
            return False
    if isinstance(net.input.shape[0], int) and net.input.shape[0] > 0:
        return net.input.shape[0] > 1
    small = 64 if len(net.natural_dims) == 4 else None
    x = net.probe_input(batch=2, size=small if net.fixed_size is None else None)
    try:
        with torch.no_grad():
            both = _first_tensor(net.run(x))
            one = _first_tensor(net.run(x[1:2]))
        axis = batch_axis(tuple(both.shape), tuple(one.shape))
        if axis is None:
            return False
        # a graph that bakes batch 1 in fails or gives a different answer; GPU numerics (TF32, algorithm
        # choice per batch size) differ by far less, so compare relative to the output's scale
        scale = float(one.abs().max()) + 1e-6
        return float((both.narrow(axis, 1, 1).float() - one.float()).abs().max()) <= 1e-2 * scale
    except Exception:
        return False


def _first_tensor(x: Any) -> torch.Tensor:
    while isinstance(x, (tuple, list)):
        x = x[0]
    return x


def _shapes(gm: fx.GraphModule, feeds: list[torch.Tensor]) -> dict[str, tuple[int, ...] | None]:
    shapes: dict[str, tuple[int, ...] | None] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            shapes[n.name] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            return out

    with torch.no_grad():
        Recorder(gm).run(*feeds)
    return shapes


def _channel_last(model: Network, shapes: dict[str, tuple[int, ...] | None],
                  size: int | Sequence[int] | None) -> set[str]:
    """fx names of the rank-3 tensors laid out (N, L, C) in a sequence model: probed at a second length, their dim 1
    follows the length and dim 2 stays (a text encoder's hidden states, the Dense layers of an NLC signal model)."""
    batch = model.probe_batch
    if model.has_float_input:
        if model.layout is None or model.layout.natural_rank != 3 or model.fixed_size:
            return set()
        length = int(model.input_shape(batch, size)[-1])
        make = lambda: model.feeds(model.probe_input(batch, length + 8))  # noqa: E731
    elif model.tokens:
        make = lambda: [model.default_feed(t, batch, 24) for t in model.inputs]  # noqa: E731  (the first: 16)
    else:
        return set()
    try:
        other = _shapes(model.module, make())
    except Exception:  # a graph that runs at one length only: its tensors keep dim 1 as the channel axis
        return set()
    return {k for k, a in shapes.items() if a is not None and len(a) == 3 and (b := other.get(k)) is not None
            and len(b) == 3 and a[0] == b[0] and a[1] != b[1] and a[2] == b[2]}


def _optimize_inner(net: Network, c: _Converted, name: str, layout: str | None, said: list[str]) -> dict[str, Any]:
    """Make inner tensor `name` (or the output of the node so named) the optimized input: rewire the module, probe
    its shape (symbolic dims where it changes with the token length), detect its layout; the Network's new fields."""
    outs_of, proto = c.outs_of, c.proto
    name, at, gather, dequant, note = _inner_tensor(c, name)
    fx_node = {n.target.rsplit("/", 1)[-1]: n.name for n in net.module.graph.nodes
               if n.op == "call_module"}.get(f"n{at}") if at is not None else None
    if fx_node is None or len(outs_of[at]) != 1:
        known = [o for outs in outs_of for o in outs]
        hint = closest(name, known)
        raise TargetError(f"no single-output node makes tensor {name!r}",
                          f"did you mean {hint[0]!r}?" if hint else "tensor names: `vizcore inspect MODEL --all`")
    source = inputs_mod.tap(net.module, fx_node)
    with torch.no_grad():
        a, b = (source(*[net.default_feed(t, 1, n) for t in net.inputs]) for n in (16, 24))
    if not (isinstance(a, torch.Tensor) and a.is_floating_point()):
        lookup = inputs_mod.embedding_lookup(proto)
        raise TargetError(f"tensor {name!r} is not a float tensor: gradient ascent cannot optimize it",
                          "pick a float tensor, such as an embedding output" + (
                              f" (--input-node auto: {lookup.output[0]!r})" if lookup is not None else ""))
    dims = tuple("batch" if i == 0 else (int(x) if x == y else "len") for i, (x, y) in enumerate(zip(a.shape, b.shape)))
    if layout is None and len(dims) == 3 and gather is not None:
        layout = "NLC"  # an embedding lookup: (N, tokens, features)
    found = layouts.detect(proto.graph, name, dims, {}, layout)
    inputs_mod.rewire(net.module, fx_node)
    if note:
        said.append(note)
    return {"optimized": TensorInfo(name, dims, "float32"), "source": source, "layout": found,
            "embedding": inputs_mod.embedding_table(proto, gather, dequant) if gather is not None else None}


def _inner_tensor(c: _Converted, name: str) -> tuple[str, int | None, onnx.NodeProto | None, onnx.NodeProto | None,
                                                     str | None]:
    """The tensor `name` names ("auto": the embedding lookup of a token input), its node's index, the embedding
    Gather it comes from and the DequantizeLinear/Cast that makes a quantized lookup float (the tensor is then
    that one's output: the first float tensor carrying the embedding), and a line saying what vizcore chose."""
    outs_of, proto, auto = c.outs_of, c.proto, name == "auto"
    if auto:
        lookup = inputs_mod.embedding_lookup(proto)
        if lookup is None:
            raise TargetError("--input-node auto: the model has no embedding lookup (a Gather of token ids in a "
                              "constant table)", "name the tensor to optimize (`vizcore inspect MODEL --all`)")
        name = lookup.output[0]
    at = next((i for i, outs in enumerate(outs_of) if name in outs), None)
    if at is None:
        at = next((i for names in (c.originals, c.names) for i, n in enumerate(names) if n == name and outs_of[i]),
                  None)
        name = outs_of[at][0] if at is not None else name
    gather = proto.graph.node[at] if at is not None and c.ops[at] == "Gather" else None
    if gather is not None and inputs_mod.quantized_table(proto, gather):
        dequant = inputs_mod.dequantized(proto, name)
        if dequant is not None:
            at, was, name = outs_of.index(list(dequant.output)), name, dequant.output[0]
            return name, at, gather, dequant, (
                f"{'--input-node auto: ' if auto else ''}optimizing {name!r}, the {dequant.op_type} after the "
                f"quantized embedding lookup {was!r} (integers): the first float tensor carrying the embedding")
    note = f"--input-node auto: optimizing {name!r}, the embedding lookup of token input {gather.input[1]!r}" \
        if auto and gather is not None else None
    return name, at, gather, None, note


def _detect_layout(proto: onnx.ModelProto, inputs: Sequence[TensorInfo], metadata: dict[str, str],
                   layout: str | None) -> layouts.Layout | None:
    first = next((t for t in inputs if t.is_float), None)
    if first is None:
        return None
    return layouts.detect(proto.graph, first.name, first.shape, metadata, layout)


def _apply_prepasses(proto: onnx.ModelProto, passes: Sequence[Prepass]) -> list[tuple[str, int]]:
    done = []
    for p in sorted(passes, key=lambda p: (p.order, p.name)):
        try:
            n = int(p.fn(proto) or 0)
        except Exception as exc:
            raise ModelLoadError(f"pre-pass {p.name!r} failed: {type(exc).__name__}: {exc}",
                                 "report this with the model, or disable the plugin that provides it") from exc
        done.append((p.name, n))
    return done


def _shape_of(vi: onnx.ValueInfoProto) -> tuple[tuple[int | str | None, ...], str]:
    tt = vi.type.tensor_type
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "unknown"
    except (KeyError, ValueError, TypeError):  # an elem_type onnx does not know (e.g. 99)
        dtype = f"unknown({tt.elem_type})"
    if tt.elem_type == TensorProto.BFLOAT16:
        dtype = "bfloat16"
    return tuple(dims), dtype


def _opset(proto: onnx.ModelProto, domain: str = "") -> int:
    for o in proto.opset_import:
        if o.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(o.version)
    return 0


