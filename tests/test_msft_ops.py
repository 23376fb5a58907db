"""com.microsoft float ops against onnxruntime: one tiny graph per op, and a graph onnxruntime's own optimizer wrote.

Each case goes through `vizcore.load`, matches onnxruntime (atol 1e-5, rtol 1e-4) and back-propagates a finite,
non-zero gradient to its first input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import export_torch, ort_run, seeded_cnn
from onnx import TensorProto, helper, numpy_helper

import vizcore
from vizcore.cli import main

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.uniform(-1.5, 1.5, shape).astype(np.float32)


def msft_model(nodes: list, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray],
               outputs: list[str]) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "msft", ins, outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def check(tmp_path: Path, model: onnx.ModelProto, feeds: dict[str, np.ndarray], ref: list[np.ndarray] | None = None,
          scaled: float | None = None) -> vizcore.Model:
    """Load `model`, match onnxruntime's outputs (`ref`, default: a fresh run; `scaled`: max |diff| <= scaled x the
    output's largest |value| instead of allclose) and back-propagate a finite, non-zero gradient to the input."""
    ref = ort_run(model, feeds) if ref is None else ref
    for vi, r in zip(model.graph.output, ref):  # the checker wants output shapes: onnxruntime's
        if scaled is not None or not vi.type.tensor_type.HasField("shape"):
            vi.CopyFrom(helper.make_tensor_value_info(vi.name, TensorProto.FLOAT, r.shape))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    m = vizcore.load(path)
    args = [torch.from_numpy(v.copy()) for v in feeds.values()]
    args[0].requires_grad_(True)
    got = m.module(*args)
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    assert [tuple(g.shape) for g in got] == [r.shape for r in ref]
    for r, g in zip(ref, got):
        if scaled is not None:
            assert np.abs(g.detach().numpy() - r).max() <= scaled * np.abs(r).max()
        else:
            np.testing.assert_allclose(g.detach().numpy(), r, atol=1e-5, rtol=1e-4)
    sum((g * torch.from_numpy(RNG.standard_normal(r.shape).astype(np.float32))).sum()
        for g, r in zip(got, ref)).backward()
    assert torch.isfinite(args[0].grad).all() and args[0].grad.abs().sum() > 0
    return m


MS = "com.microsoft"
X4 = f32(2, 3, 6, 6)
W = f32(4, 3, 3, 3)
B = f32(4)
CASES = {
    "FusedConv Relu": ([helper.make_node("FusedConv", ["x", "w", "b"], ["y"], domain=MS, activation="Relu",
                                         pads=[1, 1, 1, 1])], {"x": X4}, {"w": W, "b": B}),
    "FusedConv LeakyRelu stride 2": ([helper.make_node("FusedConv", ["x", "w"], ["y"], domain=MS, strides=[2, 2],
                                                       activation="LeakyRelu", activation_params=[0.2])],
                                     {"x": X4}, {"w": W}),
    "FusedConv Clip with sum input": ([helper.make_node("FusedConv", ["x", "w", "b", "z"], ["y"], domain=MS,
                                                        activation="Clip", activation_params=[-0.5, 0.8])],
                                      {"x": X4, "z": f32(2, 4, 4, 4)}, {"w": W, "b": B}),
    "FusedConv HardSigmoid": ([helper.make_node("FusedConv", ["x", "w", "b"], ["y"], domain=MS,
                                                activation="HardSigmoid", activation_params=[0.3, 0.4])],
                              {"x": X4}, {"w": W, "b": B}),
    "FusedGemm LeakyRelu transB": ([helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain=MS, transB=1,
                                                     alpha=0.7, beta=1.3, activation="LeakyRelu",
                                                     activation_alpha=0.1)],
                                   {"a": f32(3, 5)}, {"b": f32(4, 5), "c": f32(4)}),
    "FusedGemm Tanh": ([helper.make_node("FusedGemm", ["a", "b"], ["y"], domain=MS, activation="Tanh")],
                       {"a": f32(3, 5)}, {"b": f32(5, 2)}),
    "Gelu": ([helper.make_node("Gelu", ["x"], ["y"], domain=MS)], {"x": f32(2, 7)}, {}),
    "BiasGelu": ([helper.make_node("BiasGelu", ["x", "bias"], ["y"], domain=MS)], {"x": f32(2, 3, 7)},
                 {"bias": f32(7)}),
    "FastGelu with bias": ([helper.make_node("FastGelu", ["x", "bias"], ["y"], domain=MS)], {"x": f32(2, 3, 8)},
                           {"bias": f32(8)}),
    "FastGelu": ([helper.make_node("FastGelu", ["x"], ["y"], domain=MS)], {"x": f32(2, 8)}, {}),
    "QuickGelu": ([helper.make_node("QuickGelu", ["x"], ["y"], domain=MS, alpha=1.5)], {"x": f32(2, 8)}, {}),
    "SkipLayerNormalization": ([helper.make_node("SkipLayerNormalization", ["x", "skip", "g", "be", "bias"], ["y"],
                                                 domain=MS, epsilon=1e-5)],
                               {"x": f32(2, 3, 8), "skip": f32(2, 3, 8)}, {"g": f32(8), "be": f32(8), "bias": f32(8)}),
    "SkipLayerNormalization gamma only": ([helper.make_node("SkipLayerNormalization", ["x", "skip", "g"], ["y"],
                                                            domain=MS)],
                                          {"x": f32(2, 3, 8), "skip": f32(2, 3, 8)}, {"g": f32(8)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_msft_op_matches_onnxruntime(tmp_path, case):
    nodes, feeds, inits = CASES[case]
    check(tmp_path, msft_model(nodes, feeds, inits, ["y"]), feeds)


def test_skip_layer_norm_sum_output(tmp_path):
    feeds = {"x": f32(2, 3, 8), "skip": f32(2, 3, 8)}
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "g", "be"], ["y", "mean", "inv", "sum"],
                            domain=MS, epsilon=1e-5)
    model = msft_model([node], feeds, {"g": f32(8), "be": f32(8)}, ["y", "mean", "inv", "sum"])
    ref = ort_run(model, feeds)
    np.testing.assert_allclose(ref[3], feeds["x"] + feeds["skip"], atol=1e-6)  # the sum output is what we think
    check(tmp_path, model, feeds)


def test_onnxruntime_optimized_cnn_with_fused_conv(tmp_path):
    """A graph written by onnxruntime's own optimizer (extended level fuses Conv+Relu into FusedConv)."""
    src = export_torch(seeded_cnn(), tmp_path / "cnn.onnx", dynamic_batch=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "opt.onnx"))
    assert "FusedConv" in {n.op_type for n in opt.graph.node if n.domain == MS}
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    m = check(tmp_path, opt, {"image": x})
    args = ["check", str(tmp_path / "m.onnx"), "--quiet", "--size", "32", "--ascent", "none", "--noise-probes", "2"]
    assert main(args) in (0, 1)
    assert any(l.op_type == "FusedConv" for l in m.layers)
