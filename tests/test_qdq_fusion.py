"""The `fuse_qdq` pre-pass: QDQ node groups become the QOperator ops onnxruntime fuses them into, so vizcore
computes onnxruntime's integers. A tiny graph with every fusable group kind (Conv with bias and Relu, a residual
Add, Concat, MaxPool, GlobalAveragePool, Flatten, Gemm, MatMul, LeakyRelu, Sigmoid) is quantized by
`onnxruntime.quantization.quantize_static` (QDQ, per tensor and per channel, int8 and uint8) and compared with
onnxruntime at batch 1 and 3 in quantization steps of the output.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper

import vizcore
from vizcore.onnx_compat import prepasses
from vizcore.onnx_compat.qdq import fuse_qdq

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")
RNG = np.random.default_rng(0)
VARIANTS = [(pc, act) for pc in (False, True) for act in ("QInt8", "QUInt8")]
IDS = [f"{'pc' if pc else 'pt'}-{act}" for pc, act in VARIANTS]
#: groups of the zoo graph: Conv x2, Add, Concat, GlobalAveragePool, Gemm, MatMul, LeakyRelu, Sigmoid
ALL_GROUPS = 9


def _init(name: str, *shape: int, scale: float = 0.4) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def zoo_float(path: Path) -> Path:
    """x -> Conv+Relu (r) -> Conv -> Add(r, .) -> Concat(., r) -> MaxPool -> GAP -> Flatten -> Gemm -> MatMul ->
    LeakyRelu -> Sigmoid; r is read by three nodes (onnxruntime keeps such an int8 tensor unfused on x86)."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r"]),
             n("Conv", ["r", "w2", "b2"], ["c2"]), n("Add", ["r", "c2"], ["s"]),
             n("Concat", ["s", "r"], ["cat"], axis=1),
             n("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             n("GlobalAveragePool", ["mp"], ["gap"]), n("Flatten", ["gap"], ["f"]),
             n("Gemm", ["f", "w3", "b3"], ["gm"], transB=1), n("MatMul", ["gm", "w4"], ["mm"]),
             n("LeakyRelu", ["mm"], ["lr"], alpha=0.1), n("Sigmoid", ["lr"], ["y"])]
    inits = [_init("w1", 4, 3, 3, 3), _init("b1", 4, scale=0.1), _init("w2", 4, 4, 1, 1), _init("b2", 4, scale=0.1),
             _init("w3", 5, 8, scale=1.0), _init("b3", 5, scale=0.1), _init("w4", 5, 6, scale=1.0)]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class Calibration(quantization.CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.it = iter([{"x": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(4)])

    def get_next(self) -> dict | None:
        return next(self.it, None)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return zoo_float(tmp_path_factory.mktemp("zoo") / "zoo.onnx")


def quantized(src: Path, pc: bool, act: str) -> Path:
    out = src.with_name(f"zoo_{'pc' if pc else 'pt'}_{act}.onnx")
    if not out.exists():
        qt = quantization.QuantType
        quantization.quantize_static(str(src), str(out), Calibration(), quant_format=quantization.QuantFormat.QDQ,
                                     per_channel=pc, activation_type=getattr(qt, act), weight_type=getattr(qt, act))
    return out


def fused_ops(path: Path, int8_activations: bool | None) -> tuple[int, Counter]:
    proto = onnx.load(str(path))
    prepasses.constants_to_initializers(proto)
    return fuse_qdq(proto, int8_activations=int8_activations), Counter(n.op_type for n in proto.graph.node)


def output_step(path: Path) -> float:
    g = onnx.load(str(path)).graph
    dq = next(n for n in g.node if n.output[0] == g.output[0].name)
    return float(numpy_helper.to_array(next(t for t in g.initializer if t.name == dq.input[1])))


@pytest.mark.parametrize("pc,act", VARIANTS, ids=IDS)
def test_every_group_kind_fuses_where_onnxruntime_fuses_it(zoo, pc, act):
    path = quantized(zoo, pc, act)
    n, ops = fused_ops(path, int8_activations=True)  # int8 kernels allowed (onnxruntime on ARM): everything fuses
    assert n == ALL_GROUPS
    assert not {"Conv", "Add", "Concat", "GlobalAveragePool", "Gemm", "MatMul", "LeakyRelu", "Sigmoid"} & set(ops)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == ops["QLinearMatMul"] == ops["QLinearAdd"] == 1
    n, ops = fused_ops(path, int8_activations=False)  # x86: int8 only where its Q -> DQ pair can become uint8
    if act == "QUInt8":
        assert n == ALL_GROUPS
    else:  # r (read by 3 nodes) stays int8: both Convs, the Add and the Concat stay float, as in onnxruntime
        assert n == ALL_GROUPS - 4 and ops["Conv"] == 2 and ops["Add"] == ops["Concat"] == 1
        assert ops["QLinearGlobalAveragePool"] == ops["QGemm"] == ops["QLinearMatMul"] == 1


@pytest.mark.parametrize("pc,act", VARIANTS, ids=IDS)
def test_fused_zoo_matches_onnxruntime_and_passes_gradients(zoo, pc, act):
    path = quantized(zoo, pc, act)
    m = vizcore.load(path, size=8)
    assert dict(m.prepasses)["fuse_qdq"] >= ALL_GROUPS - 4
    step = output_step(path)
    for batch in (1, 3):
        x = m.probe_input(batch, 8, seed=batch)
        ref = ort_run(path, {"x": x.numpy()})[0]
        x.requires_grad_(True)
        got = m.module(x)
        (got * torch.linspace(-1, 1, got.shape[-1])).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        steps = float(np.abs(got.detach().numpy() - ref).max()) / step
        assert steps <= (0 if act == "QUInt8" else 1) + 1e-6, (batch, steps)


def _conv_relu_q(act: str, zero_point: int, scale: float) -> onnx.ModelProto:
    """Q(x) -> DQ -> Conv (int8 weights, int32 bias) -> Relu|Clip(0, 6) -> Q(uint8, scale, zero_point) -> DQ."""
    w = RNG.integers(-60, 60, (4, 3, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "xs": np.array(1 / 255, np.float32), "xz": np.array(0, np.uint8), "w": w,
        "ws": np.array(0.01, np.float32), "wz": np.array(0, np.int8),
        "b": RNG.integers(-300, 300, 4).astype(np.int32), "bs": np.array(0.01 / 255, np.float32),
        "ys": np.array(scale, np.float32), "yz": np.array(zero_point, np.uint8),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}.items()]
    n = helper.make_node
    relu = n("Relu", ["c"], ["r"]) if act == "Relu" else n("Clip", ["c", "lo", "hi"], ["r"])
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             n("DequantizeLinear", ["w", "ws", "wz"], ["wd"]), n("DequantizeLinear", ["b", "bs"], ["bd"]),
             n("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]), relu,
             n("QuantizeLinear", ["r", "ys", "yz"], ["yq"]), n("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("act,zero_point,scale,absorbed", [
    ("Relu", 0, 0.01, True),  # zero point at qmin: the Q clamps what Relu would
    ("Relu", 10, 0.01, False),  # not redundant: onnxruntime fuses nothing here, neither do we
    ("Clip", 0, 6 / 255, True),  # the quantized range lies inside [0, 6]
    ("Clip", 0, 0.05, False)])  # 6 / 0.05 = 120 < 255: the Clip cuts the range, it stays
def test_relu_and_clip_absorbed_only_when_the_q_makes_them_redundant(tmp_path, act, zero_point, scale, absorbed):
    model = _conv_relu_q(act, zero_point, scale)
    path = tmp_path / "q.onnx"
    onnx.save(model, str(path))
    n, ops = fused_ops(path, int8_activations=None)
    assert n == int(absorbed) and (ops[act] == 0) == absorbed and (ops["QLinearConv"] == 1) == absorbed
    m = vizcore.load(path, size=6)
    x = m.probe_input(3, 6, seed=0)
    with torch.no_grad():
        got = m.module(x).numpy()
    assert np.abs(got - ort_run(path, {"x": x.numpy()})[0]).max() <= 1e-6 * scale  # exact


def test_fused_model_renders(zoo):
    """Gradient ascent on a fused QLinearConv unit: the objective rises through the straight-through rounding."""
    m = vizcore.load(quantized(zoo, True, "QUInt8"), size=8)
    layer = next(layer for layer in m.layers if layer.op_type == "QLinearConv")
    r = vizcore.render(m, f"{layer.index}:1", steps=8, size=8, record_every=1)
    trace = r.traces[0]
    assert len(trace) == 8 and np.isfinite(trace).all() and trace[-1] > trace[0], trace


def test_float_graphs_and_qoperator_graphs_are_left_alone(zoo):
    proto = onnx.load(str(zoo))
    before = proto.SerializeToString()
    assert fuse_qdq(proto) == 0 and proto.SerializeToString() == before


def test_add_at_a_rounding_tie_follows_onnxruntimes_integer_kernel(tmp_path):
    """A QDQ Add whose first element the float graph as written rounds to 25 and onnxruntime's fused QLinearAdd
    (MLAS: zero points folded into one constant, FMA) to 24: the fused graph must give 24 (found by a search over
    random scales and all 256 x 256 input pairs)."""
    sa, sb, sc = (np.array(bits, np.uint32).view(np.float32) for bits in (1026087855, 1026123343, 1021767163))
    za, zb, zc = 148, 100, 197
    qa, qb = np.array([16, 10, 200, 148], np.float32), np.array([114, 50, 20, 100], np.float32)
    as_written = np.clip(np.rint(((qa - za) * sa + (qb - zb) * sb) / sc) + zc, 0, 255)
    inits = [numpy_helper.from_array(np.array(v, dt), k) for k, v, dt in (
        ("sa", sa, np.float32), ("za", za, np.uint8), ("sb", sb, np.float32), ("zb", zb, np.uint8),
        ("sc", sc, np.float32), ("zc", zc, np.uint8))]
    n = helper.make_node
    nodes = [n("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
             n("QuantizeLinear", ["a", "sa", "za"], ["aq"]), n("DequantizeLinear", ["aq", "sa", "za"], ["ad"]),
             n("QuantizeLinear", ["b", "sb", "zb"], ["bq"]), n("DequantizeLinear", ["bq", "sb", "zb"], ["bd"]),
             n("Add", ["ad", "bd"], ["s"]), n("QuantizeLinear", ["s", "sc", "zc"], ["y"])]
    graph = helper.make_graph(nodes, "tie", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", 1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "tie.onnx"
    onnx.save(model, str(path))
    x = np.stack([(qa - za) * sa, (qb - zb) * sb])[None].astype(np.float32)
    ref = ort_run(path, {"x": x})[0].reshape(-1).astype(np.float32)
    assert ref[0] == 24 and as_written[0] == 25 and (ref[1:] == as_written[1:]).all()  # the case is real
    m = vizcore.load(path, input_shapes={"x": [1, 2, 4]})
    assert dict(m.prepasses)["fuse_qdq"] == 1
    with torch.no_grad():
        got = m.module(torch.from_numpy(x)).reshape(-1).numpy()
    assert (got == ref).all(), (got, ref)


def test_closed_quantized_unit_opens_with_the_relu_override(tmp_path):
    """Unit 0 of a fused QLinearConv (its Relu absorbed: zero point at qmin) is closed for every start image (a
    strongly negative bias): no gradient reaches it through the saturation. The ReLU gradient override reaches that
    clamp: the objective rises with it, stays 0 without it; the model's own modules keep the plain clamp."""
    model = _conv_relu_q("Relu", 0, 0.01)
    inits = {t.name: t for t in model.graph.initializer}
    for name, row in (("w", 50), ("b", -250_000)):
        v = numpy_helper.to_array(inits[name]).copy()
        v[0] = row
        inits[name].CopyFrom(numpy_helper.from_array(v, name))
    path = tmp_path / "closed.onnx"
    onnx.save(model, str(path))
    m = vizcore.load(path, size=16)
    layer = next(layer for layer in m.layers if layer.op_type == "QLinearConv")
    kw = dict(steps=16, size=16, record_every=1, seed=0, quality="plain")  # a grey-ish start: closed
    flat = vizcore.render(m, f"{layer.index}:0", relu_override=0.0, **kw)
    opened = vizcore.render(m, f"{layer.index}:0", relu_override=0.5, **kw)
    assert not np.any(flat.traces[0]) and opened.traces[0][0] == 0 and opened.traces[0][-1] > 1, opened.traces[0]
    assert all(getattr(mod, "saturate", torch.clamp) is torch.clamp for mod in m.module.modules())


def test_gemm_without_a_q_fuses_into_a_float_output_qgemm(tmp_path):
    """DQ(x), DQ(w), DQ(b) -> Gemm with a float output (no Q after it): onnxruntime's QGemm with float output."""
    n = helper.make_node
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8),
        "w": RNG.integers(-127, 127, (5, 16)).astype(np.int8), "ws": np.array(0.01, np.float32),
        "wz": np.array(0, np.int8), "b": RNG.integers(-500, 500, 5).astype(np.int32),
        "bs": np.array(0.0002, np.float32)}.items()]
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             n("DequantizeLinear", ["w", "ws", "wz"], ["wd"]), n("DequantizeLinear", ["b", "bs"], ["bd"]),
             n("Gemm", ["xd", "wd", "bd"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "gemm.onnx"
    onnx.save(model, str(path))
    n_fused, ops = fused_ops(path, int8_activations=None)
    assert n_fused == 1 and ops["QGemm"] == 1 and ops["Gemm"] == 0
    m = vizcore.load(path, input_shapes={"x": [1, 16]})
    x = np.random.default_rng(2).uniform(-2, 2, (3, 16)).astype(np.float32)
    with torch.no_grad():
        got = m.module(torch.from_numpy(x)).numpy()
    ref = ort_run(path, {"x": x})[0]
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
