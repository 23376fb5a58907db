"""Quantized graphs in float compute: QDQ (QuantizeLinear/DequantizeLinear), QOperator (QLinearConv, QLinearMatMul
and the com.microsoft QGemm/QLinearAdd/QLinearMul/QLinearGlobalAveragePool/QLinearConcat/QLinearSigmoid/
QLinearLeakyRelu that onnxruntime's quantizer writes) and dynamic quantization (DynamicQuantizeLinear, ConvInteger,
MatMulInteger).

Representation: a quantized tensor travels as a float32 tensor holding its *integer* values (q, not (q - zp) *
scale). Every op then computes exactly what the ONNX spec and onnxruntime compute: integer accumulations are exact
in float32 (below 2**24), a requantization is `clamp(round(acc * multiplier) + zp, qmin, qmax)` with the multiplier
formed in float32 in onnxruntime's order (x_scale * w_scale / y_scale), and ops that pass integers through
(MaxPool, Reshape, Flatten, Transpose) need no converter of their own. Dequantized floats would round differently
from onnxruntime's integer kernels and could not be told apart from a plain float tensor by an op like MaxPool.

Rounding is half-to-even (torch.round, as ONNX). Gradients: `round` is a straight-through estimator (forward
rounds, backward passes the gradient unchanged) and `clamp` passes it inside [qmin, qmax] only, so the input
gradient of a quantized model is finite and non-zero. Scales and zero points are buffers when constant, call
arguments otherwise (dynamic quantization computes them at run time: the scale passes the gradient of the
tensor's range, so even an objective on ConvInteger's integer output follows the chain rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import const, input_at, ints_attr, result, spatial_attrs, split_inputs
from .conv import OnnxConv

MS = "com.microsoft"
QDQ_VERSIONS = (10, 13, 19, 21, 23, 24, 25)
_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
           "int32": (-2 ** 31, 2 ** 31 - 1), "int4": (-8, 7), "uint4": (0, 15)}
_ELEM = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.INT16: "int16",
         TensorProto.UINT16: "uint16", TensorProto.INT32: "int32", TensorProto.INT4: "int4",
         TensorProto.UINT4: "uint4"}


# -- arithmetic ------------------------------------------------------------------------------------------------------
def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even; the gradient passes straight through (exact forward: round(x) + 0)."""
    return torch.round(x).detach() + (x - x.detach())


