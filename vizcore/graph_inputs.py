"""Graph inputs before conversion: user-given shapes, symbolic dims inferred from the weights that consume them,
and the probe length of 1-D models (from their receptive field, never a 224-pixel guess)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ModelLoadError, OptionError, TargetError, closest
from .inputs import open_npy

if TYPE_CHECKING:
    from torch import fx


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'NAME=1,3,224,224' (the --input-shape flag) -> (name, dims)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise OptionError(f"cannot read input shape {text!r}", "write NAME=1,3,224,224")
    return name, shape


Size = int | tuple[int, ...]


def parse_size(value: object, name: str = "--size", least: int = 8) -> Size:
    """A render/probe size: 224, "224", "60,160" or "60x160", (60, 160) -> an int (one value for every spatial dim)
    or a tuple (one per dim: (H, W) or (L,)); every value at least `least`, else a one-line OptionError."""
    if isinstance(value, bool):
        raise OptionError(f"{name} must be a number of pixels, got {value!r}", f"e.g. {name} 224 or {name} 60,160")
    if isinstance(value, str):
        parts = [p.strip() for p in value.lower().replace("x", ",").split(",")]
    elif isinstance(value, int):
        parts = [value]
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        parts = []
    try:
        dims = tuple(_whole(p) for p in parts)
    except (TypeError, ValueError):
        dims = ()
    if not dims or len(dims) > 3:
        raise OptionError(f"cannot read {name} {value!r}", f"write e.g. {name} 224 or {name} 60,160 (H,W)")
    if min(dims) < 1:
        raise OptionError(f"{name} {value!r} must be a positive number of pixels", f"e.g. {name} 224")
    if min(dims) < least:
        raise OptionError(f"{name} {value!r} is too small: each side must be at least {least}",
                          f"use {name} 64 or more")
    return dims[0] if len(dims) == 1 and not (isinstance(value, Sequence) and not isinstance(value, str)) else dims


def _whole(v: object) -> int:
    if isinstance(v, bool):
        raise TypeError(v)
    f = float(v)  # type: ignore[arg-type]
    if not f.is_integer():
        raise ValueError(v)
    return int(f)


def read_feed(text: str) -> tuple[str, np.ndarray]:
    """'NAME=FILE.npy' or 'NAME=NUMBER' (the --feed flag) -> (name, array: a scalar for a number, int64 when it is
    whole); OptionError for a missing or unreadable file."""
    name, sep, file = text.partition("=")
    if not sep or not name or not file:
        raise OptionError(f"cannot read feed {text!r}", "write NAME=FILE.npy or NAME=NUMBER")
    number = scalar_value(file)
    if number is not None:
        return name, number
    return name, np.asarray(open_npy(file, f"--feed for input {name!r}:"))


def scalar_value(text: str) -> np.ndarray | None:
    """'16000' -> int64 scalar, '0.5' -> float32 scalar, anything else (a file name) -> None."""
    t = text.strip()
    try:
        return np.asarray(int(t), dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        v = float(t)
    except ValueError:
        return None
    return np.asarray(v, dtype=np.float32) if np.isfinite(v) else None


#: Largest value (elements) a given feed may have to be folded into the graph as a constant.
MAX_SPECIALISED = 64
#: Metadata key prefix of a default value for a graph input, e.g. `vizcore.feed.sr` = `16000`.
FEED_METADATA = "vizcore.feed."


def specialisable(proto: onnx.ModelProto, feeds: Mapping[str, object],
                  metadata: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The values to fold into the graph: given feeds (else `vizcore.feed.NAME` metadata defaults) of non-float
    graph inputs with a fixed shape (a scalar such as a sample rate) and at most MAX_SPECIALISED values."""
    free = {vi.name: vi for vi in _free(proto)}
    chosen: dict[str, np.ndarray] = {}
    for name, vi in free.items():
        if name not in feeds and FEED_METADATA + name not in metadata:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
        except KeyError:  # an element type onnx does not know: the reader's checks name it
            continue
        fixed = tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)
        if dtype is None or dtype.kind == "f" or not fixed:
            continue
        if name in feeds:
            value = np.asarray(feeds[name])
        elif FEED_METADATA + name in metadata and (v := scalar_value(metadata[FEED_METADATA + name])) is not None:
            value = v
        else:
            continue
        shape = tuple(d.dim_value for d in tt.shape.dim)
        if value.size <= MAX_SPECIALISED and value.size == int(np.prod(shape)) and value.dtype.kind in "biuf":
            chosen[name] = value.astype(dtype).reshape(shape)
    return chosen


