"""Slice (1-13) and Flatten (1-23), exactly as ONNX defines them.

onnx2torch's Slice@1/9 crashes on its own attributes, its Slice@10+ indexes with a list (deprecated in torch,
an error in a future release) and reads starts/ends back from the device on every call; its Flatten fails on
rank-1 inputs. Constant starts/ends/axes/steps are baked in here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import as_list, ints_attr, result, split_inputs


def slice_tensor(x: torch.Tensor, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
                 steps: Sequence[int] | None) -> torch.Tensor:
    """ONNX Slice: clamp each (start, end) to the axis per the spec; negative steps walk backwards."""
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    index: list[slice] = [slice(None)] * x.dim()
    backwards = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        n = x.shape[axis]
        start = start + n if start < 0 else start
        end = end + n if end < 0 else end
        if step > 0:
            index[axis] = slice(min(max(start, 0), n), min(max(end, 0), n), step)
        else:
            backwards.append((axis, min(max(start, 0), n - 1), min(max(end, -1), n - 1), step))
    x = x[tuple(index)]
    for axis, start, end, step in backwards:
        x = x.index_select(axis, torch.arange(start, end, step, device=x.device))
    return x


class OnnxSlice(nn.Module):
    """ONNX Slice with constant or run-time starts/ends/axes/steps."""

    def __init__(self, starts: Sequence[int] | None, ends: Sequence[int] | None, axes: Sequence[int] | None,
                 steps: Sequence[int] | None, dynamic: Sequence[str]) -> None:
        super().__init__()
        self.starts, self.ends = None if starts is None else list(starts), None if ends is None else list(ends)
        self.axes, self.steps = None if axes is None else list(axes), None if steps is None else list(steps)
        self.dynamic = tuple(dynamic)

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        given = {k: as_list(v) for k, v in zip(self.dynamic, args) if v is not None}
        return slice_tensor(x, given.get("starts", self.starts), given.get("ends", self.ends),
                            given.get("axes", self.axes), given.get("steps", self.steps))


@converter("Slice", 9, 10, 11, 13, override=True)
@converter("Slice", 1)
def convert_slice(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Slice: attributes (1, 9) or inputs (10+); constant inputs are baked in."""
    if "starts" in node.attributes:
        module = OnnxSlice(ints_attr(node, "starts"), ints_attr(node, "ends"), ints_attr(node, "axes"), None, ())
        return result(module, node, node.input_values[:1])
    inputs, dynamic, consts = split_inputs(node, graph, ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")))
    values = {k: as_list(v) for k, v in consts.items()}
    module = OnnxSlice(values.get("starts"), values.get("ends"), values.get("axes"), values.get("steps"), dynamic)
    return result(module, node, inputs)


class OnnxFlatten(nn.Module):
    """ONNX Flatten: (prod(dims before axis), prod(dims from axis)), for any rank."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis + x.dim() if self.axis < 0 else self.axis
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@converter("Flatten", 9, 11, 13, override=True)
@converter("Flatten", 1, 21, 23)
def convert_flatten(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Flatten to 2-D around `axis`."""
    return result(OnnxFlatten(int(node.attributes.get("axis", 1))), node)
