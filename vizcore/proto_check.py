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
