"""Production input formats: NHWC / NLC / rank-2 inputs, non-square sizes, symbolic dims, multi-output nodes,
partial conversion, reachability and batch axes. Tiny models built here; parity against onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import make_onnx, ort_run, tensor
from onnx import TensorProto, helper
from tiny import export, export_text, gather_output
from torch import nn

import vizcore
from vizcore import layouts
from vizcore.analysis.fidelity import fidelity
from vizcore.errors import OptionError, TargetError

META = {"vizcore.mean": "0.5", "vizcore.std": "0.25", "vizcore.range": "0,1"}
RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _meta(model: onnx.ModelProto, extra: dict[str, str] | None = None) -> onnx.ModelProto:
    for k, v in {**META, **(extra or {})}.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def nhwc_model(batch: int | str = "N", h: int | str = 16, w: int | str = 16) -> onnx.ModelProto:
    """A tf2onnx-like graph: NHWC input -> Transpose(0,3,1,2) -> Conv -> Relu -> Conv -> Relu -> GAP -> Flatten."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Conv", ["xt", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    m = make_onnx(nodes, [tensor("x", [batch, h, w, 3])], [tensor("y", [batch, 6])],
                  [_w(4, 3, 3, 3), _w(4), _w(6, 4, 3, 3), _w(6)], ["w1", "b1", "w2", "b2"], opset=17)
    return _meta(m)


class Signal(nn.Module):
    """(N, L, 1) -> transpose -> conv1d(1->4, k5) relu conv1d(4->6, k5, stride 2) relu."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv1d(1, 4, 5, padding=2)
        self.c2 = nn.Conv1d(4, 6, 5, stride=2, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(torch.relu(self.c1(x.transpose(1, 2)))))


class MLP(nn.Module):
    def __init__(self, features: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(features, 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _export(module: nn.Module, path: Path, shape: tuple[int, ...], axes: dict[int, str]) -> Path:
    return export(module, path, shape, metadata=META, axes=axes)


@pytest.fixture
def nhwc_path(save_onnx):
    return save_onnx(nhwc_model(), "nhwc.onnx")


@pytest.fixture
def signal_path(tmp_path):
    return _export(Signal(), tmp_path / "signal.onnx", (1, 40, 1), {0: "N", 1: "L"})


@pytest.fixture
def mlp_path(tmp_path):
    return _export(MLP(), tmp_path / "mlp.onnx", (1, 16), {0: "N"})


def _parity(model: vizcore.Model, batch: int) -> float:
    x = model.probe_input(batch, seed=batch)
    graph_x = model.feeds(x)[0].numpy()
    ref = ort_run(model.path, {model.input.name: graph_x})[0]
    with torch.no_grad():
        got = model.run(x)
    return float(np.abs(ref - got.numpy()).max())


def _input_gradient(model: vizcore.Model, layer: str) -> torch.Tensor:
    x = model.probe_input(1).requires_grad_(True)
    out = model.cut_at([layer])(*model.feeds(x))[0]
    out.sum().backward()
    return x.grad


@pytest.mark.parametrize("which, layout, natural, fixed", [
    ("nhwc", "NHWC", (1, 3, 16, 16), (16, 16)),
    ("signal", "NLC", (1, 1, 32), None),
    ("mlp", "NF", (1, 1, 16), (16,)),
])
def test_layouts_load_with_natural_shapes_and_match_onnxruntime(which, layout, natural, fixed, request):
    path = request.getfixturevalue(f"{which}_path")
    m = vizcore.load(path)
    assert m.layout.name == layout
    assert m.fixed_size == fixed
    assert m.input_shape(1) == natural  # the signal's length comes from its receptive field, not 224
    assert m.probe_input(3).shape == (3, *natural[1:])
    for batch in (1, 3):
        assert _parity(m, batch) < 1e-5
    assert fidelity(m, batch=3)["max_abs_diff"] < 1e-5
    assert m.batch_ok
    first = next(l for l in m.layers if l.op_type in ("Conv", "Gemm", "MatMul"))
    g = _input_gradient(m, first.name)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_nhwc_layer_table_uses_the_graph_shapes(nhwc_path):
    m = vizcore.load(nhwc_path)
    assert m.layer("conv1").shape == (1, 4, 16, 16)
    assert m.layer("to_nchw").shape == (1, 3, 16, 16)


def test_signal_probe_length_follows_the_receptive_field(signal_path, save_onnx):
    m = vizcore.load(signal_path)
    assert m.default_length == 32  # receptive field 9: twice that, at least 32
    assert m.input_shape(2, 100) == (2, 1, 100)
    # a dilated conv (k 9, dilation 4: receptive field 33) needs more: 2 * 33 rounded up to a multiple of 8
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("Conv", ["xt", "w"], ["c"], dilations=[4], name="wide"),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_onnx(nodes, [tensor("x", ["N", "L", 2])], [tensor("y", ["N", 3, "L2"])], [_w(3, 2, 9)], ["w"],
                      opset=17)
    m = vizcore.load(save_onnx(_meta(model), "dilated.onnx"))
    assert m.input_shape(1) == (1, 2, 72)
    assert m.layer("wide").shape == (1, 3, 72 - 32)


@pytest.mark.parametrize("which, size", [("nhwc", 16), ("signal", 64), ("mlp", 16)])
def test_render_rises_in_the_natural_layout(which, size, request):
    m = vizcore.load(request.getfixturevalue(f"{which}_path"))
    last = [l for l in m.layers if l.op_type in ("Conv", "Gemm")][-1]
    r = vizcore.render(m, f"{last.name}:1", steps=8, size=size, device="cpu", transforms="none", lr=0.1,
                       record_every=1)
    trace = r.traces[0]
    assert len(trace) == 8 and trace[-1] > trace[0]
    natural = m.input_shape(1, None if m.fixed_size else size)
    assert r.images.shape == (1, *natural[2:], natural[1])  # (N, H, W, C) / (N, L, C): the natural layout


def test_layout_override_and_metadata(save_onnx):
    m = nhwc_model(h=3, w=16)  # (N, 3, 16, 3): ambiguous by shape; the Transpose decides
    path = save_onnx(m, "amb.onnx")
    assert vizcore.load(path).layout.name == "NHWC"
    with pytest.raises(OptionError, match="rank-3"):
        vizcore.load(path, layout="NLC")
    assert layouts.parse("channels_last", 4).name == "NHWC"
    g = helper.make_graph([], "g", [], [])
    assert layouts.detect(g, "x", ("N", 3, 8, 8), {"vizcore.layout": "NHWC"}).name == "NHWC"
    assert layouts.detect(g, "x", ("N", 8, 8, 3), {}).name == "NHWC"
    assert layouts.detect(g, "x", ("N", 3, 8, 8), {}).name == "NCHW"
    assert layouts.detect(g, "x", ("N", "L", 1), {}).name == "NLC"
    assert layouts.detect(g, "x", ("N", 2, "L"), {}).name == "NCL"


def test_non_square_fixed_input_keeps_its_shape(save_onnx):
    path = save_onnx(nhwc_model(batch=1, h=12, w=20), "wide.onnx")
    m = vizcore.load(path)
    assert m.fixed_size == (12, 20)
    assert m.input_shape(1) == (1, 3, 12, 20)
    assert m.layer("conv2").shape == (1, 6, 12, 20)
    assert _parity(m, 1) < 1e-5


def test_input_shape_takes_height_and_width(save_onnx):
    m = vizcore.load(save_onnx(nhwc_model(h="H", w="W"), "free.onnx"))
    assert m.fixed_size is None
    assert m.input_shape(2, (10, 24)) == (2, 3, 10, 24)
    assert m.feeds(m.probe_input(2, (10, 24)))[0].shape == (2, 10, 24, 3)
    with pytest.raises(TargetError):
        m.input_shape(1, (10, 24, 3))


# -- multi-output nodes, reachability, batch axis -----------------------------------------------------------------
def lstm_model(time_major_output: bool = False) -> onnx.ModelProto:
    """(N, C=3, L) -> Conv -> Transpose (L, N, C) -> LSTM(hidden 4); graph outputs Y_h, the Conv's, Y."""
    hidden = 4
    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["seq"], perm=[2, 0, 1], name="to_seq"),
             helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y", "Y_h", "Y_c"], hidden_size=hidden, name="lstm")]
    # graph outputs in another order than the node's, one of them from another node, Y_c not among them
    outs = [tensor("Y_h", [1, "N", hidden]), tensor("c", ["N", 5, "L"]), tensor("Y", ["L", 1, "N", hidden])]
    return _meta(make_onnx(nodes, [tensor("x", ["N", 3, "L"])], outs,
                           [_w(5, 3, 1), _w(1, 4 * hidden, 5), _w(1, 4 * hidden, hidden), _w(1, 8 * hidden)],
                           ["wc", "W", "R", "B"], opset=17))


