"""Sequence ops (opset 11+) as Python lists of tensors: SequenceEmpty/Construct/Insert/At/Erase/Length,
SplitToSequence and ConcatFromSequence. Gradients flow through the tensors they hold."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import as_list, const, input_at, result


def _position(p: torch.Tensor | None, default: int) -> int:
    return default if p is None else int(p.reshape(-1)[0])


class SequenceOp(nn.Module):
    """One list operation; `op` names it (the ONNX op type)."""

    def __init__(self, op: str, axis: int = 0, flag: int = 0) -> None:
        super().__init__()
        self.op, self.axis, self.flag = op, axis, flag

    def forward(self, *args: object) -> object:
        op = self.op
        if op == "SequenceEmpty":
            return []
        if op == "SequenceConstruct":
            return list(args)
        seq = list(args[0])  # type: ignore[arg-type]
        if op == "SequenceInsert":
            pos = args[2] if len(args) > 2 else None
        else:
            pos = args[1] if len(args) > 1 else None
        if op == "SequenceInsert":
            i = _position(pos, len(seq))  # type: ignore[arg-type]
            seq.insert(i if i >= 0 else i + len(seq), args[1])
            return seq
        if op == "SequenceAt":
            return seq[_position(pos, 0)]  # type: ignore[arg-type]
        if op == "SequenceErase":
            del seq[_position(pos, -1)]  # type: ignore[arg-type]
            return seq
        if op == "SequenceLength":
            return torch.tensor(len(seq), dtype=torch.int64)
        if op == "ConcatFromSequence":
            return torch.stack(seq, dim=self.axis) if self.flag else torch.cat(seq, dim=self.axis)
        raise NotImplementedError(op)


class SplitToSequence(nn.Module):
    """Split into a list: size-1 pieces (squeezed unless keepdims), pieces of a scalar size, or given sizes."""

    def __init__(self, axis: int, keepdims: bool, split: list[int] | int | None) -> None:
        super().__init__()
        self.axis, self.keepdims, self.split = axis, keepdims, split

    def forward(self, x: torch.Tensor, split: torch.Tensor | None = None) -> list[torch.Tensor]:
        s: list[int] | int | None = self.split
        if split is not None:
            s = int(split) if split.dim() == 0 else as_list(split)
        if s is None:
            parts = list(torch.split(x, 1, dim=self.axis))
            return parts if self.keepdims else [p.squeeze(self.axis) for p in parts]
        return list(torch.split(x, s, dim=self.axis))


@converter("SequenceEmpty", 11)
@converter("SequenceConstruct", 11)
@converter("SequenceInsert", 11)
@converter("SequenceAt", 11)
@converter("SequenceErase", 11)
@converter("SequenceLength", 11)
@converter("ConcatFromSequence", 11)
def convert_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """The list-manipulating sequence ops."""
    op = node.operation_type
    axis = int(node.attributes.get("axis", 0))
    return result(SequenceOp(op, axis, int(node.attributes.get("new_axis", 0))), node,
                  [i for i in node.input_values if i])


@converter("SplitToSequence", 11)
def convert_split_to_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SplitToSequence with a constant or run-time `split`."""
    axis = int(node.attributes.get("axis", 0))
    keepdims = bool(node.attributes.get("keepdims", 1))
    if not input_at(node, 1):
        return result(SplitToSequence(axis, keepdims, None), node, node.input_values[:1])
    c = const(node, graph, 1)
    if c is None:
        return result(SplitToSequence(axis, keepdims, None), node, node.input_values[:2])
    split = int(c) if c.ndim == 0 else as_list(c)
    return result(SplitToSequence(axis, keepdims, split), node, node.input_values[:1])
