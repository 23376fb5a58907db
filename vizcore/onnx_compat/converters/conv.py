"""Conv and ConvTranspose at every version, including what onnx2torch leaves out: opset 22, auto_pad SAME_*,
weights that are not initializers, asymmetric ConvTranspose pads and `output_shape`.

The common case (initializer weights, explicit pads) still goes to onnx2torch's converter, so a Conv layer stays
an `nn.Conv2d` whose weights `model.module.get_submodule(layer.fx_name)` exposes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter, registry
from ._common import const, input_at, ints_attr, rank_of, resolve_pads, result, spatial_attrs, torch_pad

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class OnnxConv(nn.Module):
    """ONNX Conv with any padding rule; weight/bias are parameters when constant, else call arguments."""

    def __init__(self, kernel: Sequence[int] | None, strides: Sequence[int], dilations: Sequence[int], group: int,
                 auto_pad: str, pairs: Sequence[tuple[int, int]], weight: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.kernel, self.strides, self.dilations = list(kernel or []), list(strides), list(dilations)
        self.group, self.auto_pad, self.pairs = group, auto_pad, list(pairs)
        self.weight = nn.Parameter(weight) if weight is not None else None
        self.bias = nn.Parameter(bias) if bias is not None else None

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if weight is None else weight
        b = self.bias if bias is None else bias
        kernel = self.kernel or list(w.shape[2:])
        pairs = resolve_pads(x, kernel, self.strides, self.dilations, self.auto_pad, self.pairs)
        if any(p for pair in pairs for p in pair):
            x = F.pad(x, torch_pad(pairs))
        return _CONV[len(kernel)](x, w, b, self.strides, 0, self.dilations, self.group)


class OnnxConvTranspose(nn.Module):
    """ONNX ConvTranspose with any pads, output_padding, output_shape or auto_pad: full transposed conv, then crop."""

    def __init__(self, kernel: Sequence[int] | None, strides: Sequence[int], dilations: Sequence[int], group: int,
                 auto_pad: str, pairs: Sequence[tuple[int, int]], output_padding: Sequence[int],
                 output_shape: Sequence[int] | None, weight: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.kernel, self.strides, self.dilations = list(kernel or []), list(strides), list(dilations)
        self.group, self.auto_pad, self.pairs = group, auto_pad, list(pairs)
        self.output_padding = list(output_padding)
        self.output_shape = list(output_shape) if output_shape else None
        self.weight = nn.Parameter(weight) if weight is not None else None
        self.bias = nn.Parameter(bias) if bias is not None else None

    def _pairs(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        if self.output_shape is None and self.auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            return self.pairs if self.auto_pad != "VALID" else [(0, 0)] * len(sizes)
        out_shape = self.output_shape or [i * s for i, s in zip(sizes, self.strides)]
        out_shape = out_shape[-len(sizes):]
        pairs = []
        for i, s, k, d, op, o in zip(sizes, self.strides, self.kernel, self.dilations, self.output_padding,
                                     out_shape):
            total = max(0, s * (i - 1) + op + (k - 1) * d + 1 - o)
            if self.auto_pad == "SAME_UPPER":
                pairs.append((total // 2, total - total // 2))
            else:
                pairs.append((total - total // 2, total // 2))
        return pairs

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if weight is None else weight
        b = self.bias if bias is None else bias
        self.kernel = self.kernel or list(w.shape[2:])
        rank = len(self.kernel)
        pairs = self._pairs(x.shape[2:])
        y = _CONV_T[rank](x, w, None, self.strides, 0, 0, self.group, self.dilations)
        if any(self.output_padding):
            y = F.pad(y, torch_pad([(0, p) for p in self.output_padding]))
        index = [slice(None), slice(None)]
        for (begin, end), size in zip(pairs, y.shape[2:]):
            index.append(slice(begin, size - end))
        y = y[tuple(index)]
        if b is not None:
            y = y + b.reshape(1, -1, *([1] * rank))
        return y


def _tensor(node: OnnxNode, graph: OnnxGraph, i: int) -> torch.Tensor | None:
    arr = const(node, graph, i)
    return None if arr is None else torch.from_numpy(arr.copy())


@converter("Conv", 1, 11, override=True)
@converter("Conv", 22)
@converter("ConvTranspose", 1, 11, override=True)
@converter("ConvTranspose", 22)
def convert_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Conv/ConvTranspose: onnx2torch's nn.ConvNd where it is exact, else vizcore's general module."""
    op = node.operation_type
    w_name, b_name = input_at(node, 1), input_at(node, 2)
    weight, bias = _tensor(node, graph, 1), _tensor(node, graph, 2)
    rank = (len(ints_attr(node, "kernel_shape") or []) or (weight.dim() - 2 if weight is not None else 0)
            or max((rank_of(node, graph, i) or 0) - 2 for i in (0, 1)) or len(ints_attr(node, "strides") or [])
            or len(ints_attr(node, "pads") or []) // 2)
    if rank <= 0:
        raise NotImplementedError(f"{op} with computed weights of unknown rank: give it a kernel_shape")
    strides, dilations, auto_pad, pairs = spatial_attrs(node, rank)
    symmetric = all(b == e for b, e in pairs)
    plain = (w_name in graph.initializers and (len(node.input_values) < 3 or b_name in graph.initializers)
             and auto_pad in ("NOTSET", "VALID") and rank in (1, 2, 3))
    if op == "ConvTranspose":
        plain = plain and symmetric and "output_shape" not in node.attributes
    if plain:
        return registry.builtin(op, 11)(node, graph)
    kernel = ints_attr(node, "kernel_shape") or (list(weight.shape[2:]) if weight is not None else None)
    group = int(node.attributes.get("group", 1))
    inputs = [node.input_values[0]]
    if weight is None or (b_name and bias is None):  # computed weights: every weight is a call argument
        inputs += [w_name] + ([b_name] if b_name else [])
        weight = bias = None
    if op == "Conv":
        module: nn.Module = OnnxConv(kernel, strides, dilations, group, auto_pad, pairs, weight, bias)
    else:
        module = OnnxConvTranspose(kernel, strides, dilations, group, auto_pad, pairs,
                                   ints_attr(node, "output_padding") or [0] * rank,
                                   ints_attr(node, "output_shape"), weight, bias)
    return result(module, node, inputs)
