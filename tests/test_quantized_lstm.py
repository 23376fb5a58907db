"""com.microsoft DynamicQuantizeLSTM (issue 25, cause 1) against onnxruntime: a bidirectional LSTM signal model
quantized by onnxruntime's own `quantize_dynamic` (per tensor and per channel), and hand-built nodes for what the
quantizer does not write (reverse, uint8 weights with a zero point, initial states as graph inputs, Y_h only).

Parity: within 1e-4 of the output's scale (the emulation quantizes the activations as onnxruntime does, so it is
far inside one activation quantization step); the input gradient is finite and non-zero; a render rises.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_msft_ops import check
from torch import nn

import vizcore

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")
MS = "com.microsoft"


def ort_threads(path: Path | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime with 4 threads: batches up to 4 quantize the hidden state row by row (see the converter)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = 4, 3
    src = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


class BiLstmSignal(nn.Module):
    """(N, 2, L) -> conv1d(2->6) relu -> bidirectional LSTM(8) over time -> linear(16->3) per step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.lstm = nn.LSTM(6, 8, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(torch.relu(self.conv(x)).transpose(1, 2))
        return self.fc(y)


def quantized_bilstm(folder: Path, per_channel: bool = False) -> Path:
    """The float model exported (opset 17) and quantized by `quantize_dynamic`: its LSTM becomes a
    DynamicQuantizeLSTM with int8 weights (per tensor or per channel)."""
    src, out = folder / "bilstm.onnx", folder / f"bilstm_q{'pc' if per_channel else 'pt'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(BiLstmSignal().eval(), (torch.rand(1, 2, 16),), str(src), dynamo=False, opset_version=17,
                          input_names=["signal"], output_names=["y"], dynamic_axes={"signal": {0: "N", 2: "L"}})
        quantization.quantize_dynamic(str(src), str(out), weight_type=quantization.QuantType.QInt8,
                                      per_channel=per_channel, op_types_to_quantize=["LSTM"])
    return out


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_quantize_dynamic_bilstm_matches_onnxruntime_and_renders(tmp_path, per_channel):
    path = quantized_bilstm(tmp_path, per_channel)
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(path)).graph.node}
    m = vizcore.load(path, size=16)
    for batch in (1, 3):
        x = m.probe_input(batch, 16, seed=batch)
        ref = ort_threads(path, {"signal": x.numpy()})[0]
        x.requires_grad_(True)
        got = m.module(x)
        assert np.abs(got.detach().numpy() - ref).max() <= 1e-4 * np.abs(ref).max()
        (got * torch.linspace(-1, 1, got.shape[-1])).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    lstm = next(l for l in m.layers if l.op_type == "DynamicQuantizeLSTM")
    after = next(l for l in m.layers if l.index > lstm.index and l.op_type in ("MatMul", "Gemm", "Add"))
    r = vizcore.render(m, f"{after.name}:0", steps=8, size=16, device="cpu", transforms="none", record_every=1)
    trace = r.traces[0]
    assert len(trace) == 8 and np.isfinite(trace).all() and trace[-1] > trace[0], trace


def dq_lstm_model(direction: str, wtype: int, per_channel: bool, states: bool, outputs: list[str],
                  seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One hand-built DynamicQuantizeLSTM node (X (5, 2, 4), hidden 6) and its feeds."""
    rng = np.random.default_rng(seed)
    dirs, hidden, size = (2 if direction == "bidirectional" else 1), 6, 4
    uint8 = wtype == TensorProto.UINT8
    lo, hi, dtype = (0, 256, np.uint8) if uint8 else (-127, 128, np.int8)
    cols = 4 * hidden if per_channel else 1
    inits = {"W": rng.integers(lo, hi, (dirs, size, 4 * hidden)).astype(dtype),
             "R": rng.integers(lo, hi, (dirs, hidden, 4 * hidden)).astype(dtype),
             "B": (rng.standard_normal((dirs, 8 * hidden)) * 0.2).astype(np.float32)}
    for k in ("W", "R"):
        shape = (dirs, cols) if per_channel else (dirs,)
        inits[f"{k}_scale"] = rng.uniform(0.002, 0.006, shape).astype(np.float32)
        inits[f"{k}_zp"] = np.full(shape, 128 if uint8 else 0, dtype)
    feeds = {"X": rng.standard_normal((5, 2, size)).astype(np.float32)}
    if states:
        feeds |= {"h0": rng.uniform(-0.5, 0.5, (dirs, 2, hidden)).astype(np.float32),
                  "c0": rng.uniform(-0.5, 0.5, (dirs, 2, hidden)).astype(np.float32)}
    ins = ["X", "W", "R", "B", "", "h0" if states else "", "c0" if states else "", "", "W_scale", "W_zp", "R_scale",
           "R_zp"]
    node = helper.make_node("DynamicQuantizeLSTM", ins, outputs, domain=MS, hidden_size=hidden, direction=direction)
    graph = helper.make_graph([node], "dq", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                                             for k, v in feeds.items()],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model, feeds


NODES = {"reverse, uint8 weights with zero point 128, per channel, initial states":
         ("reverse", TensorProto.UINT8, True, True, ["Y", "Y_h", "Y_c"]),
         "forward, int8 per tensor, Y_h only": ("forward", TensorProto.INT8, False, False, ["", "Y_h"]),
         "bidirectional, int8 per channel, initial states": ("bidirectional", TensorProto.INT8, True, True,
                                                               ["Y", "Y_h"])}


@pytest.mark.parametrize("case", sorted(NODES))
def test_hand_built_node_matches_onnxruntime(tmp_path, case):
    model, feeds = dq_lstm_model(*NODES[case])
    check(tmp_path, model, feeds, ref=ort_threads(model, feeds), scaled=1e-4)


def test_unsupported_variants_are_refused_in_one_line(tmp_path):
    model, _ = dq_lstm_model("forward", TensorProto.INT8, False, False, ["Y"])
    model.graph.node[0].attribute.append(helper.make_attribute("clip", 3.0))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 1, 2, 6]))
    path = tmp_path / "clip.onnx"
    onnx.save(model, str(path))
    with pytest.raises(vizcore.errors.VizcoreError, match="DynamicQuantizeLSTM with clip"):
        vizcore.load(path)