def test_lstm_outputs_map_one_to_one_onto_the_module(save_onnx):
    path = save_onnx(lstm_model(), "lstm.onnx")
    m = vizcore.load(path)
    x = m.probe_input(2, 12)
    ref = ort_run(path, {"x": x.numpy()})
    with torch.no_grad():
        got = m.run(x)
    assert isinstance(got, tuple) and len(got) == 3
    for r, g in zip(ref, got):
        assert r.shape == tuple(g.shape)
        assert np.abs(r - g.numpy()).max() < 1e-5
    fid = fidelity(m, batch=2, size=12)
    assert set(fid["per_output"]) == {"Y", "Y_h", "c"} and fid["max_abs_diff"] < 1e-5
    # the first output, Y_h, is (dirs, N, H): batch 2 matches batch 1 along axis 1
    assert m.batch_ok


def test_batch_axis_is_found_where_the_batch_is():
    from vizcore.model import batch_axis

    assert batch_axis((2, 5), (1, 5)) == 0
    assert batch_axis((7, 2, 4), (7, 1, 4)) == 1
    assert batch_axis((7, 1, 2, 4), (7, 1, 1, 4)) == 2
    assert batch_axis((7, 4), (7, 4)) is None  # no batch axis at all: not batchable
    assert batch_axis((2, 3), (1, 4)) is None