def specialise(proto: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> list[str]:
    """Make the named graph inputs initializers holding `values` (in place); their 'NAME=VALUE' texts."""
    g = proto.graph
    keep = [vi for vi in g.input if vi.name not in values]
    del g.input[:]
    g.input.extend(keep)
    for name, value in values.items():
        g.initializer.append(numpy_helper.from_array(value, name))
    return [f"{k}={v.tolist()}" for k, v in values.items()]


def control_inputs(proto: onnx.ModelProto, node: onnx.NodeProto) -> list[str]:
    """The non-float graph inputs an If's condition is computed from (e.g. a sample rate), in graph order."""
    producer = {o: n for n in proto.graph.node for o in n.output if o}
    kinds = {vi.name: vi.type.tensor_type.elem_type for vi in _free(proto)}
    seen, stack, found = set(), [node.input[0]] if node.input else [], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in kinds:
            found.add(t)
        elif t in producer:
            stack.extend(i for i in producer[t].input if i)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    return [n for n in kinds if n in found and kinds[n] not in floats]


def embedding_table(proto: onnx.ModelProto, gather: onnx.NodeProto, dequant: onnx.NodeProto | None = None
                    ) -> np.ndarray | None:
    """The (vocabulary, features) float table a Gather looks token ids up in, when it is an initializer (axis 0);
    a quantized table through the DequantizeLinear `dequant` after the Gather (per-tensor or per-feature scale)."""
    axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
    inits = {t.name: t for t in proto.graph.initializer}
    init = inits.get(gather.input[0])
    if init is None or axis != 0 or len(init.dims) != 2:
        return None
    table = numpy_helper.to_array(init)
    if table.dtype.kind == "f":
        return table.astype(np.float32)
    if dequant is None or dequant.op_type != "DequantizeLinear" or dequant.input[1] not in inits:
        return None
    scale = numpy_helper.to_array(inits[dequant.input[1]]).astype(np.float32)
    zp = (numpy_helper.to_array(inits[dequant.input[2]]).astype(np.float32)
          if len(dequant.input) > 2 and dequant.input[2] in inits else np.zeros_like(scale))
    if scale.size not in (1, table.shape[1]) or zp.size != scale.size:
        return None
    return ((table.astype(np.float32) - zp.reshape(1, -1)) * scale.reshape(1, -1)).astype(np.float32)


_FLOAT_CASTS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})


def quantized_table(proto: onnx.ModelProto, gather: onnx.NodeProto) -> bool:
    """Whether a Gather looks ids up (axis 0) in a 2-D integer initializer: a quantized embedding table."""
    init = next((t for t in proto.graph.initializer if t.name == gather.input[0]), None)
    return (init is not None and len(init.dims) == 2 and _attr(gather, "axis", 0) == 0
            and init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
                                   onnx.TensorProto.UINT16, onnx.TensorProto.INT32))


