"""Production formats against onnxruntime: a tiny CNN quantized by `onnxruntime.quantization` (QDQ and QOperator,
per tensor and per channel, int8 and uint8; dynamic) and converted to fp16 / bf16, plus single-op graphs.

Quantized parity is measured in quantization steps of the output tensor (the scale of the DequantizeLinear that
makes it): at most one. Float graphs: 1e-4 relative. An fp16 file with fp16 inputs: 2e-3 relative, because
onnxruntime rounds the input to fp16 (half an ulp is 2**-11 = 4.9e-4 relative) and vizcore computes in float32.
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
from vizcore.analysis.fidelity import fidelity
from vizcore.cli import main
from vizcore.errors import UnsupportedOpError
from vizcore.onnx_compat.converters.quantized import round_ste

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")
STATIC = [(fmt, pc, act, wt) for fmt in ("QDQ", "QOperator") for pc in (False, True)
          for act, wt in (("QInt8", "QInt8"), ("QUInt8", "QUInt8"), ("QUInt8", "QInt8"))]
DYNAMIC = ["QInt8", "QUInt8"]


class Calibration(quantization.CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.it = iter([{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

    def get_next(self) -> dict | None:
        return next(self.it, None)


@pytest.fixture(scope="module")
def float_cnn(tmp_path_factory) -> Path:
    return export_torch(seeded_cnn(), tmp_path_factory.mktemp("cnn") / "cnn.onnx", dynamic_batch=True)


def quantize(src: Path, name: str) -> Path:
    """`src` quantized by onnxruntime as `name` says (FORMAT_pt|pc_ACT_WEIGHT, or dynamic_WEIGHT), cached."""
    out = src.with_name(f"{name}.onnx")
    if out.exists():
        return out
    qt = quantization.QuantType
    if name.startswith("dynamic"):
        quantization.quantize_dynamic(str(src), str(out), weight_type=getattr(qt, name.split("_")[1]))
    else:
        fmt, pc, act, wt = name.split("_")
        quantization.quantize_static(str(src), str(out), Calibration(),
                                     quant_format=getattr(quantization.QuantFormat, fmt), per_channel=pc == "pc",
                                     activation_type=getattr(qt, act), weight_type=getattr(qt, wt))
    return out


def static_name(fmt: str, pc: bool, act: str, wt: str) -> str:
    return f"{fmt}_{'pc' if pc else 'pt'}_{act}_{wt}"


def output_step(path: Path) -> float | None:
    """The scale of the DequantizeLinear producing the graph output (None: the output is not quantized)."""
    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.output[0] == g.output[0].name and n.op_type == "DequantizeLinear":
            return float(inits[n.input[1]])
    return None


def parity(path: Path, size: int = 32) -> dict[int, float]:
    """{batch: max |vizcore - onnxruntime|} at batch 1 and 3; also asserts a finite, non-zero input gradient."""
    m = vizcore.load(path, size=size)
    feed_type = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].type
    out = {}
    for batch in (1, 3):
        x = m.probe_input(batch, size, seed=batch)
        ref = ort_run(path, {"image": x.numpy().astype(np.float16 if "float16" in feed_type else np.float32)})[0]
        x.requires_grad_(True)
        got = m.module(x)
        (got * torch.linspace(-1, 1, got.shape[-1])).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, "no gradient through the graph"
        out[batch] = float(np.abs(got.detach().numpy() - ref.astype(np.float32)).max())
    return out


@pytest.mark.parametrize("fmt,pc,act,wt", STATIC, ids=[static_name(*s) for s in STATIC])
def test_static_quantized_cnn_matches_onnxruntime_within_one_step(float_cnn, fmt, pc, act, wt):
    path = quantize(float_cnn, static_name(fmt, pc, act, wt))
    step = output_step(path)
    assert step is not None
    for batch, diff in parity(path).items():
        assert diff / step <= 1.0 + 1e-6, (batch, diff / step)


@pytest.mark.parametrize("wt", DYNAMIC)
def test_dynamic_quantized_cnn_matches_onnxruntime(float_cnn, wt):
    path = quantize(float_cnn, f"dynamic_{wt}")
    assert "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    x = np.random.default_rng(3).random((3, 3, 32, 32), dtype=np.float32)
    ref = np.abs(ort_run(path, {"image": x})[0]).max()
    for diff in parity(path).values():  # float output: the integer parts are exact, the rest is float32 rounding
        assert diff <= 1e-4 * ref


@pytest.mark.parametrize("name,layer_op", [("QDQ_pc_QInt8_QInt8", "QLinearConv"),  # fused by fuse_qdq
                                           ("QOperator_pt_QUInt8_QUInt8", "QLinearConv"),
                                           ("dynamic_QUInt8", "Relu")])
def test_quantized_model_renders_and_checks(float_cnn, name, layer_op):
    """The objective rises. Dynamic graphs: a float layer (ConvInteger counts in a scale taken from the image's
    own range, so a brighter image lowers it)."""
    path = quantize(float_cnn, name)
    m = vizcore.load(path, size=32)
    layer = next(l for l in m.layers if l.op_type == layer_op)
    with torch.no_grad():  # the unit that responds most to the probe (unit 0 may be dead, as in the float model)
        act = m.cut_at([layer.index])(m.probe_input(1, 32))[0]
    flat = act.flatten(2)
    unit = int(flat.mean(-1)[0].argmax())
    r = vizcore.render(m, f"{layer.index}:{unit}", steps=8, size=32, record_every=1)
    trace = r.traces[0]
    assert len(trace) == 8 and np.isfinite(trace).all() and trace[-1] > trace[0], trace
    args = ["check", str(path), "--quiet", "--size", "32", "--ascent", "none", "--noise-probes", "2"]
    assert main(args) in (0, 1)


# -- fp16 / bf16 -----------------------------------------------------------------------------------------------------
def bf16_copy(src: Path, dst: Path) -> Path:
    """Weights stored as bf16 (Cast to float before use) and every Conv/Relu output rounded to bf16 and back."""
    m = onnx.load(str(src))
    g = m.graph
    inits, casts = [], []
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32:
            inits.append(t)
            continue
        bt = helper.make_tensor(f"{t.name}_bf16", TensorProto.BFLOAT16, a.shape, a.reshape(-1).tolist())
        inits.append(bt)
        casts.append(helper.make_node("Cast", [bt.name], [t.name], to=TensorProto.FLOAT))
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type in ("Conv", "Relu"):
            out = n.output[0]
            n.output[0] = f"{out}_f32"
            nodes += [helper.make_node("Cast", [f"{out}_f32"], [f"{out}_bf"], to=TensorProto.BFLOAT16),
                      helper.make_node("Cast", [f"{out}_bf"], [out], to=TensorProto.FLOAT)]
    del g.initializer[:], g.node[:]
    g.initializer.extend(inits)
    g.node.extend(casts + nodes)
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("variant,rtol", [("fp16 keep_io_types", 1e-4), ("fp16 fp16 io", 2e-3), ("bf16", 1e-4)])
def test_half_precision_runs_in_float32_and_matches_onnxruntime(float_cnn, variant, rtol):
    from onnxconverter_common import float16

    path = float_cnn.with_name(variant.replace(" ", "_") + ".onnx")
    if variant == "bf16":
        bf16_copy(float_cnn, path)
    else:
        onnx.save(float16.convert_float_to_float16(onnx.load(str(float_cnn)),
                                                   keep_io_types=variant.endswith("types")), str(path))
    m = vizcore.load(path, size=32)
    assert m.input.dtype == "float32" and all(p.dtype == torch.float32 for p in m.module.parameters())
    assert dict(m.prepasses)["half_to_float"] > 0
    x = np.random.default_rng(3).random((3, 3, 32, 32), dtype=np.float32)
    ref = np.abs(ort_run(float_cnn, {"image": x})[0]).max()
    for diff in parity(path).values():
        assert diff <= rtol * ref
    fid = fidelity(m, size=32)
    assert fid["available"] and fid["max_abs_diff"] <= rtol * ref
    r = vizcore.render(m, "0:0", steps=8, size=32, record_every=1)
    assert len(r.traces[0]) == 8 and r.traces[0][-1] > r.traces[0][0], r.traces[0]
    assert main(["check", str(path), "--quiet", "--size", "32", "--no-dead"]) in (0, 1)


# -- single ops --------------------------------------------------------------------------------------------------------
def run_single(tmp_path: Path, nodes: list, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray],
               out_type: int, opset: int = 17, msft: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(vizcore's output, onnxruntime's) for a one-output graph."""
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in feeds.items()]
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if msft else [])
    graph = helper.make_graph(nodes, "q", ins, [helper.make_tensor_value_info("y", out_type, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    draft = helper.make_model(graph, opset_imports=opsets)
    draft.ir_version = 8
    ref = ort_run(draft, feeds)[0]
    draft.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", out_type, ref.shape))
    path = tmp_path / "single.onnx"
    onnx.save(draft, str(path))
    m = vizcore.load(path)
    with torch.no_grad():
        got = m.module(*[torch.from_numpy(v.copy()) for v in feeds.values()])
    return got.numpy(), ref


@pytest.mark.parametrize("zp_dtype,axis", [(np.int8, 1), (np.uint8, 0), (np.int8, 0)])
def test_per_axis_quantize_dequantize_exact(tmp_path, zp_dtype, axis):
    x = np.random.default_rng(0).uniform(-3, 3, (2, 4, 3)).astype(np.float32)
    n = x.shape[axis]
    scale = np.linspace(0.01, 0.03, n).astype(np.float32)
    zp = (np.arange(n) * (3 if zp_dtype == np.uint8 else -1) + (120 if zp_dtype == np.uint8 else 0)).astype(zp_dtype)
    qtype = helper.np_dtype_to_tensor_dtype(np.dtype(zp_dtype))
    quant = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis)
    got, ref = run_single(tmp_path, [quant], {"x": x}, {"s": scale, "z": zp}, qtype)
    info = np.iinfo(zp_dtype)
    assert (ref == info.max).any() or (ref == info.min).any()  # saturation is exercised
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    quant = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis)
    dequant = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)
    got, ref = run_single(tmp_path, [quant, dequant], {"x": x}, {"s": scale, "z": zp}, TensorProto.FLOAT)
    np.testing.assert_array_equal(got, ref)


