"""com.microsoft DynamicQuantizeLSTM (what onnxruntime's `quantize_dynamic` writes for an LSTM) in float compute.

Weights: W [dirs, input, 4*hidden] and R [dirs, hidden, 4*hidden] (transposed against ONNX's LSTM, gates i, o, f,
c as ONNX), int8 or uint8, with a scale per direction or per direction and gate column and one zero point per
direction (onnxruntime reads the first; it requires them equal). Activations are quantized as onnxruntime's CPU
kernel does (uni_directional_lstm + rnn_helpers' quantized GEMM): the whole input X once, with one dynamic uint8
scale and zero point (range widened to include 0); the previous hidden state before every step, per batch row
(onnxruntime splits the batch across its threads when batch > 4, or batch >= 2 with hidden <= 256; with at
least as many threads as rows that is one row each; otherwise the whole batch shares one scale). The integer
products are exact in float32 and scaled by activation scale * weight scale, in onnxruntime's order.

Gradients: rounding is a straight-through estimator and the dynamic scales are constants of the step, so the
input gradient is that of the float LSTM on the quantized weights.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import const, input_at, result
from .quantized import MS, round_ste

_DEFAULT_ACTIVATIONS = ["sigmoid", "tanh", "tanh"]


def dynamic_uint8(a: torch.Tensor, dims: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q - zero_point, scale) of onnxruntime's dynamic uint8 quantization of `a` (over all of it, or per slice
    reducing `dims`): the integer part carries the gradient straight through, the scale is a constant."""
    with torch.no_grad():
        if dims is None:
            lo, hi = a.min(), a.max()
        else:
            lo, hi = a.amin(dim=dims, keepdim=True), a.amax(dim=dims, keepdim=True)
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
        scale = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / 255.0)
        zp = torch.round(torch.clamp(0.0 - lo / scale, 0.0, 255.0))
    return torch.clamp(round_ste(a / scale) + zp, 0.0, 255.0) - zp, scale


class DynamicQuantizeLSTM(nn.Module):
    """One DynamicQuantizeLSTM node: X (seq, batch, input) [, initial_h, initial_c] -> Y, Y_h, Y_c as ONNX's LSTM."""

    def __init__(self, w: np.ndarray, r: np.ndarray, w_scale: np.ndarray, r_scale: np.ndarray, bias: np.ndarray,
                 direction: str, slots: list[str], outputs: int) -> None:
        super().__init__()
        dirs = w.shape[0]
        self.register_buffer("w", torch.from_numpy(w.astype(np.float32)))  # (q - zp), exact integers
        self.register_buffer("r", torch.from_numpy(r.astype(np.float32)))
        self.register_buffer("w_scale", torch.from_numpy(w_scale.reshape(dirs, 1, -1).astype(np.float32)))
        self.register_buffer("r_scale", torch.from_numpy(r_scale.reshape(dirs, 1, -1).astype(np.float32)))
        self.register_buffer("bias", torch.from_numpy(bias.astype(np.float32)))
        self.hidden, self.reverse, self.slots, self.outputs = r.shape[1], direction == "reverse", slots, outputs

    def _direction(self, qx: torch.Tensor, sx: torch.Tensor, d: int, h: torch.Tensor, c: torch.Tensor,
                   backward: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gx = torch.matmul(qx, self.w[d]) * (sx * self.w_scale[d])  # every step's input GEMM at once
        batch = h.shape[0]
        per_row = batch > 4 or (batch >= 2 and self.hidden <= 256)
        ys = []
        for t in (range(gx.shape[0] - 1, -1, -1) if backward else range(gx.shape[0])):
            qh, sh = dynamic_uint8(h, (1,) if per_row else None)
            g = gx[t] + torch.matmul(qh, self.r[d]) * (sh * self.r_scale[d]) + self.bias[d]
            i, o, f, cc = g.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cc)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        if backward:
            ys.reverse()
        return torch.stack(ys), h, c

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        got = dict(zip(self.slots, extra))
        dirs, batch = self.w.shape[0], x.shape[1]
        zeros = x.new_zeros(dirs, batch, self.hidden)
        h0, c0 = got.get("initial_h", zeros), got.get("initial_c", zeros)
        qx, sx = dynamic_uint8(x.float())
        ys, hs, cs = [], [], []
        for d in range(dirs):
            y, h, c = self._direction(qx, sx, d, h0[d].float(), c0[d].float(), backward=d == 1 or self.reverse)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        outs = (torch.stack(ys, dim=1), torch.stack(hs), torch.stack(cs))[:self.outputs]
        return outs[0] if self.outputs == 1 else outs


def _required(node: OnnxNode, graph: OnnxGraph, i: int, what: str) -> np.ndarray:
    value = const(node, graph, i)
    if value is None:
        raise NotImplementedError(f"DynamicQuantizeLSTM needs a constant {what} (input {i})")
    return value


def _centered(q: np.ndarray, zp: np.ndarray) -> np.ndarray:
    """q - zero point, the zero point being the first of each direction's (onnxruntime reads only that one)."""
    first = zp.reshape(zp.shape[0], -1)[:, :1].astype(np.float64)
    return (q.astype(np.float64) - first[:, :, None]).astype(np.float32)


def _refuse_unsupported(node: OnnxNode, graph: OnnxGraph) -> None:
    attrs = node.attributes
    if attrs.get("clip") is not None or attrs.get("input_forget", 0):
        raise NotImplementedError("DynamicQuantizeLSTM with clip or input_forget is not supported")
    acts = attrs.get("activations")
    if acts and any(a.lower() != b for a, b in zip(acts, _DEFAULT_ACTIVATIONS * 2)):
        raise NotImplementedError(f"DynamicQuantizeLSTM with activations {list(acts)} is not supported")
    if input_at(node, 7):
        raise NotImplementedError("DynamicQuantizeLSTM with peepholes (input P) is not supported")
    if input_at(node, 4) and const(node, graph, 4) is None:
        raise NotImplementedError("DynamicQuantizeLSTM with run-time sequence_lens is not supported")


@converter("DynamicQuantizeLSTM", 1, domain=MS)
def convert_dynamic_quantize_lstm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft DynamicQuantizeLSTM: int8/uint8 W and R (per-tensor or per-channel), dynamic activations."""
    _refuse_unsupported(node, graph)
    w, r = _required(node, graph, 1, "W"), _required(node, graph, 2, "R")
    w_scale, w_zp = _required(node, graph, 8, "W_scale"), _required(node, graph, 9, "W_zero_point")
    r_scale, r_zp = _required(node, graph, 10, "R_scale"), _required(node, graph, 11, "R_zero_point")
    hidden = int(node.attributes["hidden_size"])
    bias = const(node, graph, 3)
    if input_at(node, 3) and bias is None:
        raise NotImplementedError("DynamicQuantizeLSTM needs a constant B (input 3)")
    bias = (np.zeros((w.shape[0], 4 * hidden), np.float32) if bias is None
            else bias[:, :4 * hidden] + bias[:, 4 * hidden:])  # Wb + Rb, as onnxruntime adds them
    slots = [k for i, k in ((5, "initial_h"), (6, "initial_c")) if input_at(node, i)]
    module = DynamicQuantizeLSTM(_centered(w, w_zp), _centered(r, r_zp), w_scale, r_scale, bias,
                                 str(node.attributes.get("direction", "forward")), slots, len(node.output_values))
    return result(module, node, [node.input_values[0]] + [input_at(node, i) for i in (5, 6) if input_at(node, i)])
