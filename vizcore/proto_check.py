"""Untrusted ONNX protos made safe to load: text fields repaired, every external-data reference found, metadata
values parsed with bounds.

Nothing here converts or runs the model; `vizcore.onnxfile.read` calls it between parsing and checking.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

from onnx import TensorProto

from .text import as_text

#: Longest `pkg.torch.onnx.name_scopes` value parsed (a real one is a few hundred characters): longer is ignored.
MAX_SCOPES_CHARS = 8192
#: Largest `vizcore.size` metadata value honoured (a side in pixels).
MAX_META_SIZE = 8192


def _is_repeated(fd: Any) -> bool:
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED


def repair_text(proto: Any) -> int:
    """Replace string fields that are not valid UTF-8 (protobuf returns them as bytes) by `\\xNN`-escaped text.

    Tensor names change consistently everywhere they occur, so the graph stays connected. Returns how many fields
    were repaired.
    """
    fixed = 0
    stack = [proto]
    while stack:
        msg = stack.pop()
        for fd, value in msg.ListFields():
            if fd.type == fd.TYPE_STRING:
                if _is_repeated(fd):
                    if any(isinstance(v, bytes) for v in value):
                        items = [as_text(v) for v in value]
                        del value[:]
                        value.extend(items)
                        fixed += 1
                elif isinstance(value, bytes):
                    setattr(msg, fd.name, as_text(value))
                    fixed += 1
            elif fd.type == fd.TYPE_MESSAGE:
                if _is_repeated(fd):
                    stack.extend(value)
                else:
                    stack.append(value)
    return fixed


def all_tensors(proto: Any) -> Iterator[tuple[str, TensorProto]]:
    """Every TensorProto in the model, with a description of where it is: initializers, sparse initializers'
    values and indices, attribute tensors and sparse tensors, in the main graph, subgraphs and functions."""
    stack: list[tuple[str, Any]] = [("", proto)]
    while stack:
        where, msg = stack.pop()
        if isinstance(msg, TensorProto):
            yield where or f"tensor {msg.name!r}", msg
            continue
        kind = type(msg).__name__
        for fd, value in msg.ListFields():
            if fd.type != fd.TYPE_MESSAGE:
                continue
            items = value if _is_repeated(fd) else [value]
            for item in items:
                if kind == "SparseTensorProto":
                    name = msg.values.name or msg.indices.name
                    stack.append((f"sparse tensor {name!r} ({fd.name})", item))
                else:
                    stack.append((where if kind == "TensorProto" else "", item))


def external_tensors(proto: Any) -> Iterator[tuple[str, TensorProto]]:
    """`all_tensors` whose data lives in an external file."""
    for where, t in all_tensors(proto):
        if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
            yield where, t


def name_scopes(value: Any) -> list[str] | None:
    """A `pkg.torch.onnx.name_scopes` value as a list of strings, or None when it is anything else (too long,
    not a literal, not a list, not all strings): the metadata is then ignored."""
    if not isinstance(value, str) or len(value) > MAX_SCOPES_CHARS:
        return None
    try:
        scopes = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return None
    return scopes


def metadata_size(value: str | None) -> tuple[int | None, str | None]:
    """`vizcore.size` metadata as (side, None), or (None, warning) when it is not a positive int <= MAX_META_SIZE."""
    if value is None:
        return None, None
    text = value.strip()
    if text.isdigit() and len(text) <= 6 and 0 < int(text) <= MAX_META_SIZE:
        return int(text), None
    shown = value if len(value) <= 40 else value[:40] + "…"
    return None, (f"metadata vizcore.size = {shown!r} is not a size in pixels (1..{MAX_META_SIZE}); ignored, "
                  "the default is used (pass --size to choose)")


def list_initializers_as_inputs(proto: Any) -> str | None:
    """IR version < 4 requires every initializer to be a graph input; old exporters (and hand-edited files) often
    left them out, which onnx's checker rejects and onnxruntime tolerates. Add the missing graph inputs (in place,
    as the IR 3 files that list them have it) and say so in one line; None when nothing was missing."""
    from onnx import helper

    if not 0 < proto.ir_version < 4:
        return None
    listed = {vi.name for vi in proto.graph.input}
    missing = [t for t in proto.graph.initializer if t.name not in listed]
    if not missing:
        return None
    proto.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in missing)
    return (f"IR version {proto.ir_version} file with {len(missing)} initializer{'s' if len(missing) != 1 else ''} "
            "not listed as graph inputs (onnxruntime tolerates it): listed them in memory, the file is unchanged")


#: Largest tensor a node may make from constants alone (values): 256 Mi, 1 GiB of float32.
MAX_CONSTANT_VALUES = 1 << 28


def _constants(graph: Any) -> dict[str, Any]:
    """Small constant values by name: initializers and Constant nodes of the graph (scalars and short vectors)."""
    from onnx import numpy_helper

    out = {}
    for t in graph.initializer:
        if len(t.dims) <= 1 and (not t.dims or t.dims[0] <= 8):
            out[t.name] = numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output and n.attribute and n.attribute[0].name == "value":
            t = n.attribute[0].t
            if len(t.dims) <= 1 and (not t.dims or t.dims[0] <= 8):
                out[n.output[0]] = numpy_helper.to_array(t)
    return out


def huge_constant_node(graph: Any) -> tuple[str, str, int] | None:
    """(node name, op, values) of the first Range, ConstantOfShape, Expand or Tile whose size-giving inputs are
    constants and whose output would hold more than MAX_CONSTANT_VALUES: shape inference, constant folding or
    onnxruntime would try to make it (`Range(0, 1e13, 1)` hangs them), so the reader refuses it first."""
    import math

    consts = _constants(graph)
    for n in graph.node:
        ins = list(n.input)
        count = None
        if n.op_type == "Range" and len(ins) == 3 and all(i in consts for i in ins):
            start, limit, delta = (float(consts[i].reshape(-1)[0]) for i in ins)
            count = math.ceil((limit - start) / delta) if delta and math.isfinite(limit - start) else 0
        elif n.op_type in ("ConstantOfShape", "Expand") and len(ins) >= (1 if n.op_type == "ConstantOfShape" else 2):
            shape = consts.get(ins[0] if n.op_type == "ConstantOfShape" else ins[1])
            count = math.prod(int(v) for v in shape.reshape(-1)) if shape is not None else None
        elif n.op_type == "Tile" and len(ins) == 2 and ins[1] in consts:
            count = math.prod(int(v) for v in consts[ins[1]].reshape(-1))
        if count is not None and count > MAX_CONSTANT_VALUES:
            return n.name or "(unnamed)", n.op_type, int(count)
    return None

