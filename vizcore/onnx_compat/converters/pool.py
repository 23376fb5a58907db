"""Pooling at every version: AveragePool/MaxPool (rank from kernel_shape, not shape inference; asymmetric pads;
auto_pad SAME_*; opsets 1, 19, 22) and GlobalAveragePool/GlobalMaxPool over the input's real rank.

onnx2torch's GlobalAveragePool reads the rank from shape inference and, when that is missing, silently averages
over the batch too (seen on swin_t); this one always uses the tensor's rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import ints_attr, resolve_pads, result, spatial_attrs, torch_pad

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class OnnxPool(nn.Module):
    """ONNX MaxPool/AveragePool with explicit or SAME padding; ONNX pads never take part in a max."""

    def __init__(self, kind: str, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                 auto_pad: str, pairs: Sequence[tuple[int, int]], ceil_mode: bool, count_include_pad: bool) -> None:
        super().__init__()
        self.kind, self.kernel, self.strides, self.dilations = kind, list(kernel), list(strides), list(dilations)
        self.auto_pad, self.pairs = auto_pad, list(pairs)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = len(self.kernel)
        pairs = resolve_pads(x, self.kernel, self.strides, self.dilations, self.auto_pad, self.pairs)
        symmetric = all(b == e and 2 * b <= k for (b, e), k in zip(pairs, self.kernel))
        padded = any(p for pair in pairs for p in pair)
        if self.kind == "max":
            if symmetric:
                return _MAX[rank](x, self.kernel, self.strides, [b for b, _ in pairs], self.dilations, self.ceil_mode)
            x = F.pad(x, torch_pad(pairs), value=float("-inf"))
            return _MAX[rank](x, self.kernel, self.strides, 0, self.dilations, self.ceil_mode)
        if any(d != 1 for d in self.dilations):
            raise NotImplementedError("AveragePool with dilations is not supported")
        if symmetric and (self.auto_pad not in ("SAME_UPPER", "SAME_LOWER") or not padded):
            return _AVG[rank](x, self.kernel, self.strides, [b for b, _ in pairs], self.ceil_mode,
                              self.count_include_pad)
        summed = _AVG[rank](F.pad(x, torch_pad(pairs)), self.kernel, self.strides, 0, self.ceil_mode, True)
        if self.count_include_pad:
            return summed
        ones = F.pad(torch.ones_like(x[:1, :1]), torch_pad(pairs))
        return summed / _AVG[rank](ones, self.kernel, self.strides, 0, self.ceil_mode, True)


class GlobalPool(nn.Module):
    """Mean or max over every dim after the channel dim, keeping them as size 1."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = list(range(2, x.dim()))
        if not dims:
            return x
        return x.mean(dim=dims, keepdim=True) if self.kind == "avg" else x.amax(dim=dims, keepdim=True)


@converter("MaxPool", 8, 10, 11, 12, override=True)
@converter("MaxPool", 1, 22)
@converter("AveragePool", 7, 10, 11, override=True)
@converter("AveragePool", 1, 19, 22)
def convert_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """MaxPool/AveragePool of spatial rank 1-3 with any padding rule."""
    kind = "max" if node.operation_type == "MaxPool" else "avg"
    if kind == "max" and len(node.output_values) > 1 and node.output_values[1]:
        raise NotImplementedError("MaxPool's Indices output is not supported")
    if int(node.attributes.get("storage_order", 0)) != 0:
        raise NotImplementedError("MaxPool with storage_order=1 is not supported")
    kernel = ints_attr(node, "kernel_shape") or []
    if len(kernel) not in (1, 2, 3):
        raise NotImplementedError(f"{node.operation_type} with {len(kernel)} spatial dims is not supported")
    strides, dilations, auto_pad, pairs = spatial_attrs(node, len(kernel))
    module = OnnxPool(kind, kernel, strides, dilations, auto_pad, pairs, bool(node.attributes.get("ceil_mode", 0)),
                      bool(node.attributes.get("count_include_pad", 0)))
    return result(module, node, node.input_values[:1])


@converter("GlobalAveragePool", 1, override=True)
@converter("GlobalAveragePool", 22)
@converter("GlobalMaxPool", 1, 22)
def convert_global_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """GlobalAveragePool/GlobalMaxPool over the input's actual rank."""
    return result(GlobalPool("avg" if node.operation_type == "GlobalAveragePool" else "max"), node)
