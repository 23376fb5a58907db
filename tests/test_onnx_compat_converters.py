"""Each vizcore converter against onnxruntime on a tiny model built here with onnx.helper (one case per feature).

Every case goes through `vizcore.load` (checker, pre-passes, conversion, probe) and, for float inputs, checks that
the gradient reaching the first input is finite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from conftest import make_onnx, ort_run
from onnx import TensorProto, helper, numpy_helper

import vizcore

RNG = np.random.default_rng(0)
_DTYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int64"): TensorProto.INT64}


def f32(*shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def run_case(tmp_path, nodes: Sequence, feeds: dict[str, np.ndarray], outputs: Sequence[str],
             inits: dict[str, np.ndarray] | None = None, opset: int = 20, atol: float = 1e-5,
             grad: bool = True) -> vizcore.Model:
    inits = inits or {}
    ins = [helper.make_tensor_value_info(k, _DTYPES[v.dtype], v.shape) for k, v in feeds.items()]
    initializers = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    draft = make_onnx(nodes, ins, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                      initializers, opset=opset)
    ref = ort_run(draft, feeds)  # onnxruntime does not need output shapes; the checker does: take them from it
    outs = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(r.dtype), r.shape)
            for o, r in zip(outputs, ref)]
    model = make_onnx(nodes, ins, outs, initializers, opset=opset)
    path = tmp_path / "case.onnx"
    path.write_bytes(model.SerializeToString())
    m = vizcore.load(path)
    args = [torch.from_numpy(v.copy()) for v in feeds.values()]
    if grad:
        args[0].requires_grad_(True)
    got = m.module(*args)
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    for r, g in zip(ref, got):
        assert tuple(g.shape) == r.shape
        np.testing.assert_allclose(g.detach().numpy(), r, atol=atol, rtol=1e-4)
    if grad:
        weights = [torch.from_numpy(RNG.standard_normal(r.shape).astype(np.float32)) for r in ref]
        sum((g * w).sum() for g, w in zip(got, weights) if g.is_floating_point()).backward()
        assert args[0].grad is not None and torch.isfinite(args[0].grad).all()
    return m


W = f32(4, 3, 3, 3)
B = f32(4)
WT = f32(3, 4, 3, 3)  # ConvTranspose: (C_in, C_out / group, k, k)

CASES = {
    # conv.py
    "conv SAME_UPPER stride 2 @22": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER",
                                                       strides=[2, 2])], {"x": f32(1, 3, 7, 8)}, {"w": W, "b": B}, 22),
    "conv SAME_LOWER": ([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 3])],
                        {"x": f32(1, 3, 6, 5)}, {"w": W}, 20),
    "conv asymmetric pads": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[0, 1, 2, 0])],
                             {"x": f32(2, 3, 5, 5)}, {"w": W, "b": B}, 17),
    "conv weights as input": ([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                              {"x": f32(1, 3, 5, 5), "w": W}, {}, 17),
    "conv1d group": ([helper.make_node("Conv", ["x", "w"], ["y"], group=2, strides=[2])],
                     {"x": f32(1, 4, 9)}, {"w": f32(6, 2, 3)}, 22),
    "convtranspose asymmetric pads": ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2],
                                                        pads=[0, 1, 1, 0])], {"x": f32(1, 3, 4, 4)},
                                      {"w": WT, "b": B}, 17),
    "convtranspose output_shape": ([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                                                     output_shape=[9, 10])], {"x": f32(1, 3, 4, 5)}, {"w": WT}, 17),
    "convtranspose output_padding @22": ([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                                                           output_padding=[1, 0], pads=[1, 1, 1, 1])],
                                         {"x": f32(1, 3, 4, 4)}, {"w": WT}, 22),
    # pool.py
    "maxpool SAME_UPPER": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                             auto_pad="SAME_UPPER")], {"x": f32(1, 2, 7, 6)}, {}, 20),
    "maxpool asymmetric pads @22": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                                      pads=[0, 0, 1, 1])], {"x": f32(1, 2, 5, 5)}, {}, 22),
    "averagepool asymmetric exclude pad @19": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                                 pads=[1, 0, 0, 1])], {"x": f32(1, 2, 5, 5)}, {}, 19),
    "averagepool include pad @22": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                      pads=[1, 1, 2, 2], count_include_pad=1)],
                                    {"x": f32(1, 2, 5, 5)}, {}, 22),
    "averagepool SAME_UPPER": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                 auto_pad="SAME_UPPER")], {"x": f32(1, 2, 6, 6)}, {}, 20),
    "averagepool ceil_mode": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                                ceil_mode=1)], {"x": f32(1, 2, 5, 5)}, {}, 20),
    "globalaveragepool rank 3": ([helper.make_node("GlobalAveragePool", ["x"], ["y"])], {"x": f32(2, 3, 7)}, {}, 22),
    "globalmaxpool": ([helper.make_node("GlobalMaxPool", ["x"], ["y"])], {"x": f32(2, 3, 4, 5)}, {}, 20),
    # reduce.py
    "reducemean@18 axes input": ([helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=0)],
                                 {"x": f32(2, 3, 4, 5)}, {"ax": i64(2, 3)}, 18),
    "reducemax@20 noop empty axes": ([helper.make_node("ReduceMax", ["x"], ["y"], noop_with_empty_axes=1)],
                                     {"x": f32(2, 3, 4)}, {}, 20),
    "reducemin@20 negative axis": ([helper.make_node("ReduceMin", ["x", "ax"], ["y"])], {"x": f32(2, 3, 4)},
                                   {"ax": i64(-1)}, 20),
    "reducel2@18 all": ([helper.make_node("ReduceL2", ["x"], ["y"], keepdims=0)], {"x": f32(2, 3)}, {}, 18),
    "reducel1@18": ([helper.make_node("ReduceL1", ["x", "ax"], ["y"])], {"x": f32(2, 3, 4)}, {"ax": i64(1)}, 18),
    "reduceprod@18 two axes": ([helper.make_node("ReduceProd", ["x", "ax"], ["y"], keepdims=0)],
                               {"x": f32(2, 3, 4, low=0.5, high=1.5)}, {"ax": i64(0, 2)}, 18),
    "reducesumsquare@18": ([helper.make_node("ReduceSumSquare", ["x", "ax"], ["y"])], {"x": f32(2, 3, 4)},
                           {"ax": i64(1, 2)}, 18),
    "reducelogsum@18": ([helper.make_node("ReduceLogSum", ["x", "ax"], ["y"])], {"x": f32(2, 3, low=0.1)},
                        {"ax": i64(1)}, 18),
    "reducelogsumexp@18": ([helper.make_node("ReduceLogSumExp", ["x", "ax"], ["y"])], {"x": f32(2, 3)},
                           {"ax": i64(0)}, 18),
    # reshape.py
    "reshape@21 allowzero": ([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)], {"x": f32(2, 3, 4)},
                             {"s": i64(2, 12)}, 21),
    "reshape@19 zero copies": ([helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": f32(2, 3, 4)},
                               {"s": i64(0, -1)}, 19),
    "reshape computed shape": ([helper.make_node("Shape", ["x"], ["sh"], end=1),
                                helper.make_node("Concat", ["sh", "m1"], ["s"], axis=0),
                                helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": f32(2, 3, 4)},
                               {"m1": i64(-1)}, 21),
    # pad.py
    "pad@19 reflect with axes": ([helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], mode="reflect")],
                                 {"x": f32(1, 2, 4, 5)}, {"p": i64(1, 2, 2, 1), "ax": i64(2, 3)}, 19),
    "pad@19 wrap": ([helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap")], {"x": f32(1, 2, 3, 4)},
                    {"p": i64(0, 0, 1, 2, 0, 0, 2, 1)}, 19),
    "pad@18 edge on channel axis": ([helper.make_node("Pad", ["x", "p"], ["y"], mode="edge")], {"x": f32(1, 2, 3)},
                                    {"p": i64(0, 1, 0, 0, 2, 1)}, 18),
    "pad@21 constant value, negative": ([helper.make_node("Pad", ["x", "p", "v"], ["y"])], {"x": f32(1, 2, 4, 4)},
                                        {"p": i64(0, 0, 1, -1, 0, 0, -1, 2), "v": np.array(0.5, np.float32)}, 21),
    # split.py
    "split@18 num_outputs uneven": ([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)],
                                    {"x": f32(2, 7)}, {}, 18),
    "split@18 sizes": ([helper.make_node("Split", ["x", "s"], ["a", "b"], axis=0)], {"x": f32(5, 2)},
                       {"s": i64(2, 3)}, 18),
    # resize.py
    "resize nearest asymmetric floor": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                                                          coordinate_transformation_mode="asymmetric",
                                                          nearest_mode="floor")], {"x": f32(1, 2, 3, 4)},
                                        {"sc": np.array([1, 1, 2, 1.5], np.float32)}, 19),
    "resize nearest half_pixel": ([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="nearest")],
                                  {"x": f32(1, 2, 5, 4)}, {"sz": i64(1, 2, 7, 9)}, 19),
    "resize nearest round_prefer_ceil": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                                                           nearest_mode="round_prefer_ceil")],
                                         {"x": f32(1, 1, 4, 4)}, {"sc": np.array([1, 1, 0.6, 2.5], np.float32)}, 18),
    "resize linear half_pixel": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")],
                                 {"x": f32(1, 2, 4, 5)}, {"sc": np.array([1, 1, 2, 1.7], np.float32)}, 19),
    "resize linear align_corners": ([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                                                      coordinate_transformation_mode="align_corners")],
                                    {"x": f32(1, 2, 4, 5)}, {"sz": i64(1, 2, 7, 3)}, 13),
    "resize linear asymmetric": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear",
                                                   coordinate_transformation_mode="asymmetric")],
                                 {"x": f32(1, 2, 4, 5)}, {"sc": np.array([1, 1, 2, 2], np.float32)}, 13),
    "resize cubic": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")], {"x": f32(1, 1, 5, 5)},
                     {"sc": np.array([1, 1, 1.6, 2], np.float32)}, 19),
    "resize cubic exclude_outside": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic",
                                                       exclude_outside=1, cubic_coeff_a=-0.5)],
                                     {"x": f32(1, 1, 5, 5)}, {"sc": np.array([1, 1, 2, 0.8], np.float32)}, 19),
    "resize linear antialias": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear", antialias=1)],
                                {"x": f32(1, 2, 9, 8)}, {"sc": np.array([1, 1, 0.5, 0.4], np.float32)}, 18),
    "resize sizes axes not_larger": ([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                                                       axes=[2, 3], keep_aspect_ratio_policy="not_larger")],
                                     {"x": f32(1, 2, 4, 6)}, {"sz": i64(8, 8)}, 18),
    "resize tf_crop_and_resize": ([helper.make_node("Resize", ["x", "roi", "", "sz"], ["y"], mode="linear",
                                                    coordinate_transformation_mode="tf_crop_and_resize",
                                                    extrapolation_value=-1.0)],
                                  {"x": f32(1, 1, 5, 5)},
                                  {"roi": np.array([0, 0, -0.2, 0.1, 1, 1, 0.8, 1.3], np.float32),
                                   "sz": i64(1, 1, 4, 6)},
                                  13),
    "resize half_pixel_symmetric": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear",
                                                      coordinate_transformation_mode="half_pixel_symmetric")],
                                    {"x": f32(1, 1, 4, 5)}, {"sc": np.array([1, 1, 1.5, 2.3], np.float32)}, 19),
    # scatter.py
    "scatternd@18 max": ([helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
                         {"x": f32(4, 3)}, {"i": np.array([[1], [3], [1]], np.int64), "u": f32(3, 3)}, 18),
    "scatternd none": ([helper.make_node("ScatterND", ["x", "i", "u"], ["y"])], {"x": f32(2, 3, 4)},
                       {"i": np.array([[0, 1], [1, 2]], np.int64), "u": f32(2, 4)}, 18),
    "scatterelements@18 add": ([helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1,
                                                 reduction="add")], {"x": f32(2, 4)},
                               {"i": np.array([[1, 1], [0, -1]], np.int64), "u": f32(2, 2)}, 18),
    # norm.py
    "layernorm@17 unknown shape": ([helper.make_node("Relu", ["x"], ["r"]),
                                    helper.make_node("LayerNormalization", ["r", "s", "b"], ["y"], axis=-2)],
                                   {"x": f32(2, 3, 4)}, {"s": f32(3, 4), "b": f32(3, 4)}, 17),
    "layernorm@17 broadcast scale": ([helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=1)],
                                     {"x": f32(2, 3, 4)}, {"s": f32(1, 4)}, 17),
    "groupnorm@21": ([helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)],
                     {"x": f32(2, 4, 3, 3)}, {"s": f32(4), "b": f32(4)}, 21),
    # activations.py
    "gelu@20 tanh": ([helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], {"x": f32(3, 4)}, {}, 20),
    "gelu@20 exact": ([helper.make_node("Gelu", ["x"], ["y"])], {"x": f32(3, 4)}, {}, 20),
    "mish@18": ([helper.make_node("Mish", ["x"], ["y"])], {"x": f32(3, 4)}, {}, 18),
    "clip dynamic bounds": ([helper.make_node("ReduceMin", ["x"], ["lo"], keepdims=0),
                             helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"x": f32(3, 4)},
                            {"hi": np.array(0.3, np.float32)}, 17),
    "clip omitted min": ([helper.make_node("Clip", ["x", "", "hi"], ["y"])], {"x": f32(3, 4)},
                         {"hi": np.array(0.2, np.float32)}, 13),
    "shrink": ([helper.make_node("Shrink", ["x"], ["y"], lambd=0.3, bias=0.1)], {"x": f32(3, 4)}, {}, 17),
    "thresholdedrelu": ([helper.make_node("ThresholdedRelu", ["x"], ["y"], alpha=0.2)], {"x": f32(3, 4)}, {}, 17),
    # slicing.py
    "slice negative step": ([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], {"x": f32(3, 6)},
                            {"st": i64(-1), "en": i64(-100), "ax": i64(1), "sp": i64(-2)}, 13),
    "slice computed ends": ([helper.make_node("Shape", ["x"], ["sh"]),
                             helper.make_node("Slice", ["x", "st", "sh", "ax"], ["y"])], {"x": f32(3, 6)},
                            {"st": i64(1, 2), "ax": i64(0, 1)}, 13),
    "flatten axis 0": ([helper.make_node("Flatten", ["x"], ["y"], axis=0)], {"x": f32(2, 3, 4)}, {}, 21),
    "flatten negative axis": ([helper.make_node("Flatten", ["x"], ["y"], axis=-1)], {"x": f32(2, 3, 4)}, {}, 13),
    # sequence.py
    "split to sequence and concat": ([helper.make_node("SplitToSequence", ["x"], ["s"], axis=1, keepdims=0),
                                      helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0, new_axis=1)],
                                     {"x": f32(2, 3, 4)}, {}, 17),
    # aliases.py
    "greaterorequal@16 where": ([helper.make_node("GreaterOrEqual", ["x", "z"], ["c"]),
                                 helper.make_node("Where", ["c", "x", "z"], ["y"])], {"x": f32(3, 4)},
                                {"z": np.array(0.1, np.float32)}, 17),
    "cast/shape/identity @21": ([helper.make_node("Shape", ["x"], ["s"]),
                                 helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
                                 helper.make_node("Identity", ["x"], ["i"]),
                                 helper.make_node("Add", ["i", "sf"], ["y"])], {"x": f32(3, 2)}, {}, 21),
}


@pytest.mark.parametrize("case", list(CASES))
def test_converter_matches_onnxruntime(tmp_path, case):
    nodes, feeds, inits, opset = CASES[case]
    outputs = [o for n in nodes[-1:] for o in n.output]
    run_case(tmp_path, nodes, feeds, outputs, inits, opset=opset)


def _rnn(kind: str, dirs: int, hidden: int = 5, inp: int = 3) -> dict[str, np.ndarray]:
    gates = 4 if kind == "LSTM" else 3
    return {"W": f32(dirs, gates * hidden, inp), "R": f32(dirs, gates * hidden, hidden),
            "B": f32(dirs, 2 * gates * hidden)}


RNN_CASES = {
    "lstm forward, all outputs": ("LSTM", {"direction": "forward"}, 1, ["y", "yh", "yc"], 0, False),
    "lstm bidirectional, initial state": ("LSTM", {"direction": "bidirectional"}, 2, ["y", "yh"], 0, True),
    "lstm reverse": ("LSTM", {"direction": "reverse"}, 1, ["y"], 0, False),
    "gru linear_before_reset=1": ("GRU", {"linear_before_reset": 1}, 1, ["y", "yh"], 0, True),
    "gru linear_before_reset=0 bidirectional": ("GRU", {"direction": "bidirectional"}, 2, ["y", "yh"], 0, False),
}


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_recurrent_matches_onnxruntime(tmp_path, case):
    kind, attrs, dirs, outs, layout, init = RNN_CASES[case]
    inits = _rnn(kind, dirs)
    feeds = {"x": f32(4, 2, 3) if layout == 0 else f32(2, 4, 3)}
    ins = ["x", "W", "R", "B"]
    if init:
        ins += ["", "h0"] + (["c0"] if kind == "LSTM" else [])
        inits["h0"] = f32(dirs, 2, 5)
        if kind == "LSTM":
            inits["c0"] = f32(dirs, 2, 5)
    node = helper.make_node(kind, ins, outs, hidden_size=5, **attrs)
    run_case(tmp_path, [node], feeds, outs, inits, opset=14)


def test_recurrent_batch_first_layout_equals_seq_first(tmp_path):
    """onnxruntime has no layout=1 kernel: compare with vizcore's own layout=0 conversion of the same weights."""
    inits = _rnn("LSTM", 2)
    x = f32(4, 2, 3)
    got = {}
    for layout in (0, 1):
        node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=5, layout=layout,
                                direction="bidirectional")
        shape = [4, 2, 3] if layout == 0 else [2, 4, 3]
        model = make_onnx([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y", "yh")],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()], opset=14)
        m = vizcore.load(_save_unchecked(tmp_path / f"l{layout}.onnx", model))
        got[layout] = m.module(torch.from_numpy(x if layout == 0 else x.transpose(1, 0, 2).copy()))
    y0, h0 = got[0]
    y1, h1 = got[1]
    assert torch.allclose(y1, y0.permute(2, 0, 1, 3), atol=1e-6) and torch.allclose(h1, h0.transpose(0, 1))


def _save_unchecked(path, model):  # noqa: ANN001, ANN202 - outputs without shapes: fine for vizcore, not the checker
    for o in model.graph.output:
        o.type.tensor_type.shape.SetInParent()
    path.write_bytes(model.SerializeToString())
    return path


def test_resize_scales_at_run_time(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Cast", ["sh"], ["shf"], to=1),
             helper.make_node("Div", ["shf", "shf"], ["one"]), helper.make_node("Mul", ["one", "two"], ["sc"]),
             helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")]
    run_case(tmp_path, nodes, {"x": f32(1, 1, 3, 3)}, ["y"], {"two": np.array([1, 1, 2, 2], np.float32)}, opset=19)


def test_scatternd_gradient_reaches_updates(tmp_path):
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])]
    m = run_case(tmp_path, nodes, {"u": f32(2, 3), "x": f32(4, 3)}, ["y"], {"i": np.array([[0], [2]], np.int64)},
                 opset=18)
    u = torch.from_numpy(f32(2, 3)).requires_grad_(True)
    m.module(u, torch.zeros(4, 3)).sum().backward()
    assert torch.equal(u.grad, torch.ones(2, 3))