def fma(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """float32 x * y + z rounded once, as an FMA instruction: the product of a float32 integer below 2**16 and a
    float32 is exact in float64, so only the sum rounds (then to float32; on MPS, which has no float64, x * y + z)."""
    if x.device.type == "mps":
        return x * y + z
    return (x.double() * y.double() + z.double()).float()


Saturate = Callable[[torch.Tensor, float, float], torch.Tensor]


def requantize(y: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int,
               saturate: Saturate = torch.clamp) -> torch.Tensor:
    """`y` already divided by the output scale -> saturate(round(y) + zero_point), as float integers."""
    return saturate(round_ste(y) + zero_point, qmin, qmax)


class Saturating(nn.Module):
    """A module whose outputs saturate at [qmin, qmax] through `self.saturate` (torch.clamp): the render engine
    gives a copy of it the ReLU gradient override (engine/relu.py), since a Relu absorbed into a requantization
    (zero point at qmin) is this clamp."""

    saturate: Saturate = staticmethod(torch.clamp)


def along(t: torch.Tensor | float, axis: int, rank: int) -> torch.Tensor | float:
    """A scale/zero point shaped to broadcast along `axis` of a rank-`rank` tensor (per-channel), or as is."""
    if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.numel() == 1:
        return t.reshape(()) if isinstance(t, torch.Tensor) else t
    shape = [1] * rank
    shape[axis % rank] = -1
    return t.reshape(shape)


# -- node reading ----------------------------------------------------------------------------------------------------
def _elem_type(graph: OnnxGraph, name: str) -> str | None:
    vi = graph.value_info.get(name) if name else None
    if vi is None or not vi.type.HasField("tensor_type"):
        return None
    return _ELEM.get(vi.type.tensor_type.elem_type)


def qrange(node: OnnxNode, graph: OnnxGraph, zp_index: int, output: str | None = None) -> tuple[int, int]:
    """[qmin, qmax] of the quantized type: the zero point's dtype, else the output's, else `output_dtype`, else
    uint8 (the ONNX default when the zero point is omitted)."""
    zp = const(node, graph, zp_index)
    name = zp.dtype.name if zp is not None else (_elem_type(graph, input_at(node, zp_index))
                                                 or _elem_type(graph, output or ""))
    if name is None and node.attributes.get("output_dtype"):
        name = _ELEM.get(int(node.attributes["output_dtype"]))
    name = name or "uint8"
    if name not in _RANGES:
        raise NotImplementedError(f"quantized type {name} is not supported (int8/uint8/int16/uint16/int4/uint4)")
    return _RANGES[name]


def _no_blocks(node: OnnxNode) -> None:
    if int(node.attributes.get("block_size", 0) or 0):
        raise NotImplementedError("blocked quantization (block_size > 0) is not supported")


class Quantized(Saturating):
    """Base: constant inputs as float32 buffers (integers exact), the others as call arguments in `dynamic` order."""

    def __init__(self, consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__()
        self.dynamic, self.names = list(dynamic), list(consts)
        for k, v in consts.items():
            self.register_buffer(k, torch.from_numpy(np.asarray(v).astype(np.float32)))

    def params(self, extra: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every named input: buffers and the call's extra arguments, as float32."""
        vals = {k: getattr(self, k) for k in self.names}
        vals.update({k: v.float() for k, v in zip(self.dynamic, extra)})
        return vals


# -- QDQ ---------------------------------------------------------------------------------------------------------------
class QuantizeLinear(Quantized):
    """y = saturate(round(x / scale) + zero_point), per tensor or per `axis`."""

    def __init__(self, axis: int, qmin: int, qmax: int, consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.axis, self.qmin, self.qmax = axis, qmin, qmax

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p, x = self.params(extra), x.float()
        y = x / along(p["scale"], self.axis, x.dim())
        return requantize(y, along(p.get("zero_point", 0.0), self.axis, x.dim()), self.qmin, self.qmax, self.saturate)


class DequantizeLinear(Quantized):
    """y = (x - zero_point) * scale, per tensor or per `axis`."""

    def __init__(self, axis: int, consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.axis = axis

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p, x = self.params(extra), x.float()
        return (x - along(p.get("zero_point", 0.0), self.axis, x.dim())) * along(p["scale"], self.axis, x.dim())


@converter("QuantizeLinear", *QDQ_VERSIONS)
def convert_quantize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """QuantizeLinear (integer types; per tensor or per axis)."""
    _no_blocks(node)
    inputs, dynamic, consts = split_inputs(node, graph, [(1, "scale"), (2, "zero_point")])
    qmin, qmax = qrange(node, graph, 2, node.output_values[0])
    return result(QuantizeLinear(int(node.attributes.get("axis", 1)), qmin, qmax, consts, dynamic), node, inputs)


@converter("DequantizeLinear", *QDQ_VERSIONS)
def convert_dequantize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """DequantizeLinear (integer types; per tensor or per axis)."""
    _no_blocks(node)
    qrange(node, graph, 2, node.input_values[0])  # refuses float8 and other non-integer types
    inputs, dynamic, consts = split_inputs(node, graph, [(1, "scale"), (2, "zero_point")])
    return result(DequantizeLinear(int(node.attributes.get("axis", 1)), consts, dynamic), node, inputs)


# -- QOperator: conv and matmul -----------------------------------------------------------------------------------
def _conv(node: OnnxNode, graph: OnnxGraph, w_index: int) -> OnnxConv:
    w = const(node, graph, w_index)
    kernel = ints_attr(node, "kernel_shape") or (list(w.shape[2:]) if w is not None else None)
    if not kernel:
        raise NotImplementedError(f"{node.operation_type} with computed weights needs a kernel_shape")
    strides, dilations, auto_pad, pairs = spatial_attrs(node, len(kernel))
    return OnnxConv(kernel, strides, dilations, int(node.attributes.get("group", 1)), auto_pad, pairs)


class QLinearConv(Quantized):
    """Integer conv of (x - x_zp) and (w - w_zp) plus the int32 bias, requantized with x_scale * w_scale / y_scale."""

    def __init__(self, conv: OnnxConv, qmin: int, qmax: int, consts: dict[str, np.ndarray],
                 dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.conv, self.qmin, self.qmax = conv, qmin, qmax

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        w = p["w"] - along(p.get("w_zero_point", 0.0), 0, p["w"].dim())
        acc = self.conv(x.float() - p.get("x_zero_point", 0.0), w, None)
        if "bias" in p:
            acc = acc + along(p["bias"], 1, acc.dim())
        mult = p["x_scale"] * p["w_scale"] / p["y_scale"]
        return requantize(acc * along(mult, 1, acc.dim()), p.get("y_zero_point", 0.0), self.qmin, self.qmax,
                          self.saturate)


_QCONV_SLOTS = [(1, "x_scale"), (2, "x_zero_point"), (3, "w"), (4, "w_scale"), (5, "w_zero_point"), (6, "y_scale"),
                (7, "y_zero_point"), (8, "bias")]


@converter("QLinearConv", 10)
def convert_qlinear_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """QLinearConv (per-tensor or per-channel weights, optional int32 bias)."""
    inputs, dynamic, consts = split_inputs(node, graph, _QCONV_SLOTS)
    qmin, qmax = qrange(node, graph, 7, node.output_values[0])
    return result(QLinearConv(_conv(node, graph, 3), qmin, qmax, consts, dynamic), node, inputs)


class QLinearMatMul(Quantized):
    """(a - a_zp) @ (b - b_zp) requantized with a_scale * b_scale / y_scale (b per column allowed)."""

    def __init__(self, qmin: int, qmax: int, consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.qmin, self.qmax = qmin, qmax

    def forward(self, a: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        acc = torch.matmul(a.float() - p.get("a_zero_point", 0.0), p["b"] - p.get("b_zero_point", 0.0))
        mult = p["a_scale"] * p["b_scale"] / p["y_scale"]
        return requantize(acc * mult, p.get("y_zero_point", 0.0), self.qmin, self.qmax, self.saturate)


@converter("QLinearMatMul", 10, 21)
def convert_qlinear_matmul(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """QLinearMatMul."""
    slots = [(1, "a_scale"), (2, "a_zero_point"), (3, "b"), (4, "b_scale"), (5, "b_zero_point"), (6, "y_scale"),
             (7, "y_zero_point")]
    inputs, dynamic, consts = split_inputs(node, graph, slots)
    qmin, qmax = qrange(node, graph, 7, node.output_values[0])
    return result(QLinearMatMul(qmin, qmax, consts, dynamic), node, inputs)


class QGemm(Quantized):
    """com.microsoft QGemm: alpha * (A - a_zp)(B - b_zp) + C (int32, scale a_scale * b_scale); quantized output
    when y_scale is given, else float."""

    def __init__(self, trans_a: bool, trans_b: bool, alpha: float, qrange_: tuple[int, int] | None,
                 consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.trans_a, self.trans_b, self.alpha, self.qrange = trans_a, trans_b, alpha, qrange_

    def forward(self, a: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        a = a.float() - p.get("a_zero_point", 0.0)
        b = p["b"] - along(p.get("b_zero_point", 0.0), 0 if self.trans_b else 1, 2)
        acc = torch.matmul(a.t() if self.trans_a else a, b.t() if self.trans_b else b)
        if "c" in p:
            acc = acc + p["c"]
        if self.qrange is None:
            return acc * (self.alpha * p["a_scale"] * p["b_scale"])
        mult = self.alpha * p["a_scale"] * p["b_scale"] / p["y_scale"]
        return requantize(acc * mult, p.get("y_zero_point", 0.0), *self.qrange, self.saturate)


@converter("QGemm", 1, domain=MS)
def convert_qgemm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QGemm (quantized or float output)."""
    slots = [(1, "a_scale"), (2, "a_zero_point"), (3, "b"), (4, "b_scale"), (5, "b_zero_point"), (6, "c"),
             (7, "y_scale"), (8, "y_zero_point")]
    inputs, dynamic, consts = split_inputs(node, graph, slots)
    out_range = qrange(node, graph, 8, node.output_values[0]) if input_at(node, 7) else None
    module = QGemm(bool(node.attributes.get("transA", 0)), bool(node.attributes.get("transB", 0)),
                   float(node.attributes.get("alpha", 1.0)), out_range, consts, dynamic)
    return result(module, node, inputs)


# -- dynamic quantization ---------------------------------------------------------------------------------------------
class DynamicQuantizeLinear(Saturating):
    """uint8 quantization with the scale and zero point of this tensor's range (widened to include 0)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.float()
        lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
        scale = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / 255.0)  # the range's gradient flows too
        zp = torch.round(torch.clamp(0.0 - lo / scale, 0.0, 255.0)).detach()
        return requantize(x / scale, zp, 0, 255, self.saturate), scale, zp


@converter("DynamicQuantizeLinear", 11)
def convert_dynamic_quantize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """DynamicQuantizeLinear: (y, y_scale, y_zero_point)."""
    return result(DynamicQuantizeLinear(), node)


class ConvInteger(Quantized):
    """int32 conv of (x - x_zp) and (w - w_zp): float integers."""

    def __init__(self, conv: OnnxConv, consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.conv = conv

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        w = p["w"] - along(p.get("w_zero_point", 0.0), 0, p["w"].dim())
        return self.conv(x.float() - p.get("x_zero_point", 0.0), w, None)


@converter("ConvInteger", 10)
def convert_conv_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ConvInteger (zero points scalar; the weight's may be per output channel)."""
    inputs, dynamic, consts = split_inputs(node, graph, [(1, "w"), (2, "x_zero_point"), (3, "w_zero_point")])
    return result(ConvInteger(_conv(node, graph, 1), consts, dynamic), node, inputs)


class MatMulInteger(Quantized):
    """int32 (A - a_zp) @ (B - b_zp): float integers (a_zp per row, b_zp per column allowed)."""

    def forward(self, a: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        azp = p.get("a_zero_point", 0.0)
        if isinstance(azp, torch.Tensor) and azp.numel() > 1:
            azp = azp.reshape(-1, 1)
        return torch.matmul(a.float() - azp, p["b"] - p.get("b_zero_point", 0.0))


@converter("MatMulInteger", 10)
def convert_matmul_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """MatMulInteger."""
    inputs, dynamic, consts = split_inputs(node, graph, [(1, "b"), (2, "a_zero_point"), (3, "b_zero_point")])
    return result(MatMulInteger(consts, dynamic), node, inputs)


# -- com.microsoft QLinear element-wise and pooling ops ---------------------------------------------------------------
class QLinearBinary(Quantized):
    """QLinearAdd / QLinearMul in onnxruntime's arithmetic: real-valued ratios of the scales, then requantize."""

    def __init__(self, mul: bool, qmin: int, qmax: int, consts: dict[str, np.ndarray],
                 dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.mul, self.qmin, self.qmax = mul, qmin, qmax

    def forward(self, a: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        azp, bzp, czp = (p.get(k, torch.zeros(())) for k in ("a_zero_point", "b_zero_point", "c_zero_point"))
        a, b = a.float(), p["b"]
        if self.mul:
            y = (a - azp) * (b - bzp) * (p["a_scale"] * p["b_scale"] / p["c_scale"])
            return requantize(y, czp, self.qmin, self.qmax, self.saturate)
        # MLAS (x86 AVX2, compiled with FMA contraction): the zero points folded into one constant, then
        # fma(a, ratio_a, fma(b, ratio_b, fixed)); bit-exact against onnxruntime on 20 M random uint8/int8 sums
        ratio_a, ratio_b = p["a_scale"] / p["c_scale"], p["b_scale"] / p["c_scale"]
        fixed = czp - fma(azp, ratio_a, ratio_b * bzp)
        return self.saturate(round_ste(fma(a, ratio_a, fma(b, ratio_b, fixed))), self.qmin, self.qmax)


def _binary(mul: bool) -> Callable[[OnnxNode, OnnxGraph], OperationConverterResult]:
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        slots = [(1, "a_scale"), (2, "a_zero_point"), (3, "b"), (4, "b_scale"), (5, "b_zero_point"),
                 (6, "c_scale"), (7, "c_zero_point")]
        inputs, dynamic, consts = split_inputs(node, graph, slots)
        qmin, qmax = qrange(node, graph, 7, node.output_values[0])
        return result(QLinearBinary(mul, qmin, qmax, consts, dynamic), node, inputs)

    convert.__doc__ = f"com.microsoft QLinear{'Mul' if mul else 'Add'}"
    return convert


converter("QLinearAdd", 1, domain=MS)(_binary(mul=False))
converter("QLinearMul", 1, domain=MS)(_binary(mul=True))


class QLinearUnary(Quantized):
    """y = quantize(f(dequantize(x))): onnxruntime builds its lookup table the same way (QLinearSigmoid, ...)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], qmin: int, qmax: int,
                 consts: dict[str, np.ndarray], dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.fn, self.qmin, self.qmax = fn, qmin, qmax

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        real = (x.float() - p.get("x_zero_point", 0.0)) * p["x_scale"]
        return requantize(self.fn(real) / p["y_scale"], p.get("y_zero_point", 0.0), self.qmin, self.qmax, self.saturate)


_UNARY_SLOTS = [(1, "x_scale"), (2, "x_zero_point"), (3, "y_scale"), (4, "y_zero_point")]


@converter("QLinearSigmoid", 1, domain=MS)
@converter("QLinearLeakyRelu", 1, domain=MS)
def convert_qlinear_unary(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearSigmoid / QLinearLeakyRelu (alpha)."""
    if node.operation_type == "QLinearSigmoid":
        fn: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
    else:
        alpha = float(node.attributes.get("alpha", 0.01))

        def fn(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, alpha)
    inputs, dynamic, consts = split_inputs(node, graph, _UNARY_SLOTS)
    qmin, qmax = qrange(node, graph, 4, node.output_values[0])
    return result(QLinearUnary(fn, qmin, qmax, consts, dynamic), node, inputs)


class QLinearGlobalAveragePool(Quantized):
    """Mean of (x - x_zp) over the spatial dims, requantized with x_scale / y_scale (NCHW or channels_last)."""

    def __init__(self, channels_last: bool, qmin: int, qmax: int, consts: dict[str, np.ndarray],
                 dynamic: Sequence[str]) -> None:
        super().__init__(consts, dynamic)
        self.channels_last, self.qmin, self.qmax = channels_last, qmin, qmax

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        p = self.params(extra)
        dims = tuple(range(1, x.dim() - 1)) if self.channels_last else tuple(range(2, x.dim()))
        mean = (x.float() - p.get("x_zero_point", 0.0)).mean(dim=dims, keepdim=True)
        return requantize(mean * (p["x_scale"] / p["y_scale"]), p.get("y_zero_point", 0.0), self.qmin, self.qmax,
                          self.saturate)


@converter("QLinearGlobalAveragePool", 1, domain=MS)
def convert_qlinear_gap(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearGlobalAveragePool."""
    inputs, dynamic, consts = split_inputs(node, graph, _UNARY_SLOTS)
    qmin, qmax = qrange(node, graph, 4, node.output_values[0])
    module = QLinearGlobalAveragePool(bool(node.attributes.get("channels_last", 0)), qmin, qmax, consts, dynamic)
    return result(module, node, inputs)


class QLinearConcat(Saturating):
    """Concat of inputs each requantized to the output's scale and zero point (dequantize, then quantize)."""

    def __init__(self, axis: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.axis, self.qmin, self.qmax = axis, qmin, qmax

    def forward(self, y_scale: torch.Tensor, y_zp: torch.Tensor, *triples: torch.Tensor) -> torch.Tensor:
        parts = []
        for i in range(0, len(triples), 3):
            x, scale, zp = (t.float() for t in triples[i:i + 3])
            parts.append(requantize((x - zp) * scale / y_scale.float(), y_zp.float(), self.qmin, self.qmax,
                                    self.saturate))
        return torch.cat(parts, dim=self.axis)


@converter("QLinearConcat", 1, domain=MS)
def convert_qlinear_concat(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearConcat: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input."""
    if any(not n for n in node.input_values) or len(node.input_values) < 5 or (len(node.input_values) - 2) % 3:
        raise NotImplementedError("QLinearConcat needs every scale and zero point given")
    qmin, qmax = qrange(node, graph, 1, node.output_values[0])
    return result(QLinearConcat(int(node.attributes["axis"]), qmin, qmax), node)
