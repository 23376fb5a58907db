"""ONNX `Loop` with a known iteration count: unrolled by the pre-pass `unroll_constant_loops` (onnx_compat/loops.py),
then converted like any graph. A Loop it cannot unroll stays, and the layers before it still load (partial.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import make_onnx, ort_run, tensor
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import vizcore
from vizcore.analysis.fidelity import fidelity
from vizcore.cli import main
from vizcore.errors import UnsupportedOpError
from vizcore.onnx_compat import loops

RNG = np.random.default_rng(0)
SHAPE = ["N", 4, 8, 8]
META = {"vizcore.mean": "0.5", "vizcore.std": "0.25", "vizcore.range": "0,1"}  # no preprocessing guess warning


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def _body(nodes: list, outputs: list, extra_inputs: tuple = ()) -> onnx.GraphProto:
    inputs = [tensor("i", [], TensorProto.INT64), tensor("cond_in", [], TensorProto.BOOL), tensor("h", SHAPE),
              *extra_inputs]
    return helper.make_graph(nodes, "body", inputs, outputs, [numpy_helper.from_array(np.float32(0.5), "half")])


def _step(h: str, out: str, weight: str = "wl") -> list:
    """h -> Conv(weight) -> Relu -> * half (a body initializer) -> + h: one residual step."""
    return [helper.make_node("Conv", [h, weight], [f"{out}_c"], pads=[1, 1, 1, 1], name=f"{out}_conv"),
            helper.make_node("Relu", [f"{out}_c"], [f"{out}_r"], name=f"{out}_relu"),
            helper.make_node("Mul", [f"{out}_r", "half"], [f"{out}_m"], name=f"{out}_scale"),
            helper.make_node("Add", [f"{out}_m", h], [out], name=f"{out}_add")]


def loop_model(kind: str) -> onnx.ModelProto:
    """x -> conv -> relu -> Loop(...) -> relu. kinds: carry, scan, iteration (unrolled); data_cond, data_trips,
    too_many (stay)."""
    trips = {"too_many": 1000}.get(kind, 3)
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    inits, names = [_w(rng, 4, 3, 3, 3), _w(rng, 4, 4, 3, 3), np.array(trips, np.int64)], ["w1", "wl", "M"]
    cond_out = [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going")]
    outputs = [tensor("y", SHAPE)]
    loop_outputs = ["h_final"]
    if kind == "iteration":  # per-iteration weights picked by i, and an If on i == 0 (a nested subgraph)
        inits += [_w(rng, 3, 4, 4, 3, 3), np.int64(0)]
        names += ["wstack", "zero"]
        then = helper.make_graph([helper.make_node("Identity", ["h"], ["first"], name="as_is")], "then", [],
                                 [tensor("first", SHAPE)])
        other = helper.make_graph([helper.make_node("Neg", ["h"], ["later"], name="negate")], "else", [],
                                  [tensor("later", SHAPE)])
        body_nodes = [helper.make_node("Gather", ["wstack", "i"], ["wi"], axis=0, name="pick"),
                      helper.make_node("Equal", ["i", "zero"], ["is_first"], name="is_first"),
                      helper.make_node("If", ["is_first"], ["hin"], then_branch=then, else_branch=other, name="sign"),
                      *_step("hin", "h_out", "wi"), *cond_out]
    elif kind == "data_cond":  # stop when the mean is large: only the data knows when
        inits.append(np.float32(10.0))
        names.append("limit")
        body_nodes = [*_step("h", "h_out"), helper.make_node("ReduceMean", ["h_out"], ["mean"], keepdims=0),
                      helper.make_node("Less", ["mean", "limit"], ["cond_out"], name="small")]
    else:
        body_nodes = [*_step("h", "h_out"), *cond_out]
    body_outputs = [tensor("cond_out", [], TensorProto.BOOL), tensor("h_out", SHAPE)]
    if kind == "scan":
        body_nodes.append(helper.make_node("GlobalAveragePool", ["h_out"], ["pooled"], name="pool"))
        body_outputs.append(tensor("pooled", ["N", 4, 1, 1]))
        loop_outputs.append("stack")
        outputs.append(tensor("trace", ["N", 12]))
    if kind == "data_trips":
        nodes += [helper.make_node("ReduceMax", ["x"], ["big"], keepdims=0, name="peak"),
                  helper.make_node("Cast", ["big"], ["M"], to=TensorProto.INT64, name="count")]
        inits, names = inits[:2], names[:2]
    nodes += [helper.make_node("Loop", ["M", "", "r"], loop_outputs, body=_body(body_nodes, body_outputs),
                               name="repeat"),
              helper.make_node("Relu", ["h_final"], ["y"], name="out")]
    if kind == "scan":
        nodes += [helper.make_node("Transpose", ["stack"], ["per_sample"], perm=[1, 0, 2, 3, 4], name="batch_first"),
                  helper.make_node("Flatten", ["per_sample"], ["trace"], axis=1, name="flat")]
    model = make_onnx(nodes, [tensor("x", ["N", 3, 8, 8])], outputs, inits, names, opset=17)
    onnx.helper.set_model_props(model, META)
    return model


class Repeat(nn.Module):
    """conv, then `for _ in range(channels - 1)`: a trip count from a static dim, which TorchScript keeps a Loop."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for _ in range(x.size(1) - 1):
            x = torch.relu(self.conv(x)) * 0.5 + x
        return x