def test_round_half_to_even_and_straight_through_gradient():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.49], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, 0.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 6


def test_quantize_gradient_is_zero_outside_the_clamp_range(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                               numpy_helper.from_array(np.array(0, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "qdq.onnx"))
    m = vizcore.load(tmp_path / "qdq.onnx")
    x = torch.tensor([[0.04, 1.0, 20.0, -20.0]], requires_grad=True)  # +-20 saturate at 12.7 / -12.8
    y = m.module(x)
    assert y.detach().flatten().tolist() == pytest.approx([0.0, 1.0, 12.7, -12.8])
    y.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def _qvalues(rng: np.random.Generator, dtype: type, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


MS = "com.microsoft"
QLINEAR = {
    "QLinearAdd": helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS),
    "QLinearMul": helper.make_node("QLinearMul", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS),
    "QLinearSigmoid": helper.make_node("QLinearSigmoid", ["a", "sa", "za", "sc", "zc"], ["y"], domain=MS),
    "QLinearLeakyRelu": helper.make_node("QLinearLeakyRelu", ["a", "sa", "za", "sc", "zc"], ["y"], domain=MS,
                                         alpha=0.3),
    "QLinearConcat": helper.make_node("QLinearConcat", ["sc", "zc", "a", "sa", "za", "b", "sb", "zb"], ["y"],
                                      domain=MS, axis=1),
    "QLinearGlobalAveragePool": helper.make_node("QLinearGlobalAveragePool", ["a", "sa", "za", "sc", "zc"], ["y"],
                                                 domain=MS),
    "QLinearMatMul": helper.make_node("QLinearMatMul", ["a", "sa", "za", "m", "sb", "zb", "sc", "zc"], ["y"]),
}


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("op", sorted(QLINEAR))
def test_qlinear_ops_match_onnxruntime(tmp_path, dtype, op):
    """The QOperator ops onnxruntime's quantizer writes: onnxruntime's integers, at most one step off."""
    rng = np.random.default_rng(1)
    zp = (np.array([3, -5, 7]) + (128 if dtype == np.uint8 else 0)).astype(dtype)
    sc = np.array([0.02, 0.03, 0.05], np.float32)
    inits = {"sa": sc[0], "za": zp[0], "sb": sc[1], "zb": zp[1], "sc": sc[2], "zc": zp[2],
             "b": _qvalues(rng, dtype, 2, 3, 4, 4), "m": _qvalues(rng, dtype, 4, 5)}
    if op != "QLinearConcat" and op != "QLinearAdd" and op != "QLinearMul":
        inits.pop("b")
    if op != "QLinearMatMul":
        inits.pop("m")
    qt = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = (_qvalues(rng, dtype, 2, 3, 4, 4).astype(np.float32) - float(zp[0])) * sc[0]  # quantizes back exactly
    quant = helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["a"])
    got, ref = run_single(tmp_path, [quant, QLINEAR[op]], {"x": x}, inits, qt, msft=True)
    assert np.abs(got - ref.astype(np.float32)).max() <= 1.0
    assert (got == ref).mean() >= 0.99


