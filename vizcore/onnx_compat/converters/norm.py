"""Normalization layers: LayerNormalization that reads its shape from the tensor (onnx2torch reads shape
inference, which gives `normalized_shape=[0]` on swin_t), GroupNormalization (18, 21; absent from onnx2torch),
and the old BatchNormalization versions (6, 7) of opset-6 models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter, registry
from ._common import const, input_at, result


def _param(node: OnnxNode, graph: OnnxGraph, i: int) -> nn.Parameter | None:
    arr = const(node, graph, i)
    return None if arr is None else nn.Parameter(torch.from_numpy(arr.copy()))


class OnnxLayerNorm(nn.Module):
    """Normalize over dims `axis..` of the tensor itself; scale/bias broadcast as ONNX allows."""

    def __init__(self, axis: int, eps: float, weight: nn.Parameter | None, bias: nn.Parameter | None,
                 dynamic: bool) -> None:
        super().__init__()
        self.axis, self.eps, self.weight, self.bias, self.dynamic = axis, eps, weight, bias, dynamic

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if not self.dynamic else scale
        b = self.bias if not self.dynamic else bias
        shape = x.shape[self.axis % x.dim():]
        if (w is None or w.shape == shape) and (b is None or b.shape == shape):
            return F.layer_norm(x, shape, w, b, self.eps)
        y = F.layer_norm(x, shape, None, None, self.eps)
        y = y * w if w is not None else y
        return y + b if b is not None else y


@converter("LayerNormalization", 17, override=True)
def convert_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """LayerNormalization with the normalized shape taken from the input at run time."""
    if len(node.output_values) > 1 and any(node.output_values[1:]):
        raise NotImplementedError("LayerNormalization's Mean/InvStdDev outputs are not supported")
    axis = int(node.attributes.get("axis", -1))
    eps = float(node.attributes.get("epsilon", 1e-5))
    weight, bias = _param(node, graph, 1), _param(node, graph, 2)
    if weight is not None and (bias is not None or not input_at(node, 2)):
        return result(OnnxLayerNorm(axis, eps, weight, bias, False), node, node.input_values[:1])
    return result(OnnxLayerNorm(axis, eps, None, None, True), node)


class OnnxGroupNorm(nn.Module):
    """GroupNormalization; `per_group` scale/bias (opset 18) have one value per group, else one per channel."""

    def __init__(self, groups: int, eps: float, per_group: bool, weight: nn.Parameter | None,
                 bias: nn.Parameter | None) -> None:
        super().__init__()
        self.groups, self.eps, self.per_group, self.weight, self.bias = groups, eps, per_group, weight, bias

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if scale is None else scale
        b = self.bias if bias is None else bias
        c = x.shape[1]
        if self.per_group:
            w = w.repeat_interleave(c // self.groups)
            b = b.repeat_interleave(c // self.groups)
        return F.group_norm(x, self.groups, w, b, self.eps)


def _group_norm(per_group: bool):
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        groups = int(node.attributes["num_groups"])
        eps = float(node.attributes.get("epsilon", 1e-5))
        weight, bias = _param(node, graph, 1), _param(node, graph, 2)
        if weight is not None and bias is not None:
            return result(OnnxGroupNorm(groups, eps, per_group, weight, bias), node, node.input_values[:1])
        return result(OnnxGroupNorm(groups, eps, per_group, None, None), node)

    convert.__doc__ = "GroupNormalization@18 (scale per group)" if per_group else "GroupNormalization@21"
    return convert


converter("GroupNormalization", 18)(_group_norm(per_group=True))
converter("GroupNormalization", 21)(_group_norm(per_group=False))


@converter("BatchNormalization", 6, 7)
def convert_batch_norm_legacy(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """BatchNormalization@6/7 in inference: onnx2torch's @9 converter, unless `spatial=0` (per-element stats)."""
    if int(node.attributes.get("spatial", 1)) != 1:
        raise NotImplementedError("BatchNormalization with spatial=0 is not supported")
    return registry.builtin("BatchNormalization", 9)(node, graph)
