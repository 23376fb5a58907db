"""Activations onnx2torch lacks or restricts: Gelu (20), Mish (18, 22), Shrink (9), ThresholdedRelu (10, 22),
Swish (24), and Clip with min/max computed at run time (onnx2torch needs them constant)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import const, input_at, result


class Gelu(nn.Module):
    """ONNX Gelu: exact (erf) or tanh approximation."""

    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class Shrink(nn.Module):
    """ONNX Shrink: x - bias if x > lambd, x + bias if x < -lambd, else 0."""

    def __init__(self, lambd: float, bias: float) -> None:
        super().__init__()
        self.lambd, self.bias = lambd, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(x)
        return torch.where(x < -self.lambd, x + self.bias, torch.where(x > self.lambd, x - self.bias, zero))


class ThresholdedRelu(nn.Module):
    """ONNX ThresholdedRelu: x if x > alpha else 0."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > self.alpha, x, torch.zeros_like(x))


class Swish(nn.Module):
    """ONNX Swish: x * sigmoid(alpha * x)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.alpha * x)


class StaticClip(nn.Module):
    """Clip with constant bounds (either may be absent)."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.lo, self.hi)


class DynamicClip(nn.Module):
    """Clip whose min and/or max arrive as tensors at run time."""

    def __init__(self, has_min: bool, has_max: bool) -> None:
        super().__init__()
        self.has_min, self.has_max = has_min, has_max

    def forward(self, x: torch.Tensor, *bounds: torch.Tensor) -> torch.Tensor:
        it = iter(bounds)
        lo = next(it) if self.has_min else None
        hi = next(it) if self.has_max else None
        return torch.clamp(x, lo, hi)


@converter("Gelu", 20)
def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Gelu@20 (approximate = none | tanh)."""
    return result(Gelu(node.attributes.get("approximate", "none")), node)


@converter("Mish", 18, 22)
def convert_mish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Mish: x * tanh(softplus(x))."""
    return result(nn.Mish(), node)


@converter("Shrink", 9)
def convert_shrink(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Shrink (hard/soft shrink)."""
    return result(Shrink(float(node.attributes.get("lambd", 0.5)), float(node.attributes.get("bias", 0.0))), node)


@converter("ThresholdedRelu", 10, 22)
def convert_thresholded_relu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ThresholdedRelu."""
    return result(ThresholdedRelu(float(node.attributes.get("alpha", 1.0))), node)


@converter("Swish", 24)
def convert_swish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Swish@24."""
    return result(Swish(float(node.attributes.get("alpha", 1.0))), node)


@converter("Clip", 11, 12, 13, override=True)
def convert_clip(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Clip: ReLU/ReLU6/clamp when min/max are constant (either may be omitted), else clamp with run-time bounds."""
    lo, hi = input_at(node, 1), input_at(node, 2)
    lo_c, hi_c = const(node, graph, 1), const(node, graph, 2)
    if (not lo or lo_c is not None) and (not hi or hi_c is not None):
        a = float(lo_c.reshape(-1)[0]) if lo_c is not None else None
        b = float(hi_c.reshape(-1)[0]) if hi_c is not None else None
        if a == 0.0 and b is None:
            return result(nn.ReLU(), node, node.input_values[:1])
        if a == 0.0 and b == 6.0:
            return result(nn.ReLU6(), node, node.input_values[:1])
        return result(StaticClip(a, b), node, node.input_values[:1])
    inputs = [node.input_values[0]] + [n for n in (lo, hi) if n]
    return result(DynamicClip(bool(lo), bool(hi)), node, inputs)