def dequantized(proto: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear (or Cast to a float type) that is the one reader of integer tensor `name`: where a
    quantized embedding lookup becomes the float embedding."""
    readers = [n for n in proto.graph.node if name in n.input]
    if len(readers) != 1 or readers[0].input[0] != name:
        return None
    n = readers[0]
    ok = n.op_type == "DequantizeLinear" or (n.op_type == "Cast" and _attr(n, "to") in _FLOAT_CASTS)
    return n if ok and n.output else None


def embedding_lookup(proto: onnx.ModelProto) -> onnx.NodeProto | None:
    """The first Gather that looks a token input up in a 2-D constant table (not a Gather on a Shape)."""
    tokens = token_inputs(proto)
    ranks = {t.name: len(t.dims) for t in proto.graph.initializer}
    return next((n for n in proto.graph.node if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in tokens
                 and ranks.get(n.input[0]) == 2 and _attr(n, "axis", 0) == 0), None)


def check_feeds(proto: onnx.ModelProto, feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The given feeds as arrays, each checked against its graph input: a name the graph has (else a TargetError
    with the closest names), a numeric dtype, the input's rank and its fixed dims. One line, before any
    conversion."""
    free = {vi.name: vi for vi in _free(proto)}
    out = {}
    for name, value in feeds.items():
        vi = _named(free, name, f"feed for {name!r}, but the model has no such input", TargetError)
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise OptionError(f"the feed for input {name!r} has dtype {arr.dtype}: not a number",
                              "give a numeric .npy array (ids, masks or floats)")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
        if vi.type.tensor_type.HasField("shape") and (arr.ndim != len(dims) or any(
                d is not None and d != a and not (i == 0 and a == 1) for i, (d, a) in enumerate(zip(dims, arr.shape)))):
            raise OptionError(f"the feed for input {name!r} has shape {tuple(arr.shape)}, the input is {shown}",
                              "give an array of the input's shape (batch 1 is expanded)")
        out[name] = arr
    return out


def _named(free: Mapping[str, onnx.ValueInfoProto], name: str, missing: str,
           error: type[TargetError] | type[OptionError]) -> onnx.ValueInfoProto:
    """Graph input `name`, else `error` with the inputs there are and the closest name."""
    if name in free:
        return free[name]
    hint = closest(name, free)
    raise error(f"{missing}; inputs: {', '.join(free)}",
                f"did you mean {hint[0]!r}?" if hint else "see `vizcore inspect MODEL`")


def _free(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in inits]


def batch_axes(proto: onnx.ModelProto) -> dict[str, int]:
    """Per graph input, the axis that holds the batch: 0 when dim 0 is symbolic; else the axis that has the same
    symbolic name as another input's batch (an LSTM state `[layers, batch, hidden]` beside `[batch, time, C]`),
    else its only symbolic dim after a fixed dim 0 (`[3, 'b', 8]`); else 0."""
    def params(vi: onnx.ValueInfoProto) -> list[str | None]:
        return [d.dim_param if d.HasField("dim_param") and not d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim]

    free = [(vi.name, params(vi)) for vi in _free(proto)]
    names = {p[0] for _, p in free if p and p[0]}
    out = {}
    for name, p in free:
        named = [i for i, d in enumerate(p) if d is not None and d in names]
        symbolic = [i for i, d in enumerate(p) if d is not None]
        out[name] = (0 if p and p[0] else named[0] if named else symbolic[0] if len(symbolic) == 1 else 0)
    return out


_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
                       "MatMulInteger", "LSTM", "GRU", "RNN"})


def layers_reached(proto: onnx.ModelProto, names: Sequence[str]) -> dict[str, int]:
    """Per graph input in `names`: how many weighted layers (Conv, Gemm, MatMul, recurrent) depend on it."""
    out = {}
    for name in names:
        reached, count = {name}, 0
        for n in proto.graph.node:  # graph order is topological
            if any(i in reached for i in n.input if i):
                reached.update(o for o in n.output if o)
                count += n.op_type in _WEIGHTED
        out[name] = count
    return out


def primary_input(proto: onnx.ModelProto, floats: Sequence[str], asked: str | None = None
                  ) -> tuple[str | None, str | None]:
    """The float graph input to optimize (or probe) among `floats`, and why when vizcore chose among several
    ("N weighted layers depend on it (on 'other' M)"): `asked` (`input=`, --input-node) if it is one, else the one
    the most weighted layers depend on (the first on a tie). One rule for the load and for prune."""
    if asked in floats or len(floats) < 2:
        return (asked if asked in floats else floats[0] if floats else None), None
    reach = layers_reached(proto, floats)
    best = max(floats, key=lambda n: (reach[n], -list(floats).index(n)))
    if best == floats[0]:
        return best, None
    others = ", ".join(f"{n!r} {reach[n]}" for n in floats if n != best)
    return best, f"{reach[best]} weighted layers depend on it (on {others})"


