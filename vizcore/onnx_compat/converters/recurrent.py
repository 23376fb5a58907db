"""LSTM (7, 14, 22) and GRU (7, 14, 22) on torch's nn.LSTM / nn.GRU, with ONNX's gate order and layouts.

ONNX stacks LSTM gates as i, o, f, c and torch as i, f, g(c), o; GRU gates as z, r, h and torch as r, z, n.
Directions forward / reverse / bidirectional, layout 0 (seq first) and 1 (batch first), initial states.
Not supported (a clear error): peepholes, clip, input_forget, non-default activations, and `sequence_lens`
shorter than the sequence. GRU with linear_before_reset=0 (the ONNX default) runs a step loop, as torch's GRU
only implements linear_before_reset=1.
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

_LSTM_ORDER = [0, 2, 3, 1]  # torch's (i, f, g, o) from ONNX's (i, o, f, c)
_GRU_ORDER = [1, 0, 2]  # torch's (r, z, n) from ONNX's (z, r, h)
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _reorder(w: np.ndarray, order: list[int]) -> np.ndarray:
    """Permute gate blocks along axis 0 of a (gates*hidden, ...) matrix or a (gates*hidden,) bias."""
    blocks = np.split(w, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


class OnnxRecurrent(nn.Module):
    """One ONNX LSTM/GRU node: a torch RNN (or a GRU step loop), ONNX's output layout, optional initial states."""

    def __init__(self, kind: str, rnn: nn.Module, reverse: bool, layout: int, outputs: int,
                 gru_loop: bool = False) -> None:
        super().__init__()
        self.kind, self.rnn, self.reverse, self.layout, self.outputs = kind, rnn, reverse, layout, outputs
        self.gru_loop = gru_loop

    def _gru_steps(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU with linear_before_reset=0: h~ = tanh(W x + R (r * h) + Rb-free term), one step at a time."""
        outs, hs = [], []
        n_dir = 2 if self.rnn.bidirectional else 1
        hidden = self.rnn.hidden_size
        for d in range(n_dir):
            sfx = "_reverse" if d else ""
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l0{sfx}"), getattr(self.rnn, f"weight_hh_l0{sfx}")
            b_ih, b_hh = getattr(self.rnn, f"bias_ih_l0{sfx}"), getattr(self.rnn, f"bias_hh_l0{sfx}")
            seq = x.flip(0) if d else x
            hd = h[d]
            ys = []
            for t in range(seq.shape[0]):
                gi = seq[t] @ w_ih.T + b_ih
                r = torch.sigmoid(gi[:, :hidden] + hd @ w_hh[:hidden].T + b_hh[:hidden])
                z = torch.sigmoid(gi[:, hidden:2 * hidden] + hd @ w_hh[hidden:2 * hidden].T + b_hh[hidden:2 * hidden])
                n = torch.tanh(gi[:, 2 * hidden:] + (r * hd) @ w_hh[2 * hidden:].T + b_hh[2 * hidden:])
                hd = (1 - z) * n + z * hd
                ys.append(hd)
            y = torch.stack(ys)
            outs.append(y.flip(0) if d else y)
            hs.append(hd)
        return torch.cat(outs, dim=-1), torch.stack(hs)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None,
                c0: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.layout == 1:  # (batch, seq, input) -> (seq, batch, input)
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        n_dir = 2 if self.rnn.bidirectional else 1
        batch, hidden = x.shape[1], self.rnn.hidden_size
        h0 = x.new_zeros(n_dir, batch, hidden) if h0 is None else h0
        if self.reverse:
            x = x.flip(0)
        c_n = None
        # cuDNN's RNN backward refuses eval mode, and vizcore back-propagates through eval-mode models
        with torch.backends.cudnn.flags(enabled=not (x.is_cuda and torch.is_grad_enabled())):
            if self.kind == "LSTM":
                c0 = x.new_zeros(n_dir, batch, hidden) if c0 is None else c0
                y, (h_n, c_n) = self.rnn(x, (h0.contiguous(), c0.contiguous()))
            elif self.gru_loop:
                y, h_n = self._gru_steps(x, h0)
            else:
                y, h_n = self.rnn(x, h0.contiguous())
        if self.reverse:
            y = y.flip(0)
        y = y.reshape(y.shape[0], batch, n_dir, hidden).transpose(1, 2)  # (seq, dirs, batch, hidden)
        if self.layout == 1:
            y = y.permute(2, 0, 1, 3)  # (batch, seq, dirs, hidden)
            h_n = h_n.transpose(0, 1)
            c_n = None if c_n is None else c_n.transpose(0, 1)
        outs = (y, h_n, c_n)[:self.outputs]
        return outs[0] if self.outputs == 1 else outs


@converter("LSTM", 7, 14, 22)
@converter("GRU", 7, 14, 22)
def convert_recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """LSTM/GRU with constant W, R, B as torch nn.LSTM/nn.GRU parameters."""
    kind, attrs = node.operation_type, node.attributes
    if attrs.get("clip") is not None or attrs.get("input_forget", 0):
        raise NotImplementedError(f"{kind} with clip or input_forget is not supported")
    activations = attrs.get("activations")
    direction = attrs.get("direction", "forward")
    n_dir = 2 if direction == "bidirectional" else 1
    if activations and [a.lower() for a in activations] != [a.lower() for a in
                                                            _DEFAULT_ACTIVATIONS[kind] * n_dir]:
        raise NotImplementedError(f"{kind} with activations {activations} is not supported")
    if kind == "LSTM" and input_at(node, 7):
        raise NotImplementedError("LSTM with peepholes (input P) is not supported")
    w, r, b = const(node, graph, 1), const(node, graph, 2), const(node, graph, 3)
    if w is None or r is None or (input_at(node, 3) and b is None):
        raise NotImplementedError(f"{kind} needs constant W, R and B")
    if input_at(node, 4):
        lens = const(node, graph, 4)
        if lens is None:
            raise NotImplementedError(f"{kind} with run-time sequence_lens is not supported")
        # full-length sequences only (checked against the input at run time would need a host sync)
    hidden = int(attrs["hidden_size"])
    gates = 4 if kind == "LSTM" else 3
    order = _LSTM_ORDER if kind == "LSTM" else _GRU_ORDER
    cls = nn.LSTM if kind == "LSTM" else nn.GRU
    rnn = cls(w.shape[2], hidden, num_layers=1, bias=True, bidirectional=n_dir == 2)
    b = np.zeros((n_dir, 2 * gates * hidden), np.float32) if b is None else b
    with torch.no_grad():
        for d in range(n_dir):
            sfx = "_reverse" if d else ""
            getattr(rnn, f"weight_ih_l0{sfx}").copy_(torch.from_numpy(_reorder(w[d], order)))
            getattr(rnn, f"weight_hh_l0{sfx}").copy_(torch.from_numpy(_reorder(r[d], order)))
            getattr(rnn, f"bias_ih_l0{sfx}").copy_(torch.from_numpy(_reorder(b[d, :gates * hidden], order)))
            getattr(rnn, f"bias_hh_l0{sfx}").copy_(torch.from_numpy(_reorder(b[d, gates * hidden:], order)))
    gru_loop = kind == "GRU" and not attrs.get("linear_before_reset", 0)
    inputs = [node.input_values[0], input_at(node, 5)] + ([input_at(node, 6)] if kind == "LSTM" else [])
    while inputs and not inputs[-1]:
        inputs.pop()
    module = OnnxRecurrent(kind, rnn, direction == "reverse", int(attrs.get("layout", 0)),
                           len(node.output_values), gru_loop)
    return result(module, node, inputs)
