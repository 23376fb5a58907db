"""Helpers shared by vizcore's converter modules: constant lookup, results, delegation to onnx2torch built-ins."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from .. import registry


def result(module: nn.Module, node: OnnxNode, inputs: Sequence[str] | None = None) -> OperationConverterResult:
    """A converter result: `module` called with `inputs` (default: all the node's inputs)."""
    ins = tuple(node.input_values) if inputs is None else tuple(inputs)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=ins,
                                                                                 outputs=node.output_values))


def input_at(node: OnnxNode, i: int) -> str:
    """The name of input `i`, or "" if the node has no such (or an omitted) input."""
    return node.input_values[i] if len(node.input_values) > i else ""


def const(node: OnnxNode, graph: OnnxGraph, i: int) -> np.ndarray | None:
    """Input `i` as a numpy array if it is an initializer or a Constant node's output, else None (also if absent)."""
    name = input_at(node, i)
    if not name:
        return None
    if name in graph.initializers:
        return graph.initializers[name].to_numpy()
    try:
        producer, _ = graph.value_as_node_output(name)
    except KeyError:
        return None
    if producer.operation_type != "Constant" or not producer.attributes:
        return None
    key, value = next(iter(producer.attributes.items()))
    if key == "value":
        return value.to_numpy()
    if key in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if key in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    return None


def split_inputs(node: OnnxNode, graph: OnnxGraph, slots: Sequence[tuple[int, str]]
                 ) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """Sort optional inputs into constants (read now, by name) and run-time inputs (passed on, by name).

    Returns (the call's input names, starting with input 0; the names of the run-time slots; the constants).
    """
    inputs, dynamic, values = [node.input_values[0]], [], {}
    for i, key in slots:
        if not input_at(node, i):
            continue
        c = const(node, graph, i)
        if c is None:
            inputs.append(input_at(node, i))
            dynamic.append(key)
        else:
            values[key] = c
    return inputs, dynamic, values


def ints_attr(node: OnnxNode, name: str, default: Sequence[int] | None = None) -> list[int] | None:
    """An integer-list attribute; onnx2torch leaves an empty list as a raw AttributeProto, read it as []."""
    value = node.attributes.get(name, default)
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, int):
        return [value]
    return list(getattr(value, "ints", []))


def rank_of(node: OnnxNode, graph: OnnxGraph, i: int = 0) -> int | None:
    """The rank of input `i` from shape inference's value_info, or None when shape inference did not reach it."""
    vi = graph.value_info.get(input_at(node, i))
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return None
    return len(vi.type.tensor_type.shape.dim)


def delegate(op_type: str, version: int) -> Callable[[OnnxNode, OnnxGraph], OperationConverterResult]:
    """A converter that hands the node to onnx2torch's own converter for `op_type@version`."""

    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        return registry.builtin(op_type, version)(node, graph)

    convert.__name__ = f"delegate_{op_type}_{version}"
    convert.__doc__ = f"onnx2torch's {op_type}@{version} converter (same semantics for this version)."
    return convert


def as_list(x: torch.Tensor | np.ndarray | Sequence[int]) -> list[int]:
    """Integers of a shape/axes/pads tensor as a Python list."""
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.tolist()]
    return [int(v) for v in np.asarray(x).reshape(-1).tolist()]


def same_pads(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
              lower: bool) -> list[tuple[int, int]]:
    """ONNX auto_pad SAME_UPPER/SAME_LOWER: (begin, end) padding per spatial dim so that out = ceil(in / stride)."""
    pairs = []
    for i, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-i // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - i)
        small, big = total // 2, total - total // 2
        pairs.append((big, small) if lower else (small, big))
    return pairs


def onnx_pairs(pads: Sequence[int] | None, rank: int) -> list[tuple[int, int]]:
    """ONNX `pads` [b1, b2, ..., e1, e2, ...] as (begin, end) per spatial dim."""
    pads = list(pads) if pads else [0] * (2 * rank)
    return list(zip(pads[:rank], pads[rank:]))


def torch_pad(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """(begin, end) pairs for the trailing dims, in F.pad's order (last dim first)."""
    out: list[int] = []
    for b, e in reversed(pairs):
        out.extend([b, e])
    return out


def spatial_attrs(node: OnnxNode, rank: int) -> tuple[list[int], list[int], str, list[tuple[int, int]]]:
    """strides, dilations, auto_pad and (begin, end) pads of a conv/pool node with `rank` spatial dims."""
    strides = ints_attr(node, "strides") or [1] * rank
    dilations = ints_attr(node, "dilations") or [1] * rank
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    auto_pad = auto_pad if isinstance(auto_pad, str) and auto_pad else "NOTSET"
    return strides, dilations, auto_pad, onnx_pairs(ints_attr(node, "pads"), rank)


def resolve_pads(x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                 auto_pad: str, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (begin, end) padding for input `x`: explicit pads, or SAME_* computed from x's spatial size."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(x.shape[2:], kernel, strides, dilations, auto_pad == "SAME_LOWER")
    if auto_pad == "VALID":
        return [(0, 0)] * len(kernel)
    return list(pairs)
