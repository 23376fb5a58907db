"""com.microsoft (onnxruntime contrib) float ops that onnxruntime's optimizers write into saved models: FusedConv,
FusedGemm, Gelu, FastGelu, BiasGelu, QuickGelu and SkipLayerNormalization (formulas from onnxruntime's contrib
op definitions). The quantized contrib ops live in quantized.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import const, input_at, ints_attr, result, spatial_attrs
from .conv import OnnxConv

MS = "com.microsoft"
Act = Callable[[torch.Tensor], torch.Tensor]


def activation(name: str, params: Sequence[float]) -> Act:
    """The fused activation of FusedConv/FusedGemm by onnxruntime's name, with its parameters."""
    p = list(params)
    table: dict[str, Act] = {
        "": lambda t: t, "Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid,
        "LeakyRelu": lambda t: F.leaky_relu(t, p[0] if p else 0.01),
        "Clip": lambda t: torch.clamp(t, p[0] if p else None, p[1] if len(p) > 1 else None),
        "HardSigmoid": lambda t: torch.clamp(t * (p[0] if p else 0.2) + (p[1] if len(p) > 1 else 0.5), 0, 1),
        "Elu": lambda t: F.elu(t, p[0] if p else 1.0),
        "Selu": lambda t: (p[1] if len(p) > 1 else 1.0507) * torch.where(t > 0, t, (p[0] if p else 1.67326)
                                                                       * torch.expm1(t)),
        "ThresholdedRelu": lambda t: torch.where(t > (p[0] if p else 1.0), t, torch.zeros_like(t)),
        "Softplus": F.softplus, "Softsign": F.softsign,
    }
    if name not in table:
        raise NotImplementedError(f"fused activation {name!r} is not supported")
    return table[name]


class FusedConv(nn.Module):
    """act(conv(x, w, b) + z)."""

    def __init__(self, conv: OnnxConv, act: Act, dynamic: Sequence[str]) -> None:
        super().__init__()
        self.conv, self.act, self.dynamic = conv, act, list(dynamic)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        got = dict(zip(self.dynamic, extra))
        y = self.conv(x, got.get("w"), got.get("b"))
        return self.act(y + got["z"] if "z" in got else y)


def _tensor(node: OnnxNode, graph: OnnxGraph, i: int) -> torch.Tensor | None:
    arr = const(node, graph, i)
    return None if arr is None else torch.from_numpy(arr.copy())


@converter("FusedConv", 1, domain=MS)
def convert_fused_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft FusedConv: Conv (+ optional sum input Z) + activation."""
    w, b = _tensor(node, graph, 1), _tensor(node, graph, 2)
    kernel = ints_attr(node, "kernel_shape") or (list(w.shape[2:]) if w is not None else None)
    if not kernel:
        raise NotImplementedError("FusedConv with computed weights needs a kernel_shape")
    strides, dilations, auto_pad, pairs = spatial_attrs(node, len(kernel))
    inputs, dynamic = [node.input_values[0]], []
    for i, key, value in ((1, "w", w), (2, "b", b), (3, "z", None)):
        if input_at(node, i) and value is None:
            inputs.append(input_at(node, i))
            dynamic.append(key)
    conv = OnnxConv(kernel, strides, dilations, int(node.attributes.get("group", 1)), auto_pad, pairs, w, b)
    act = activation(str(node.attributes.get("activation", "")), node.attributes.get("activation_params", []) or [])
    return result(FusedConv(conv, act, dynamic), node, inputs)


class FusedGemm(nn.Module):
    """act(alpha * A' B' + beta * C)."""

    def __init__(self, trans_a: bool, trans_b: bool, alpha: float, beta: float, act: Act) -> None:
        super().__init__()
        self.trans_a, self.trans_b, self.alpha, self.beta, self.act = trans_a, trans_b, alpha, beta, act

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        y = self.alpha * torch.matmul(a.t() if self.trans_a else a, b.t() if self.trans_b else b)
        return self.act(y + self.beta * c if c is not None else y)


@converter("FusedGemm", 1, domain=MS)
def convert_fused_gemm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft FusedGemm: Gemm + activation (activation_alpha/beta/gamma as onnxruntime passes them)."""
    name = str(node.attributes.get("activation", ""))
    a = node.attributes
    params = {"LeakyRelu": [a.get("activation_alpha", 0.01)], "HardSigmoid": [a.get("activation_alpha", 0.2),
                                                                               a.get("activation_beta", 0.5)],
              "Elu": [a.get("activation_alpha", 1.0)], "ThresholdedRelu": [a.get("activation_alpha", 1.0)],
              "Selu": [a.get("activation_alpha", 1.67326), a.get("activation_gamma", 1.0507)]}.get(name, [])
    module = FusedGemm(bool(a.get("transA", 0)), bool(a.get("transB", 0)), float(a.get("alpha", 1.0)),
                       float(a.get("beta", 1.0)), activation(name, [float(v) for v in params]))
    return result(module, node, [n for n in node.input_values if n])


class Elementwise(nn.Module):
    """fn(x + bias) with an optional second input (bias)."""

    def __init__(self, fn: Act) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x + bias if bias is not None else x)


def _fast_gelu(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * t * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * t * t * t)))


@converter("Gelu", 1, domain=MS)
@converter("BiasGelu", 1, domain=MS)
@converter("FastGelu", 1, domain=MS)
def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft Gelu (erf), BiasGelu (erf of A + B) and FastGelu (tanh approximation, optional bias)."""
    fn: Act = _fast_gelu if node.operation_type == "FastGelu" else F.gelu
    return result(Elementwise(fn), node, [n for n in node.input_values if n])


@converter("QuickGelu", 1, domain=MS)
def convert_quick_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QuickGelu: x * sigmoid(alpha * x)."""
    alpha = float(node.attributes.get("alpha", 1.702))
    return result(Elementwise(lambda t: t * torch.sigmoid(alpha * t)), node, node.input_values[:1])


class SkipLayerNorm(nn.Module):
    """LayerNorm(input + skip + bias) * gamma + beta over the last dim; optional mean, 1/std and the sum."""

    def __init__(self, eps: float, slots: Sequence[str], outputs: int) -> None:
        super().__init__()
        self.eps, self.slots, self.outputs = eps, list(slots), outputs

    def forward(self, x: torch.Tensor, skip: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor | tuple:
        got = dict(zip(self.slots, rest))
        s = x + skip + got["bias"] if "bias" in got else x + skip
        mean = s.mean(-1, keepdim=True)
        inv_std = torch.rsqrt(((s - mean) ** 2).mean(-1, keepdim=True) + self.eps)
        y = (s - mean) * inv_std * got["gamma"]
        y = y + got["beta"] if "beta" in got else y
        return y if self.outputs == 1 else (y, mean, inv_std, s)[:self.outputs]


@converter("SkipLayerNormalization", 1, domain=MS)
def convert_skip_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft SkipLayerNormalization (input, skip, gamma, beta?, bias?)."""
    if any(not o for o in node.output_values):
        raise NotImplementedError("SkipLayerNormalization with an omitted middle output is not supported")
    slots = [k for i, k in ((2, "gamma"), (3, "beta"), (4, "bias")) if input_at(node, i)]
    inputs = list(node.input_values[:2]) + [input_at(node, i) for i in (2, 3, 4) if input_at(node, i)]
    outputs = len(node.output_values)
    return result(SkipLayerNorm(float(node.attributes.get("epsilon", 1e-12)), slots, outputs), node, inputs)
