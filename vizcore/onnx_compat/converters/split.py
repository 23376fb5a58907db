"""Split@18, which adds `num_outputs` (chunks of ceil(n / k), the last one smaller)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import as_list, const, input_at, result


class OnnxSplit(nn.Module):
    """Split along `axis` into given sizes, or into `count` chunks of ceil(n / count)."""

    def __init__(self, axis: int, count: int, sizes: Sequence[int] | None, single: bool = False) -> None:
        super().__init__()
        self.axis, self.count, self.sizes = axis, count, None if sizes is None else list(sizes)
        self.single = single

    def forward(self, x: torch.Tensor, split: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        sizes = self.sizes if split is None else as_list(split)
        if sizes is None:
            n = x.shape[self.axis]
            chunk = -(-n // self.count)
            sizes = [min(chunk, n - i * chunk) for i in range(self.count)]
        parts = tuple(torch.split(x, sizes, dim=self.axis))
        return parts[0] if self.single else parts  # onnx2torch indexes only nodes with several outputs


@converter("Split", 18)
def convert_split(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Split@18: sizes from the `split` input, else `num_outputs` (or the output count) equal chunks."""
    axis = int(node.attributes.get("axis", 0))
    count = int(node.attributes.get("num_outputs", len(node.output_values)))
    single = len(node.output_values) == 1
    sizes = const(node, graph, 1)
    if input_at(node, 1) and sizes is None:
        return result(OnnxSplit(axis, count, None, single), node, node.input_values[:2])
    module = OnnxSplit(axis, count, None if sizes is None else as_list(sizes), single)
    return result(module, node, node.input_values[:1])
