"""Hand-built ONNX graphs (onnx.helper) for the op rules the torch exports above do not reach: Split with
num_outputs (opset 18), MatMul + Add heads on rank-2 features, Resize, and the channel-class bookkeeping itself.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from prune_models import max_rel_diff

from vizcore.prune import prune
from vizcore.prune.channels import analyze
from vizcore.prune.graph import Graph
from vizcore.prune.runtime import shapes


def _model(nodes, inits, out_shape):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(v.astype(np.float32 if v.dtype.kind == "f" else np.int64), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    return m


def _split_matmul_model():
    """conv(3->6) relu, split 3+3 (num_outputs), conv on each half, concat, resize x2, gap, flatten,
    matmul(9->5) + add, relu, matmul(5->2)."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((6, 3, 3, 3)), rng.random(6) + 0.5
    w1[4], b1[4] = 0.0, -1.0  # dead conv channel 4 (in the second half of the split)
    wa, wb = rng.standard_normal((3, 3, 1, 1)), rng.standard_normal((3, 3, 1, 1))
    m1, a1 = rng.standard_normal((9, 5)), rng.random(5) + 3.0
    m1[:, 2], a1[2] = 0.0, -1.0  # dead hidden unit 2
    inits = {"w1": w1, "b1": b1, "wa": wa, "wb": wb, "m1": m1, "a1": a1, "m2": rng.standard_normal((5, 2)),
             "scales": np.array([1, 1, 2, 2], dtype=np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Split", ["r1"], ["s0", "s1"], axis=1, num_outputs=2),
             helper.make_node("Conv", ["s0", "wa"], ["ca"]), helper.make_node("Conv", ["s1", "wb"], ["cb"]),
             helper.make_node("Concat", ["ca", "s1", "cb"], ["cat"], axis=1),
             helper.make_node("Resize", ["cat", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("GlobalAveragePool", ["up"], ["gap"]), helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("MatMul", ["f", "m1"], ["h"]), helper.make_node("Add", ["h", "a1"], ["ha"]),
             helper.make_node("Relu", ["ha"], ["hr"]), helper.make_node("MatMul", ["hr", "m2"], ["y"])]
    return _model(nodes, inits, ["n", 2])


def test_split_concat_resize_matmul_head(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_split_matmul_model(), str(src))
    rep = prune(src, tmp_path / "p.onnx", probes=8, latency_reps=0)
    assert rep.verified and rep.written
    assert sorted(r["unit"] for r in rep.removed) == ["c1:4", "h:2"]
    m = onnx.load(str(tmp_path / "p.onnx"))
    onnx.checker.check_model(m, full_check=True)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    shapes_by_op = {n.op_type + str(i): w[n.input[1]].shape for i, n in enumerate(m.graph.node)
                    if n.op_type in ("Conv", "MatMul")}
    assert shapes_by_op["Conv0"] == (5, 3, 3, 3) and shapes_by_op["Conv4"] == (3, 2, 1, 1)  # wb lost input 1
    assert shapes_by_op["MatMul9"] == (8, 4) and shapes_by_op["MatMul12"] == (4, 2)  # 3+2+3 features, 4 hidden
    split = next(n for n in m.graph.node if n.op_type == "Split")
    assert list(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == split.input[1]))) == [3, 2]
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert max_rel_diff(src, tmp_path / "p.onnx", x) <= 1e-6


def test_classes_join_across_add_and_route_through_concat():
    m = _split_matmul_model()
    feed = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    ch = analyze(Graph(m), shapes(m, feed))
    cat = ch.uf.roots(ch.atoms["cat"])
    r1 = ch.uf.roots(ch.atoms["r1"])
    assert list(cat[3:6]) == list(r1[3:6])  # the concat's middle block is the split's second half
    assert len(ch.atoms["f"]) == 9 and not ch.unknown_ops
    assert {s.node.op_type for s in ch.sinks} == {"Conv", "MatMul"}
    assert ch.frozen_roots()[int(ch.uf.roots(ch.atoms["y"])[0])] == "model output"


def test_weights_shared_through_identity(tmp_path):
    """TorchScript shares equal initializers through Identity nodes: the pruned conv gets its own sliced copy."""
    rng = np.random.default_rng(1)
    w1, b = rng.standard_normal((4, 3, 3, 3)), rng.random(4) + 0.5
    w1[1], b[1] = 0.0, -1.0
    nodes = [helper.make_node("Identity", ["b"], ["b_shared"]),
             helper.make_node("Conv", ["x", "w1", "b"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b_shared"], ["y"])]
    src = tmp_path / "m.onnx"
    onnx.save(_model(nodes, {"w1": w1, "b": b, "w2": rng.standard_normal((4, 4, 1, 1))}, ["n", 4, 8, 8]), str(src))
    rep = prune(src, tmp_path / "p.onnx", probes=8, latency_reps=0)
    assert rep.verified and [r["unit"] for r in rep.removed] == ["c1:1"]
    m = onnx.load(str(tmp_path / "p.onnx"))
    w = {t.name: numpy_helper.to_array(t).shape for t in m.graph.initializer}
    conv1, conv2 = (n for n in m.graph.node if n.op_type == "Conv")
    assert w[conv1.input[2]] == (3,) and w[conv1.input[1]] == (3, 3, 3, 3)
    assert conv2.input[2] == "b_shared" and w["b"] == (4,) and w[conv2.input[1]] == (4, 3, 1, 1)
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert max_rel_diff(src, tmp_path / "p.onnx", x) <= 1e-6
