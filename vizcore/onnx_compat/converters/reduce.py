"""Reduce* at opsets 18/20, where `axes` moved from an attribute to an optional input (onnx2torch stops at 13)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import as_list, const, input_at, result


def _reduce(op: str, x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    if op == "ReduceMean":
        return x.mean(dim=dims, keepdim=keep)
    if op == "ReduceSum":
        return x.sum(dim=dims, keepdim=keep)
    if op == "ReduceMax":
        return x.amax(dim=dims, keepdim=keep)
    if op == "ReduceMin":
        return x.amin(dim=dims, keepdim=keep)
    if op == "ReduceProd":
        for d in sorted(dims, reverse=True):
            x = x.prod(dim=d, keepdim=keep)
        return x
    if op == "ReduceL1":
        return x.abs().sum(dim=dims, keepdim=keep)
    if op == "ReduceL2":
        return torch.linalg.vector_norm(x, 2, dim=dims, keepdim=keep)
    if op == "ReduceSumSquare":
        return (x * x).sum(dim=dims, keepdim=keep)
    if op == "ReduceLogSum":
        return torch.log(x.sum(dim=dims, keepdim=keep))
    if op == "ReduceLogSumExp":
        return torch.logsumexp(x, dim=dims, keepdim=keep)
    raise NotImplementedError(op)


class OnnxReduce(nn.Module):
    """One ONNX reduction with constant axes (or axes given at run time as a second input)."""

    def __init__(self, op: str, axes: Sequence[int] | None, keepdims: bool, noop_with_empty_axes: bool) -> None:
        super().__init__()
        self.op, self.axes, self.keepdims, self.noop = op, None if axes is None else list(axes), keepdims, \
            noop_with_empty_axes

    def forward(self, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = self.axes if axes is None else as_list(axes)
        if not dims:
            if self.noop:
                return x
            dims = list(range(x.dim()))
        if x.dim() == 0:
            return _reduce(self.op, x.reshape(1), [0], False)
        dims = sorted({d % x.dim() for d in dims})
        return _reduce(self.op, x, dims, self.keepdims)


_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")


def convert_reduce(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Reduce* with axes as an optional input (constant axes are baked in)."""
    keepdims = bool(node.attributes.get("keepdims", 1))
    noop = bool(node.attributes.get("noop_with_empty_axes", 0))
    name = input_at(node, 1)
    axes = const(node, graph, 1)
    if name and axes is None:
        return result(OnnxReduce(node.operation_type, None, keepdims, noop), node, node.input_values[:2])
    module = OnnxReduce(node.operation_type, [] if axes is None else as_list(axes), keepdims, noop)
    return result(module, node, node.input_values[:1])


for _op in _OPS:
    if _op == "ReduceSum":
        continue  # onnx2torch converts ReduceSum@13, whose axes are already an input
    converter(_op, 18)(convert_reduce)
converter("ReduceMax", 20)(convert_reduce)
converter("ReduceMin", 20)(convert_reduce)
