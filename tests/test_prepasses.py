"""Each built-in pre-pass on a tiny graph: what it rewrites, what it leaves, and that the result still matches."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from conftest import make_onnx, ort_run, tensor
from onnx import TensorProto, helper, numpy_helper

import vizcore
from vizcore.analysis.fidelity import fidelity
from vizcore.onnx_compat import prepasses
from vizcore.plugins import get_manager

RNG = np.random.default_rng(0)


def test_builtin_prepasses_registered_in_order():
    passes = sorted((p for p, _ in get_manager().registry("prepasses").values()), key=lambda p: p.order)
    names = [p.name for p in passes]
    assert names[:7] == ["half_to_float", "constants_to_initializers", "fuse_qdq", "fold_constants",
                         "inline_constant_if", "unroll_constant_loops", "symbolic_batch"]


def test_constants_to_initializers():
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
             helper.make_node("Constant", [], ["k"], value_ints=[1, 2]),
             helper.make_node("Identity", ["init"], ["w2"]),
             helper.make_node("Identity", ["x"], ["x2"]),  # over an activation: kept
             helper.make_node("MatMul", ["x2", "w"], ["y"])]
    model = make_onnx(nodes, [tensor("x", [1, 2])], [tensor("y", [1, 3])], [w], ["init"])
    assert prepasses.constants_to_initializers(model) == 3
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(inits["w"], w) and inits["k"].tolist() == [1, 2] and np.array_equal(inits["w2"], w)
    assert [n.op_type for n in model.graph.node] == ["Identity", "MatMul"]
    assert prepasses.constants_to_initializers(model) == 0


def test_fold_constants_turns_weight_arithmetic_into_initializers(save_onnx):
    w16 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float16)
    q = RNG.integers(-100, 100, (5, 4)).astype(np.int8)
    nodes = [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),  # an fp16 model's weights
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("DequantizeLinear", ["q", "scale"], ["wq"]),  # weight-only quantization
             helper.make_node("Transpose", ["wq"], ["wt"]),
             helper.make_node("MatMul", ["f", "wt"], ["y"])]
    model = make_onnx(nodes, [tensor("x", [1, 3, 6, 6])], [tensor("y", [1, 5])],
                      [w16, q, np.float32(0.01)], ["w16", "q", "scale"], opset=17)
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert prepasses.fold_constants(folded) == 3
    assert [n.op_type for n in folded.graph.node] == ["Conv", "GlobalAveragePool", "Flatten", "MatMul"]
    path = save_onnx(model)
    m = vizcore.load(path)
    assert dict(m.prepasses)["fold_constants"] == 3
    assert isinstance(m.module.get_submodule(m.layers[0].fx_name), torch.nn.Conv2d)
    x = RNG.random((1, 3, 6, 6), dtype=np.float32)
    np.testing.assert_allclose(m.run(torch.from_numpy(x)).numpy(), ort_run(path, {"x": x})[0], atol=1e-4)


def test_fold_constants_leaves_graph_outputs_and_random_ops():
    nodes = [helper.make_node("Neg", ["a"], ["y"]), helper.make_node("RandomNormal", [], ["r"], shape=[2]),
             helper.make_node("Add", ["x", "r"], ["z"])]
    model = make_onnx(nodes, [tensor("x", [2])], [tensor("y", [2]), tensor("z", [2])], [np.ones(2, np.float32)],
                      ["a"], opset=17)
    assert prepasses.fold_constants(model) == 0


def _static_model(extra: list | None = None, outputs: list | None = None) -> onnx.ModelProto:
    """x (1,3,4,4) -> Conv -> Reshape [1, 48] -> Gemm: a batch-1 export with the batch baked into the Reshape."""
    w = RNG.standard_normal((3, 3, 1, 1)).astype(np.float32)
    fc = RNG.standard_normal((48, 2)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "fc"], ["y"])] + (extra or [])
    return make_onnx(nodes, [tensor("x", [1, 3, 4, 4])], outputs or [tensor("y", [1, 2])],
                     [w, np.array([1, 48], np.int64), fc], ["w", "shape", "fc"], opset=17)


def test_symbolic_batch_rewrites_the_reshape_that_carries_the_batch():
    model = _static_model()
    original = onnx.ModelProto()
    original.CopyFrom(model)
    assert prepasses.symbolic_batch(model) == 2  # the input made symbolic + one Reshape
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    shape = next(t for t in model.graph.initializer if t.name == reshape.input[1])
    assert numpy_helper.to_array(shape).tolist() == [0, 48]
    x = RNG.random((3, 3, 4, 4), dtype=np.float32)
    got = ort_run(model, {"x": x})[0]
    ref = np.concatenate([ort_run(original, {"x": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_symbolic_batch_leaves_a_leading_one_that_is_not_the_batch():
    # x (1, 6) -> Transpose (6, 1) -> Reshape [1, 6]: the 1 there is not the batch
    nodes = [helper.make_node("Transpose", ["x"], ["t"]), helper.make_node("Reshape", ["t", "s"], ["y"])]
    model = make_onnx(nodes, [tensor("x", [1, 6])], [tensor("y", [1, 6])], [np.array([1, 6], np.int64)], ["s"],
                      opset=17)
    prepasses.symbolic_batch(model)
    assert numpy_helper.to_array(model.graph.initializer[0]).tolist() == [1, 6]
    assert len(model.graph.initializer) == 1


def test_symbolic_batch_is_undone_when_onnxruntime_disagrees():
    # a ReduceSum over the batch makes every sample depend on the others: per-sample results differ at batch 3
    extra = [helper.make_node("ReduceSum", ["y", "ax"], ["s"], keepdims=1)]
    model = _static_model(extra, [tensor("s", [1, 2])])
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "ax"))
    original = model.SerializeToString()
    assert prepasses.symbolic_batch(model) == 0
    assert model.SerializeToString() == original


def test_symbolic_batch_skips_models_with_a_dynamic_batch():
    model = _static_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert prepasses.symbolic_batch(model) == 0


def test_loaded_static_model_runs_at_batch_3(save_onnx):
    path = save_onnx(_static_model())
    m = vizcore.load(path)
    assert dict(m.prepasses)["symbolic_batch"] == 2
    assert m.batch_ok and m.input.shape[0] == "batch"
    assert fidelity(m, batch=3)["max_abs_diff"] < 1e-5  # sample by sample against the original file
