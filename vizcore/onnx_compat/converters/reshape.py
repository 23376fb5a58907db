"""Reshape at every version since 5, with `allowzero` (the dynamo exporter sets allowzero=1 on every Reshape,
which onnx2torch refuses) and with constant shapes baked in (no host sync, torch.compile-friendly)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import as_list, const, result


def target_shape(x: torch.Tensor, shape: Sequence[int], allowzero: bool) -> list[int]:
    """ONNX Reshape's shape rule: 0 copies the input's dim (unless allowzero), -1 is inferred."""
    if allowzero:
        return list(shape)
    return [int(x.shape[i]) if d == 0 else int(d) for i, d in enumerate(shape)]


class OnnxReshape(nn.Module):
    """ONNX Reshape; the shape is a constant list, or a tensor given at run time."""

    def __init__(self, shape: Sequence[int] | None, allowzero: bool) -> None:
        super().__init__()
        self.shape = None if shape is None else list(shape)
        self.allowzero = allowzero

    def forward(self, x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        dims = self.shape if shape is None else as_list(shape)
        return torch.reshape(x, target_shape(x, dims, self.allowzero))


@converter("Reshape", 5, 13, 14, override=True)
@converter("Reshape", 19, 21, 23)
def convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Reshape with a constant or computed shape, honouring `allowzero`."""
    allowzero = bool(node.attributes.get("allowzero", 0))
    shape = const(node, graph, 1)
    if shape is None:
        return result(OnnxReshape(None, allowzero), node, node.input_values[:2])
    return result(OnnxReshape(as_list(shape), allowzero), node, node.input_values[:1])