def apply_shapes(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> int:
    """Set the dims of the named graph inputs (symbolic or not) to the given values; returns the inputs changed."""
    free = {vi.name: vi for vi in _free(proto)}
    for name, dims in shapes.items():
        vi = _named(free, name, f"the model has no input named {name!r}", OptionError)
        have = vi.type.tensor_type.shape.dim
        if len(have) != len(dims):
            raise OptionError(f"input {name!r} has {len(have)} dims but the shape given has {len(dims)}",
                              "give one value per dimension")
        for d, v in zip(have, dims):
            d.Clear()
            d.dim_value = int(v)
    return len(shapes)


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _consumer_dims(node: onnx.NodeProto, slot: int, rank: int, inits: dict[str, np.ndarray]) -> dict[int, int]:
    """What a consuming node's constant weights say about the dims of its input at `slot` (rank `rank`)."""
    def w(i: int) -> np.ndarray | None:
        return inits.get(node.input[i]) if len(node.input) > i else None

    op = node.op_type
    if op in ("Conv", "ConvTranspose") and slot == 0 and w(1) is not None and rank >= 3:
        weight = w(1)
        c = weight.shape[1] * _attr(node, "group", 1) if op == "Conv" else weight.shape[0]
        return {1: int(c)}
    if op == "MatMul" and slot == 0 and w(1) is not None and w(1).ndim >= 2:
        return {rank - 1: int(w(1).shape[-2])}
    if op == "Gemm" and slot == 0 and w(1) is not None and rank == 2:
        return {1: int(w(1).shape[1] if _attr(node, "transB") else w(1).shape[0])}
    if op == "LayerNormalization" and slot == 0 and w(1) is not None:
        scale = w(1)
        return {rank - scale.ndim + i: int(s) for i, s in enumerate(scale.shape)}
    return {}


def infer_dims(proto: onnx.ModelProto) -> dict[str, dict[int, int]]:
    """Fill symbolic non-batch dims of the graph inputs from the weights of the nodes that consume them.

    One consistent value is taken; two consumers that disagree raise ModelLoadError. Returns {input: {axis: value}}.
    """
    g = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer
             if any(t.name in n.input[1:] for n in g.node if n.op_type in
                    ("Conv", "ConvTranspose", "MatMul", "Gemm", "LayerNormalization"))}
    found: dict[str, dict[int, int]] = {}
    for vi in _free(proto):
        dims = vi.type.tensor_type.shape.dim
        open_axes = [i for i, d in enumerate(dims) if i > 0 and not d.HasField("dim_value")]
        if not open_axes:
            continue
        seen: dict[int, int] = {}
        for node in g.node:
            for slot, name in enumerate(node.input):
                if name != vi.name:
                    continue
                for axis, value in _consumer_dims(node, slot, len(dims), inits).items():
                    if axis in open_axes and seen.setdefault(axis, value) != value:
                        raise ModelLoadError(f"input {vi.name!r}: dimension {axis} is symbolic and its consumers "
                                             f"disagree about its size ({seen[axis]} vs {value})",
                                             f"give it with --input-shape {vi.name}=...")
        for axis, value in seen.items():
            dims[axis].Clear()
            dims[axis].dim_value = value
        if seen:
            found[vi.name] = seen
    return found


def receptive_length(proto: onnx.ModelProto, minimum: int = 32) -> int:
    """A probe length for a 1-D model: twice the receptive field of its Conv/pool chain (at least `minimum`),
    rounded up to a multiple of 8 (so strided layers keep whole positions)."""
    inits = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    rf, jump = 1, 1
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "MaxPool", "AveragePool", "LpPool", "ConvTranspose"):
            continue
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        if kernel is None and len(node.input) > 1 and node.input[1] in inits:
            kernel = list(inits[node.input[1]][2:])
        if not kernel or len(kernel) != 1:
            continue
        dilation = next((a.ints[0] for a in node.attribute if a.name == "dilations" and a.ints), 1)
        stride = next((a.ints[0] for a in node.attribute if a.name == "strides" and a.ints), 1)
        rf += (kernel[0] - 1) * dilation * jump
        jump *= stride
    length = max(minimum, 2 * rf)
    return -(-length // 8) * 8


# -- an inner tensor as the optimized input (text models: the embedding output) ------------------------------------
def token_inputs(proto: onnx.ModelProto) -> dict[str, int]:
    """Integer graph inputs used as Gather indices into a constant table: {input name: table rows (vocabulary)}."""
    inits = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    free = {vi.name for vi in _free(proto)}
    found: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in free and n.input[0] in inits:
            axis = _attr(n, "axis", 0)
            found[n.input[1]] = int(inits[n.input[0]][axis])
    return found


def tap(gm: fx.GraphModule, node_name: str) -> fx.GraphModule:
    """A module (sharing `gm`'s weights) with `gm`'s inputs that returns the value of fx node `node_name`."""
    from torch import fx

    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            break
        env[n] = g.node_copy(n, lambda a: env[a])
        if n.name == node_name:
            break
    g.output(env[next(n for n in gm.graph.nodes if n.name == node_name)])
    sub = fx.GraphModule(gm, g)
    sub.graph.eliminate_dead_code()
    sub.recompile()
    return sub


def rewire(gm: fx.GraphModule, node_name: str) -> None:
    """Make fx node `node_name`'s value a new last placeholder of `gm` (in place): what feeds it becomes dead code."""
    nodes = list(gm.graph.nodes)
    target = next((n for n in nodes if n.name == node_name), None)
    if target is None:
        raise OptionError(f"tensor node {node_name!r} is not in the converted graph", "pick another --input-node")
    last = [n for n in nodes if n.op == "placeholder"][-1]
    with gm.graph.inserting_after(last):
        p = gm.graph.placeholder("vizcore_input")
    target.replace_all_uses_with(p)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