def test_time_major_output_is_batchable(save_onnx):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["y"], perm=[2, 0, 1], name="time_major")]
    m = vizcore.load(save_onnx(_meta(make_onnx(nodes, [tensor("x", ["N", 2, "L"])], [tensor("y", ["L", "N", 4])],
                                               [_w(4, 2, 3)], ["w"], opset=17)), "tm.onnx"))
    assert m.batch_ok


def test_a_target_that_does_not_depend_on_the_input_is_refused(save_onnx):
    # y = conv(x) + (W2 @ ones-input "mask" path): the mask path never sees x
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Relu", ["mf"], ["mr"], name="mask_relu"),
             helper.make_node("Mul", ["r", "mr"], ["y"], name="gate")]
    model = _meta(make_onnx(nodes, [tensor("x", ["N", 2, 8, 8]), tensor("mask", ["N", 1, 1, 1], TensorProto.INT64)],
                            [tensor("y", ["N", 3, 6, 6])], [_w(3, 2, 3, 3)], ["w"], opset=17))
    m = vizcore.load(save_onnx(model, "mask.onnx"))
    assert m.depends_on_input("relu") and m.depends_on_input("gate")
    assert not m.depends_on_input("mask_relu")
    with pytest.raises(TargetError, match="does not depend on the input"):
        vizcore.render(m, "mask_relu:0", steps=2, size=8, device="cpu")
    r = vizcore.render(m, "gate:0", steps=2, size=8, device="cpu")
    assert np.isfinite(r.values).all()