def torch_loop(path: Path) -> Path:
    """Repeat scripted and exported by the TorchScript exporter; the test skips if that no longer makes a Loop."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(torch.jit.script(Repeat().eval()), (torch.rand(1, 3, 8, 8),), str(path), dynamo=False,
                              opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    except Exception as exc:  # noqa: BLE001 - the TorchScript exporter is deprecated: gone in a future torch
        pytest.skip(f"TorchScript export failed: {exc}")
    model = onnx.load(str(path))
    if not any(n.op_type == "Loop" for n in model.graph.node):
        pytest.skip("this torch unrolls the loop itself: no Loop to test")
    onnx.helper.set_model_props(model, META)
    onnx.save(model, str(path))
    return path


@pytest.fixture(params=["carry", "scan", "iteration", "torch"])
def unrolled(request, save_onnx, tmp_path) -> Path:  # noqa: ANN001
    if request.param == "torch":
        return torch_loop(tmp_path / "torch_loop.onnx")
    return save_onnx(loop_model(request.param), f"{request.param}.onnx")


def _outputs(result: object) -> list[np.ndarray]:
    parts = result if isinstance(result, (tuple, list)) else [result]
    return [p.detach().numpy() for p in parts]


def test_unrolled_loop_matches_onnxruntime_at_batch_1_and_3(unrolled):
    m = vizcore.load(unrolled)
    assert dict(m.prepasses)["unroll_constant_loops"] == 1
    assert not m.unreachable
    assert "Loop" not in {l.op_type for l in m.layers}
    assert sum(l.op_type == "Conv" for l in m.layers) == 4  # the stem and three copies of the body's Conv
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 8, 8), dtype=np.float32)
        ref = ort_run(unrolled, {"x": x})
        with torch.no_grad():
            got = _outputs(m.run(torch.from_numpy(x)))
        assert len(got) == len(ref)
        for r, g in zip(ref, got):
            assert r.shape == g.shape
            assert np.abs(r - g).max() <= 1e-5 * np.abs(r).max(), (batch, np.abs(r - g).max())


def test_unrolled_loop_has_an_input_gradient_and_renders(unrolled):
    m = vizcore.load(unrolled, size=8)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = m.run(x)
    sum(o.sum() for o in (out if isinstance(out, (tuple, list)) else [out])).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    last = [l for l in m.layers if l.op_type == "Conv"][-1]  # inside the last copy of the body
    with torch.no_grad():
        act = m.cut_at([last.index])(m.probe_input(1, 8))[0]
    unit = int(act.flatten(2).mean(-1)[0].argmax())
    r = vizcore.render(m, f"{last.index}:{unit}", steps=6, size=8, device="cpu", record_every=1)
    trace = r.traces[0]
    assert np.isfinite(trace).all() and trace[-1] > trace[0], trace


def test_vizcore_check_runs_on_an_unrolled_loop(unrolled, capsys):
    args = ["check", str(unrolled), "--quiet", "--size", "8", "--ascent", "none", "--noise-probes", "2"]
    assert main(args) in (0, 1)
    assert "Traceback" not in capsys.readouterr().err


def test_copies_are_renamed_and_the_iteration_number_is_a_constant(save_onnx):
    model = loop_model("iteration")
    assert loops.unroll_constant_loops(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Loop" not in ops and "If" not in ops and "Gather" not in ops  # folded and inlined after the unroll
    assert ops.count("Neg") == 2  # i == 0 keeps h as it is; iterations 1 and 2 negate it
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"][1:]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "wstack" not in inits  # read by the Loop's body only: gone with it
    stack = next(numpy_helper.to_array(t) for t in loop_model("iteration").graph.initializer if t.name == "wstack")
    for k, w in enumerate(conv_weights):
        assert w.startswith(f"repeat[{k}]/") and np.array_equal(inits[w], stack[k])
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names))
    outputs = [o for n in model.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))


def test_scan_outputs_are_stacked_along_a_new_axis(save_onnx):
    model = loop_model("scan")
    loops.unroll_constant_loops(model)
    stackers = [n for n in model.graph.node if n.output[0] == "stack"]
    assert [n.op_type for n in stackers] == ["Concat"] and stackers[0].attribute[0].i == 0
    assert [n.op_type for n in model.graph.node if n.output[0] in stackers[0].input] == ["Unsqueeze"] * 3
    x = RNG.random((2, 3, 8, 8), dtype=np.float32)
    before = ort_run(loop_model("scan"), {"x": x})
    after = ort_run(model, {"x": x})
    np.testing.assert_allclose(after[1], before[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,why", [("data_cond", "the body's condition output depends on the data"),
                                      ("data_trips", "the trip count depends on the data"),
                                      ("too_many", "more than 64 iterations (1000)")])
def test_a_loop_that_cannot_be_unrolled_stays_and_the_layers_before_it_load(save_onnx, kind, why):
    path = save_onnx(loop_model(kind), f"{kind}.onnx")
    m = vizcore.load(path)
    assert dict(m.prepasses)["unroll_constant_loops"] == 0
    before = [l.name for l in m.layers]
    assert before[:2] == ["conv", "relu"] and "repeat" not in before
    assert [(n, op) for n, op, _ in m.unreachable][:1] == [("repeat", "Loop")]
    reason = m.unreachable[0][2]
    assert "control flow not unrolled" in reason and why in reason, reason
    assert fidelity(m)["max_abs_diff"] < 1e-5


def test_a_loop_without_iterations_passes_its_initial_values_on(save_onnx):
    model = loop_model("carry")
    inits = {t.name: t for t in model.graph.initializer}
    inits["M"].CopyFrom(numpy_helper.from_array(np.array(0, np.int64), "M"))
    assert loops.unroll_constant_loops(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "Identity", "Relu"]
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    stem = make_onnx(list(model.graph.node)[:2], [tensor("x", ["N", 3, 8, 8])], [tensor("r", SHAPE)],
                     list(model.graph.initializer), opset=17)
    np.testing.assert_allclose(ort_run(model, {"x": x})[0], ort_run(stem, {"x": x})[0], rtol=1e-6)


def test_a_reason_in_the_file_is_not_trusted(save_onnx):
    model = loop_model("carry")
    entry = next(n for n in model.graph.node if n.op_type == "Loop").metadata_props.add()
    entry.key, entry.value = loops.REASON_KEY, "planted"
    assert loops.unroll_constant_loops(model) == 1  # unrolled all the same
    model = loop_model("data_trips")
    entry = next(n for n in model.graph.node if n.op_type == "Loop").metadata_props.add()
    entry.key, entry.value = loops.REASON_KEY, "planted"
    loops.unroll_constant_loops(model)
    assert loops.refusal(next(n for n in model.graph.node if n.op_type == "Loop")) == \
        "the trip count depends on the data"


def _unrolled_matches(model: onnx.ModelProto, x: np.ndarray) -> onnx.ModelProto:
    """The model after the load pre-passes up to this one; asserts onnxruntime gives the same outputs."""
    from vizcore.onnx_compat import prepasses

    before = ort_run(model, {"x": x})
    for p in (prepasses.constants_to_initializers, prepasses.fold_constants, prepasses.inline_constant_if,
              loops.unroll_constant_loops):
        p(model)
    onnx.checker.check_model(model, full_check=True)
    for r, a in zip(before, ort_run(model, {"x": x}), strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-6)
    assert "Loop" not in {n.op_type for n in model.graph.node}
    return model


@pytest.mark.parametrize("opset", [11, 17])  # Unsqueeze's axes: an attribute before opset 13, an input since
def test_a_while_loop_with_a_constant_counter_is_unrolled(opset):
    """No trip count: a carried counter k ends it (k + 1 < 3); h is both carried and scanned."""
    body = helper.make_graph(
        [helper.make_node("Add", ["k", "one"], ["k_out"]), helper.make_node("Less", ["k_out", "three"], ["c_out"]),
         helper.make_node("Mul", ["h", "w"], ["h_out"])], "body",
        [tensor("i", [], TensorProto.INT64), tensor("c", [], TensorProto.BOOL), tensor("k", [], TensorProto.INT64),
         tensor("h", ["N", 4])],
        [tensor("c_out", [], TensorProto.BOOL), tensor("k_out", [], TensorProto.INT64), tensor("h_out", ["N", 4]),
         tensor("h_out", ["N", 4])])
    nodes = [helper.make_node("Constant", [], ["t"], value=helper.make_tensor("v", TensorProto.BOOL, [], [True])),
             helper.make_node("Loop", ["", "t", "k0", "x"], ["kf", "hf", "hs"], body=body, name="while")]
    model = make_onnx(nodes, [tensor("x", ["N", 4])],
                      [tensor("kf", [], TensorProto.INT64), tensor("hf", ["N", 4]), tensor("hs", [3, "N", 4])],
                      [np.int64(0), np.int64(1), np.int64(3), np.float32(1.5)], ["k0", "one", "three", "w"],
                      opset=opset)
    model = _unrolled_matches(model, RNG.random((2, 4), dtype=np.float32))
    assert [n.op_type for n in model.graph.node].count("Mul") == 3


def test_a_nested_loop_whose_count_is_the_outer_iteration_number_is_unrolled_too():
    """outer M = 2; inner M = i + 1 adds the outer body's h to its own carried g: x + x, then (2x) + 2 * 2x."""
    inner = helper.make_graph(
        [helper.make_node("Add", ["g", "h"], ["g_out"], name="accumulate"),
         helper.make_node("Identity", ["c2"], ["c2_out"])], "inner",
        [tensor("j", [], TensorProto.INT64), tensor("c2", [], TensorProto.BOOL), tensor("g", ["N", 4])],
        [tensor("c2_out", [], TensorProto.BOOL), tensor("g_out", ["N", 4])])
    outer = helper.make_graph(
        [helper.make_node("Add", ["i", "one"], ["m_in"]),
         helper.make_node("Loop", ["m_in", "", "h"], ["h_out"], body=inner, name="inner"),
         helper.make_node("Identity", ["c"], ["c_out"])], "outer",
        [tensor("i", [], TensorProto.INT64), tensor("c", [], TensorProto.BOOL), tensor("h", ["N", 4])],
        [tensor("c_out", [], TensorProto.BOOL), tensor("h_out", ["N", 4])])
    model = make_onnx([helper.make_node("Loop", ["M", "", "x"], ["y"], body=outer, name="outer")],
                      [tensor("x", ["N", 4])], [tensor("y", ["N", 4])], [np.int64(2), np.int64(1)], ["M", "one"])
    x = RNG.random((2, 4), dtype=np.float32)
    model = _unrolled_matches(model, x)
    assert [n.name for n in model.graph.node] == ["outer[0]/inner[0]/accumulate", "outer[1]/inner[0]/accumulate",
                                                  "outer[1]/inner[1]/accumulate"]
    np.testing.assert_allclose(ort_run(model, {"x": x})[0], 6 * x, rtol=1e-6)


def test_a_loop_first_is_refused_in_one_line_with_its_reason(save_onnx):
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Neg", ["h"], ["h_out"])], "body",
        [tensor("i", [], TensorProto.INT64), tensor("c", [], TensorProto.BOOL), tensor("h", ["N", 3])],
        [tensor("c_out", [], TensorProto.BOOL), tensor("h_out", ["N", 3])])
    model = make_onnx([helper.make_node("Loop", ["M", "", "x"], ["y"], body=body, name="spin")],
                      [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], [np.array(65, np.int64)], ["M"], opset=17)
    with pytest.raises(UnsupportedOpError) as err:
        vizcore.load(save_onnx(model))
    assert "not unrolled: more than 64 iterations (65)" in err.value.message and "'spin'" in err.value.message
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(64, np.int64), "M"))  # at the cap: unrolled
    m = vizcore.load(save_onnx(model, "at_cap.onnx"))
    assert [l.op_type for l in m.layers] == ["Neg"] * 64