def test_blocked_quantization_is_refused_with_the_node_name(tmp_path):
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], name="blocked", axis=1, block_size=2)
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.ones((1, 2), np.float32), "s"),
                               numpy_helper.from_array(np.zeros((1, 2), np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "blocked.onnx"))
    with pytest.raises(UnsupportedOpError, match="blocked") as err:
        vizcore.load(tmp_path / "blocked.onnx")
    assert "'blocked'" in err.value.message


@pytest.mark.parametrize("quantized_output", [True, False])
def test_qgemm_matches_onnxruntime(tmp_path, quantized_output):
    """com.microsoft QGemm with per-column weight scales, an int32 bias and alpha; quantized or float output."""
    rng = np.random.default_rng(2)
    inits = {"sa": np.array(0.01, np.float32), "za": np.array(3, np.uint8),
             "b": rng.integers(-128, 128, (5, 4)).astype(np.int8), "sb": np.linspace(0.01, 0.02, 5).astype(np.float32),
             "zb": np.zeros(5, np.int8), "c": rng.integers(-500, 500, 5).astype(np.int32),
             "sy": np.array(0.05, np.float32), "zy": np.array(128, np.uint8)}
    ins = ["a", "sa", "za", "b", "sb", "zb", "c"] + (["sy", "zy"] if quantized_output else [])
    if not quantized_output:
        del inits["sy"], inits["zy"]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["a"]),
             helper.make_node("QGemm", ins, ["y"], domain=MS, transB=1, alpha=0.7)]
    x = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
    out = TensorProto.UINT8 if quantized_output else TensorProto.FLOAT
    got, ref = run_single(tmp_path, nodes, {"x": x}, inits, out, msft=True)
    np.testing.assert_allclose(got, ref.astype(np.float32), atol=1e-5 if not quantized_output else 0)


def test_float8_quantization_is_refused(tmp_path):
    zp = helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="to_fp8"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="from_fp8")]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(0.5, np.float32), "s"), zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "fp8.onnx"))
    with pytest.raises(UnsupportedOpError, match="float8") as err:
        vizcore.load(tmp_path / "fp8.onnx")
    assert "'to_fp8'" in err.value.message