# -- partial conversion and control flow ---------------------------------------------------------------------------
def custom_after_convs() -> onnx.ModelProto:
    """conv1 relu conv2 relu -> acme::Mystery -> Relu: the custom op has no converter."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Mystery", ["r2"], ["m"], domain="acme", name="mystery"),
             helper.make_node("Relu", ["m"], ["y"], name="after")]
    m = make_onnx(nodes, [tensor("x", ["N", 3, "H", "W"])], [tensor("y", ["N", 6, "H", "W"])],
                  [_w(4, 3, 3, 3), _w(6, 4, 3, 3)], ["w1", "w2"], opset=17)
    m.opset_import.append(helper.make_opsetid("acme", 1))
    return _meta(m)


def test_layers_before_an_unknown_op_load_render_and_check(tmp_path):
    path = tmp_path / "custom.onnx"
    onnx.save(custom_after_convs(), str(path))  # onnx.checker accepts unknown domains
    m = vizcore.load(path, size=16)
    assert [l.name for l in m.layers] == ["conv1", "relu1", "conv2", "relu2"]
    assert [(n, op) for n, op, _ in m.unreachable] == [("mystery", "Mystery"), ("after", "Relu")]
    assert "acme::Mystery" in m.unreachable[0][2] and "mystery" in m.unreachable[1][2]
    fid = fidelity(m, size=16)  # against onnxruntime on the part that was converted
    assert fid["available"] and fid["max_abs_diff"] < 1e-5 and list(fid["per_output"]) == ["r2"]
    r = vizcore.render(m, "conv2:1", steps=8, size=16, device="cpu", transforms="none", record_every=1)
    assert r.traces[0][-1] > r.traces[0][0]
    rep = vizcore.check(m, size=16)
    assert [lay.name for lay in rep.layers][-1] == "relu2"


def test_an_unknown_op_first_is_still_refused(save_onnx):
    nodes = [helper.make_node("Mystery", ["x"], ["y"], domain="acme", name="mystery")]
    m = make_onnx(nodes, [tensor("x", [1, 3, 4, 4])], [tensor("y", [1, 3, 4, 4])], opset=17)
    m.opset_import.append(helper.make_opsetid("acme", 1))
    with pytest.raises(vizcore.errors.UnsupportedOpError, match="acme::Mystery"):
        vizcore.load(save_onnx(m, "first.onnx"))


def if_model(constant: bool) -> onnx.ModelProto:
    """conv -> relu -> If(cond): then = Neg(r) + conv3, else = Sigmoid(r). cond constant, or data-dependent."""
    then = helper.make_graph([helper.make_node("Conv", ["r", "w3"], ["t1"], pads=[1, 1, 1, 1], name="then_conv"),
                              helper.make_node("Neg", ["t1"], ["t"], name="then_neg")],
                             "then", [], [tensor("t", ["N", 4, "H", "W"])])
    other = helper.make_graph([helper.make_node("Sigmoid", ["r"], ["e"], name="else_sig")], "else", [],
                              [tensor("e", ["N", 4, "H", "W"])])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    inits, names = [_w(4, 3, 3, 3), _w(4, 4, 3, 3)], ["w1", "w3"]
    if constant:
        nodes.append(helper.make_node("Constant", [], ["cond"], name="cond",
                                      value=helper.make_tensor("v", TensorProto.BOOL, [], [True])))
    else:
        nodes += [helper.make_node("ReduceMean", ["r"], ["s"], keepdims=0, name="mean"),
                  helper.make_node("Greater", ["s", "zero"], ["cond"], name="positive")]
        inits.append(np.float32(0.1))
        names.append("zero")
    nodes += [helper.make_node("If", ["cond"], ["y0"], then_branch=then, else_branch=other, name="branchy"),
              helper.make_node("Relu", ["y0"], ["y"], name="out")]
    return _meta(make_onnx(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 4, 8, 8])], inits, names, opset=17))


def test_constant_if_is_inlined_and_matches_onnxruntime(save_onnx):
    path = save_onnx(if_model(constant=True), "if_const.onnx")
    m = vizcore.load(path)
    assert dict(m.prepasses)["inline_constant_if"] == 1
    assert not m.unreachable
    ops = [l.op_type for l in m.layers]
    assert "If" not in ops and "Neg" in ops and ops[-1] == "Relu"
    assert fidelity(m)["max_abs_diff"] < 1e-5
    r = vizcore.render(m, f"{m.layers[-1].name}:0", steps=4, size=8, device="cpu")
    assert np.isfinite(r.values).all()


def test_data_dependent_if_cuts_the_graph_in_front_of_it(save_onnx):
    m = vizcore.load(save_onnx(if_model(constant=False), "if_data.onnx"))
    assert [l.name for l in m.layers] == ["conv", "relu", "mean", "positive"]
    assert [(n, op) for n, op, _ in m.unreachable] == [("branchy", "If"), ("out", "Relu")]
    assert "control flow" in m.unreachable[0][2]
    assert fidelity(m)["max_abs_diff"] < 1e-5


# -- symbolic dims ---------------------------------------------------------------------------------------------------
def emb_model() -> onnx.ModelProto:
    """emb [1, S, 'hidden'] -> LayerNorm -> MatMul(16 -> 8) -> Relu: hidden is 16 by the weights."""
    nodes = [helper.make_node("LayerNormalization", ["emb", "g", "b"], ["n"], axis=-1, name="norm"),
             helper.make_node("MatMul", ["n", "w"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    return _meta(make_onnx(nodes, [tensor("emb", [1, "S", "hidden"])], [tensor("y", [1, "S", 8])],
                           [np.ones(16, np.float32), np.zeros(16, np.float32), _w(16, 8)], ["g", "b", "w"], opset=17))


def test_symbolic_hidden_dim_is_inferred_from_the_weights(save_onnx):
    m = vizcore.load(save_onnx(emb_model(), "emb.onnx"))
    assert m.input.shape[1:] == ("S", 16) and m.layout.name == "NLC"
    assert m.input_shape(1, 10) == (1, 16, 10)
    assert m.layer("proj").channel_last and m.layer("proj").channels == 8  # (N, S, 8): channels are features
    assert fidelity(m, size=10)["max_abs_diff"] < 1e-5


def test_input_shapes_fix_what_cannot_be_inferred(save_onnx):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Sigmoid", ["r"], ["y"])]
    path = save_onnx(_meta(make_onnx(nodes, [tensor("x", ["N", "C", 8, 8])], [tensor("y", ["N", "C", 8, 8])],
                                     opset=17)), "free_c.onnx")
    with pytest.raises(vizcore.errors.ModelLoadError, match="symbolic channel"):
        vizcore.load(path)
    m = vizcore.load(path, input_shapes={"x": (1, 2, 8, 8)})
    assert m.input_shape(1) == (1, 2, 8, 8) and m.layer("relu").shape == (1, 2, 8, 8)
    with pytest.raises(OptionError, match="no input named 'X'"):
        vizcore.load(path, input_shapes={"X": (1, 2, 8, 8)})
    with pytest.raises(OptionError, match="4 dims"):
        vizcore.load(path, input_shapes={"x": (1, 2)})


def test_consumers_that_disagree_are_reported(save_onnx):
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["x", "w2"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    path = save_onnx(make_onnx(nodes, [tensor("x", [1, 5, "h"])], [tensor("y", [1, 5, 3])],
                               [_w(4, 3), _w(6, 3)], ["w1", "w2"], opset=17), "disagree.onnx")
    with pytest.raises(vizcore.errors.ModelLoadError, match="disagree"):
        vizcore.load(path)


def test_inspect_cli_lists_unreachable_nodes_and_takes_input_flags(tmp_path, capsys):
    from vizcore.cli import main

    path = tmp_path / "custom.onnx"
    onnx.save(custom_after_convs(), str(path))
    assert main(["inspect", str(path), "--size", "16", "--input-shape", "x=1,3,16,16", "--layout", "NCHW"]) == 0
    out = capsys.readouterr().out
    assert "not reachable" in out and "Mystery" in out and "layout NCHW" in out
    assert main(["inspect", str(path), "--input-shape", "x=1,3"]) == 2
    assert "4 dims" in capsys.readouterr().err


# -- token inputs, an inner tensor as the optimized input ------------------------------------------------------------
@pytest.fixture
def text_path(tmp_path):
    return export_text(tmp_path / "text.onnx")


def test_integer_inputs_load_and_inspect_with_valid_token_ids(text_path, capsys):
    m = vizcore.load(text_path)
    assert m.tokens == {"input_ids": 50}
    ids = m.default_feed(m.inputs[0], 2)
    assert ids.dtype == torch.int64 and ids.shape == (2, 16) and int(ids.max()) < 50 and int(ids[0, 3]) == 3
    assert any(l.op_type == "MatMul" and l.shape == (1, 12, 16) and l.channel_last for l in m.layers)
    with pytest.raises(vizcore.errors.ModelLoadError, match="input_node|input="):
        m.input  # noqa: B018
    from vizcore.cli import main

    assert main(["inspect", str(text_path), "--no-fidelity"]) == 0
    assert "input_ids" in capsys.readouterr().out


def test_embedding_output_as_the_optimized_input(text_path):
    emb = gather_output(text_path)
    m = vizcore.load(text_path, input=emb)
    assert m.input.name == emb and m.input.shape == ("batch", "len", 8) and m.layout.name == "NLC"
    assert m.input_shape(1, 10) == (1, 8, 10)
    fid = fidelity(m, batch=2, size=10)  # onnxruntime gets the token ids, torch their embedding
    assert fid["available"] and fid["max_abs_diff"] < 1e-5
    relu = next(l for l in m.layers if l.op_type == "Relu")
    assert m.depends_on_input(relu.name)
    g = _input_gradient(m, relu.name)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    r = vizcore.render(m, f"{relu.name}:2", steps=8, size=10, device="cpu", transforms="none", record_every=1,
                       lr=0.1)
    assert r.traces[0][-1] > r.traces[0][0]


def test_feeds_give_the_other_inputs(text_path):
    emb = gather_output(text_path)
    mask = np.zeros((1, 10), np.int64)
    mask[0, :5] = 1
    m = vizcore.load(text_path, input=emb, feeds={"attention_mask": mask}, size=10)  # the mask fixes the length
    x = m.probe_input(1, 10)
    with torch.no_grad():
        y = m.run(x)
        x2 = x.clone()
        x2[..., 5:] = 0.9  # masked-out positions do not count
        assert torch.allclose(m.run(x2), y, atol=1e-6)
    with pytest.raises(TargetError, match="no such input"):
        vizcore.load(text_path, input=emb, feeds={"mask": mask})
    with pytest.raises(TargetError, match="no single-output node"):
        vizcore.load(text_path, input="nope")


def test_inspect_cli_input_node_and_feed(text_path, tmp_path, capsys):
    from vizcore.cli import main

    mask = tmp_path / "mask.npy"
    np.save(mask, np.ones((1, 12), np.int64))
    emb = gather_output(text_path)
    assert main(["inspect", str(text_path), "--input-node", emb, "--feed", f"attention_mask={mask}",
                 "--size", "12", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fidelity"]["max_abs_diff"] < 1e-5 and data["layout"] == "NLC"
    assert main(["inspect", str(text_path), "--feed", f"attention_mask={tmp_path / 'missing.npy'}"]) == 2
    assert "not found" in capsys.readouterr().err
