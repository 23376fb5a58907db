"""vizcore.load and Model: the layer table, addressing, cuts, fidelity, exports of today's exporters, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import MOBILENET, make_onnx, ort_run, tensor
from onnx import TensorProto, helper

import vizcore
from vizcore.analysis.fidelity import fidelity
from vizcore.errors import LayerNotFoundError, ModelLoadError, UnsupportedOpError


# -- the embedded model ---------------------------------------------------------------------------------------------
def test_mobilenet_loads_with_layers_and_eval_module(mobilenet):
    m = mobilenet
    assert m.opset >= 13 and m.producer
    assert [t.name for t in m.inputs] == ["image"] and m.input.shape[1] == 3
    assert isinstance(m.input.shape[0], str)  # dynamic batch
    assert m.outputs[0].name == "logits"
    convs = [l for l in m.layers if l.op_type == "Conv"]
    assert len(convs) == 52
    assert convs[0].shape == (1, 32, 112, 112) and convs[0].channels == 32
    assert not m.module.training and not any(p.requires_grad for p in m.module.parameters())
    assert isinstance(m.module.get_submodule(convs[0].fx_name), torch.nn.Conv2d)
    assert 3_400_000 < m.param_count < 3_600_000
    assert m.batch_ok


def test_mobilenet_fidelity_against_onnxruntime(mobilenet):
    fid = fidelity(mobilenet, seed=1)
    assert fid["available"] and fid["max_abs_diff"] <= 1e-4
    assert fidelity(mobilenet, batch=2, size=96)["max_abs_diff"] <= 1e-4


def test_layer_addressing(mobilenet):
    m = mobilenet
    conv = m.layers[3]
    assert m.layer(conv.name) is conv
    assert m.layer(conv.output) is conv
    assert m.layer(3) is conv and m.layer("3") is conv and m.layer(conv) is conv
    assert m.layer(-1) is m.layers[-1]
    assert m.logits_layer().output == "logits"


def test_unknown_layer_suggests_closest_names(mobilenet):
    name = mobilenet.layers[5].name
    with pytest.raises(LayerNotFoundError) as err:
        mobilenet.layer(name[:-2] + "xx")
    assert "closest" in err.value.message and name in err.value.message
    assert "\n" not in err.value.message


def test_layer_index_out_of_range(mobilenet):
    n = len(mobilenet.layers)
    for bad in (n, -n - 1, str(n + 5)):
        with pytest.raises(LayerNotFoundError, match="out of range"):
            mobilenet.layer(bad)


def test_cut_at_early_layer_computes_less_and_matches(mobilenet):
    m = mobilenet
    early = [l for l in m.layers if l.op_type == "Conv"][2]
    cut = m.cut_at([early])
    full_nodes = sum(1 for n in m.module.graph.nodes if n.op == "call_module")
    cut_nodes = sum(1 for n in cut.graph.nodes if n.op == "call_module")
    assert cut_nodes < full_nodes / 10
    x = m.probe_input(2, 64, seed=3)
    store = {}
    hook = m.module.get_submodule(early.fx_name).register_forward_hook(lambda mod, i, o: store.setdefault("a", o))
    try:
        with torch.no_grad():
            m.run(x)
    finally:
        hook.remove()
    (got,) = cut(x)
    assert torch.equal(got, store["a"])
    # shares weights (no copy) and back-propagates to the input
    assert cut.get_submodule(early.fx_name).weight is m.module.get_submodule(early.fx_name).weight
    x.requires_grad_(True)
    cut(x)[0].mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_cut_at_several_layers_returns_them_in_order(mobilenet):
    a, b = mobilenet.layers[10], mobilenet.layers[2]
    outs = mobilenet.cut_at([a, b])(mobilenet.probe_input(1, 64))
    assert [o.shape[1] for o in outs] == [a.channels, b.channels]
    assert outs[0].shape[0] == outs[1].shape[0] == 1


# -- today's exporters ----------------------------------------------------------------------------------------------
def _parity(path: Path, model: vizcore.Model, batch: int = 1) -> float:
    x = model.probe_input(batch, None, seed=7)
    ref = ort_run(path, {model.input.name: x.numpy()}) if batch == 1 else None
    with torch.no_grad():
        got = model.run(x)
    if ref is None:
        return fidelity(model, seed=7, batch=batch)["max_abs_diff"]
    return float(np.max(np.abs(ref[0] - got.numpy())))


def test_dynamo_export_of_small_cnn(cnn_onnx):
    path = cnn_onnx("dyn.onnx", dynamo=True)
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.opset_import[0].version >= 18
    m = vizcore.load(path)
    assert _parity(path, m) < 1e-5
    assert fidelity(m, batch=3)["max_abs_diff"] < 1e-5  # batch 1 baked into the export, made symbolic
    assert m.batch_ok
    names = [l.name for l in m.layers]
    assert "conv1/Conv" in names  # module path from the export's name_scopes metadata
    original = proto.graph.node[0].name
    assert m.layer(original) is m.layers[0]  # the export's own node names stay addressable


def test_dynamo_export_with_external_data(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 256, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(256, 300))
    path = tmp_path / "big.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.rand(1, 3, 16, 16),), str(path), dynamo=True, external_data=True)
    assert (tmp_path / "big.onnx.data").is_file()
    m = vizcore.load(path)
    assert _parity(path, m) < 1e-5
    assert m.param_count == sum(p.numel() for p in net.parameters())


@pytest.mark.slow
def test_dynamo_export_of_mobilenet_v2(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.uniform_(-0.1, 0.1)
    path = tmp_path / "mnv2.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 224, 224),), str(path))  # today's default: dynamo, opset 20
    assert (tmp_path / "mnv2.onnx.data").is_file()
    assert onnx.load(str(path), load_external_data=False).opset_import[0].version >= 18
    m = vizcore.load(path)
    fid = fidelity(m, seed=2)
    scale = float(np.max(np.abs(ort_run(path, {m.input.name: m.probe_input(1, None, 2).numpy()})[0])))
    assert fid["max_abs_diff"] <= 1e-4 * max(scale, 1.0)
    assert sum(l.op_type == "Conv" for l in m.layers) == 52
    assert m.layer("features.0.0/Conv").channels == 32 and m.layer("features.0.2/Clip").channels == 32


def test_torchscript_static_export_runs_at_batch_3(cnn_onnx):
    path = cnn_onnx("static.onnx")  # TorchScript, batch 1 baked in (Flatten/Reshape shapes)
    m = vizcore.load(path)
    assert isinstance(m.input.shape[0], str)
    assert m.batch_ok
    assert fidelity(m, batch=3)["max_abs_diff"] < 1e-5


def test_weights_in_constant_and_identity_nodes_become_initializers(save_onnx):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(w)),
             helper.make_node("Identity", ["b0"], ["b"]),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    model = make_onnx(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 4, 8, 8])], [b], ["b0"], opset=17)
    path = save_onnx(model)
    m = vizcore.load(path)
    assert dict(m.prepasses)["constants_to_initializers"] == 2
    assert isinstance(m.module.get_submodule(m.layers[0].fx_name), torch.nn.Conv2d)
    assert _parity(path, m) < 1e-5


def test_module_is_always_in_eval_mode(cnn_onnx):
    m = vizcore.load(cnn_onnx())
    x = m.probe_input(4, None)
    bn_stats = [b.clone() for b in m.module.buffers()]
    with torch.no_grad():
        a = m.run(x)
        b = m.run(x)
    assert torch.equal(a, b) and all(torch.equal(s, t) for s, t in zip(bn_stats, m.module.buffers()))


# -- bad input: one-line errors -------------------------------------------------------------------------------------
def _jpeg(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def _checker_failure(path: Path) -> Path:
    node = helper.make_node("Relu", ["nowhere"], ["y"])  # input never defined
    model = make_onnx([node], [tensor("x", [1, 3])], [tensor("y", [1, 3])], opset=17)
    onnx.save(model, str(path))
    return path


def _external(tmp_path: Path, location: str, write: bool) -> Path:
    w = onnx.numpy_helper.from_array(np.ones((16, 3, 3, 3), dtype=np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for k, v in (("location", location), ("offset", "0"), ("length", str(16 * 27 * 4))):
        w.external_data.add(key=k, value=v)
    model = make_onnx([helper.make_node("Conv", ["x", "w"], ["y"])], [tensor("x", [1, 3, 8, 8])],
                      [tensor("y", [1, 16, 6, 6])], [w], opset=17)
    if write:
        (tmp_path / location).write_bytes(np.ones(16 * 27, dtype=np.float32).tobytes())
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    return path


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.onnx", "not found"),
    "directory": (lambda d: d, "folder"),
    "random bytes": (lambda d: _write(d / "r.onnx", np.random.default_rng(0).bytes(4096)), "not an ONNX model"),
    "jpeg": (lambda d: _jpeg(d / "cat.onnx"), "not an ONNX model"),
    "empty": (lambda d: _write(d / "e.onnx", b""), "empty"),
    "truncated": (lambda d: _write(d / "t.onnx", MOBILENET.read_bytes()[:1_000_000]), "ONNX"),
    "checker failure": (lambda d: _checker_failure(d / "bad.onnx"), "not a valid ONNX model"),
    "external data missing": (lambda d: _external(d, "weights.bin", write=False), "missing"),
    "external data outside folder": (lambda d: _external(d, "../outside.bin", write=False), "outside"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_model_load_error(tmp_path, case):
    make, expected = BAD_INPUTS[case]
    with pytest.raises(ModelLoadError) as err:
        vizcore.load(make(tmp_path))
    assert expected.lower() in str(err.value).lower()
    assert "\n" not in err.value.message and err.value.hint


def test_external_data_outside_folder_is_refused_even_if_present(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "outside.bin").write_bytes(np.ones(16 * 27, dtype=np.float32).tobytes())
    path = _external(inner, "../outside.bin", write=False)
    with pytest.raises(ModelLoadError, match="outside"):
        vizcore.load(path)


def test_external_data_next_to_model_loads(tmp_path):
    m = vizcore.load(_external(tmp_path, "weights.bin", write=True))
    assert m.layers[0].shape == (1, 16, 6, 6)


def test_unsupported_op_names_op_version_node_and_hook(save_onnx):
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [tensor("t", [1, 3])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [tensor("e", [1, 3])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="branchy", then_branch=then, else_branch=other)]
    model = make_onnx(nodes, [tensor("x", [1, 3])], [tensor("y", [1, 3])], [np.float32(0)], ["zero"], opset=17)
    with pytest.raises(UnsupportedOpError) as err:
        vizcore.load(save_onnx(model))
    msg = err.value.message
    assert "If@16" in msg and "opset 17" in msg and "'branchy'" in msg and "control flow" in msg
    assert "vizcore_add_onnx_converters" in err.value.hint
    assert "\n" not in msg


def test_quantized_model_loads(save_onnx):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dequant")]
    model = make_onnx(nodes, [tensor("x", [1, 3])], [tensor("y", [1, 3])],
                      [np.float32(0.1), np.uint8(128)], ["s", "z"], opset=17)
    m = vizcore.load(save_onnx(model))  # tests/test_quantized.py checks the numbers
    assert [l.op_type for l in m.layers] == ["QuantizeLinear", "DequantizeLinear"]


def test_converter_failure_names_the_node(save_onnx):
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool7", kernel_shape=[2, 2], storage_order=1)]
    model = make_onnx(nodes, [tensor("x", [1, 3, 4, 4])], [tensor("y", [1, 3, 3, 3])], opset=17)
    with pytest.raises(UnsupportedOpError) as err:
        vizcore.load(save_onnx(model))
    msg = err.value.message
    assert "MaxPool@12" in msg and "'pool7'" in msg and "storage_order" in msg and "\n" not in msg


def test_load_time_of_tiny_model_is_small(cnn_onnx):
    path = cnn_onnx()
    vizcore.load(path)  # warm imports
    t = time.perf_counter()
    vizcore.load(path)
    assert time.perf_counter() - t < 3.0
