"""Production models, round two (issue 25): input selection. Each cause has a tiny seeded stand-in built here,
parity against onnxruntime, and (for render cases) a render whose objective rises."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import make_onnx, ort_run, tensor
from onnx import helper
from tiny import export
from torch import nn

import vizcore
from vizcore.cli import main

META = {"vizcore.mean": "0.5", "vizcore.std": "0.25", "vizcore.range": "0,1"}


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed + sum(shape)).standard_normal(shape) * 0.3).astype(np.float32)


def _meta(model: onnx.ModelProto) -> onnx.ModelProto:
    for k, v in META.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


# -- 1. nothing could be checked ------------------------------------------------------------------------------------
def custom_only() -> onnx.ModelProto:
    """The only compute op is an unknown com.example op; beside it, the Shape -> Gather -> Concat bookkeeping of a
    flatten (converted, but nothing to look at)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="batch"),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
             helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0, name="cat"),
             helper.make_node("Mystery", ["x"], ["m"], domain="com.example", name="mystery"),
             helper.make_node("Reshape", ["m", "newshape"], ["y"], name="flatten")]
    m = make_onnx(nodes, [tensor("x", ["N", 3, 8, 8])], [tensor("y", ["N", 192])],
                  [np.array(0, np.int64), np.array([0], np.int64), np.array([-1], np.int64)],
                  ["zero", "axes", "minus1"], opset=17)
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return _meta(m)


def test_nothing_converted_is_said_and_fidelity_not_measured(save_onnx, capsys):
    path = save_onnx(custom_only(), "custom_only.onnx")
    m = vizcore.load(path)
    assert not any(l.visual for l in m.layers)
    assert "no layer could be converted" in m.nothing_converted and "com.example::Mystery" in m.nothing_converted
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no layer could be converted" in out and "'mystery'" in out and "0.00e+00" not in out
    assert "not measured" in out
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fidelity"]["available"] is False and "com.example::Mystery" in data["nothing_converted"]


def test_a_check_of_nothing_fails_unless_allowed(save_onnx, tmp_path, capsys):
    path = save_onnx(custom_only(), "custom_only.onnx")
    report = tmp_path / "check.json"
    assert main(["check", str(path), "-q", "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "nothing could be checked" in out and "--allow-empty" in out and "Mystery" in out
    data = json.loads(report.read_text())
    assert data["passed"] is False and "com.example::Mystery" in data["nothing_checked"]
    assert [f["check"] for f in data["failures"]] == ["nothing-checked"]
    assert main(["check", str(path), "-q", "--allow-empty", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["nothing_checked"] and not data["failures"]
    rep = vizcore.check(path)  # the Python API judges the same way
    assert not rep.passed and rep.nothing_checked and vizcore.check(path, allow_empty=True).passed


# -- 2. old IR files ---------------------------------------------------------------------------------------------
def old_ir(listed: bool) -> onnx.ModelProto:
    """IR version 3, opset 8: conv relu conv relu; initializers left out of the graph inputs (as old exporters
    wrote them, onnx's checker rejects it) or listed there (the other common old-IR form)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3],
                              name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    arrays = {"w1": _w(4, 3, 3, 3), "b1": _w(4), "w2": _w(6, 4, 3, 3), "b2": _w(6)}
    m = make_onnx(nodes, [tensor("x", [1, 3, 12, 12])], [tensor("y", [1, 6, 12, 12])], list(arrays.values()),
                  list(arrays), opset=8, ir_version=3)
    if listed:
        m.graph.input.extend(tensor(k, list(v.shape)) for k, v in arrays.items())
    return _meta(m)


@pytest.mark.parametrize("listed", [False, True])
def test_old_ir_files_load_match_onnxruntime_and_render(listed, tmp_path, capsys):
    path = tmp_path / "old.onnx"
    onnx.save(old_ir(listed), str(path))
    x = np.random.default_rng(1).random((1, 3, 12, 12), dtype=np.float32)
    ref = ort_run(path, {"x": x})[0]  # onnxruntime runs it as it is
    if not listed:
        with pytest.raises(onnx.checker.ValidationError, match="not in graph input"):
            onnx.checker.check_model(onnx.load(str(path)))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m = vizcore.load(path)
    repaired = [str(w.message) for w in seen if "not listed as graph inputs" in str(w.message)]
    assert len(repaired) == (0 if listed else 1) and (listed or "IR version 3" in repaired[0])
    assert [l.name for l in m.layers] == ["conv1", "relu1", "conv2", "relu2"] and m.ir_version == 3
    with torch.no_grad():
        got = m.run(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-5
    r = vizcore.render(m, "conv2:1", steps=8, device="cpu", transforms="none", record_every=1)
    assert r.traces[0][-1] > r.traces[0][0]
    assert main(["inspect", str(path), "--no-fidelity"]) == 0
    assert ("not listed as graph inputs" in capsys.readouterr().err) is not listed


# -- 3. the batch axis of each input -------------------------------------------------------------------------------
def state_model() -> onnx.ModelProto:
    """x [batch, 3, 8, 8] -> conv (channels 2 and 5 dead: zero weights, bias -1) relu gap gemm, plus the mean of a
    stacked recurrent state h [3, batch, 5] (its batch on axis 1)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["z"], transB=1, name="fc"),
             helper.make_node("ReduceMean", ["h"], ["hm"], axes=[0], keepdims=0, name="state_mean"),
             helper.make_node("Add", ["z", "hm"], ["y"], name="mix")]
    w1, b1 = _w(8, 3, 3, 3), _w(8)
    w1[[2, 5]], b1[[2, 5]] = 0.0, -1.0
    return _meta(make_onnx(nodes, [tensor("x", ["batch", 3, 8, 8]), tensor("h", [3, "batch", 5])],
                           [tensor("y", ["batch", 5])], [w1, b1, _w(5, 8), _w(5)], ["w1", "b1", "w2", "b2"], opset=17))


def test_a_state_input_is_batched_on_its_own_axis(save_onnx):
    from vizcore.analysis.fidelity import fidelity

    m = vizcore.load(save_onnx(state_model(), "state.onnx"))
    assert [t.batch_axis for t in m.inputs] == [0, 1]
    assert m.choices == ("input 'h' [3, batch, 5] holds its batch on axis 1: fed that way",)
    assert tuple(m.default_feed(m.inputs[1], 4).shape) == (3, 4, 5)
    assert m.batch_ok and fidelity(m, batch=3)["max_abs_diff"] < 1e-5
    r = vizcore.render(m, "conv1:1", steps=8, size=8, device="cpu", transforms="none", record_every=1)
    assert r.traces[0][-1] > r.traces[0][0]


def test_prune_feeds_a_state_input_on_its_batch_axis(save_onnx, tmp_path, capsys):
    path = save_onnx(state_model(), "state.onnx")
    out, report = tmp_path / "pruned.onnx", tmp_path / "prune.json"
    assert main(["prune", str(path), "--out", str(out), "--json", str(report)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "'h' [3, ?, 5] holds its batch on axis 1" in captured.out
    data = json.loads(report.read_text())
    assert data["verified"] and data["written"] and data["counts"]["removed"] == 2
    rng = np.random.default_rng(3)
    feed = {"x": rng.random((4, 3, 8, 8), dtype=np.float32), "h": rng.standard_normal((3, 4, 5)).astype(np.float32)}
    assert np.abs(ort_run(out, feed)[0] - ort_run(path, feed)[0]).max() < 1e-5  # onnxruntime agrees at batch 4


# -- 4. sequences (N, L, C) with a free length and a fixed channel count ------------------------------------------
class Decoder(nn.Module):
    """[1, S, 16] -> scale and shift -> Linear(16->12) relu -> Conv1d over the channels-last features (12->8, k3)
    relu: the input's first consumer is a Mul, so nothing but its dims says (N, L, C)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.conv = nn.Linear(16, 12), nn.Conv1d(12, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x * 4.0 + 0.1))
        return torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)


class Recurrent(nn.Module):
    """x [batch, time, 16] and the states h0, c0 [2, batch, 8] of a 2-layer batch-first LSTM -> Linear(8->4) relu."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lstm, self.fc = nn.LSTM(16, 8, num_layers=2, batch_first=True), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(self.lstm(x, (h0, c0))[0]))


def export_recurrent(path: Path) -> Path:
    args = (torch.rand(1, 10, 16), torch.zeros(2, 1, 8), torch.zeros(2, 1, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Recurrent().eval(), args, str(path), dynamo=False, opset_version=17,
                          input_names=["x", "h0", "c0"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "c0": {1: "batch"}})
    m = onnx.load(str(path))
    _meta(m)
    onnx.save(m, str(path))
    return path


def _ort_parity(m: vizcore.Model, batch: int, length: int) -> float:
    x = m.probe_input(batch, length, seed=batch)
    feeds = m.feeds(x)
    ref = ort_run(m.path, {t.name: f.numpy() for t, f in zip(m.inputs, feeds)})[0]
    with torch.no_grad():
        got = m.module(*feeds)
    return float(np.abs(ref - (got[0] if isinstance(got, tuple) else got).numpy()).max())


@pytest.mark.parametrize("which", ["decoder", "recurrent"])
def test_free_length_sequences_load_match_onnxruntime_and_render(which, tmp_path):
    path = (export(Decoder(), tmp_path / "dec.onnx", (1, 10, 16), metadata=META, axes={1: "S"})
            if which == "decoder" else export_recurrent(tmp_path / "rnn.onnx"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m = vizcore.load(path)
    said = [str(w.message) for w in seen if "its length is free" in str(w.message)]
    assert len(said) == 1 and "vizcore uses 32" in said[0]
    assert m.layout.name == "NLC" and m.input_shape(1) == (1, 16, 32)
    for batch in ((1,) if which == "decoder" else (1, 3)):
        assert _ort_parity(m, batch, 12) < 1e-5
    last = [l for l in m.layers if l.op_type in ("Conv", "Gemm", "MatMul")][-1]
    r = vizcore.render(m, f"{last.name}:1", steps=8, size=24, device="cpu", transforms="none", record_every=1,
                       lr=0.1)
    assert r.traces[0][-1] > r.traces[0][0]
    assert vizcore.load(path, size=20).choices == (() if which == "decoder" else m.choices[:2])


# -- 5. token models: a quantized embedding, a byte-level classifier ------------------------------------------------
def quantized_embedding(ids: int = onnx.TensorProto.INT64, signed: bool = False) -> onnx.ModelProto:
    """ids [N, S] -> Gather on a uint8 (int8) [40, 8] table -> DequantizeLinear -> MatMul(8->12) relu -> mean."""
    rng = np.random.default_rng(5)
    table = (rng.integers(-127, 128, (40, 8)).astype(np.int8) if signed else
             rng.integers(0, 256, (40, 8)).astype(np.uint8))
    nodes = [helper.make_node("Gather", ["table", "ids"], ["q"], axis=0, name="embed"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["e"], name="dequant"),
             helper.make_node("MatMul", ["e", "w"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("ReduceMean", ["r"], ["y"], axes=[1], keepdims=0, name="pool")]
    zp = np.array(0 if signed else 128, table.dtype)
    return make_onnx(nodes, [tensor("ids", ["N", "S"], ids)], [tensor("y", ["N", 12])],
                     [table, np.array(0.02, np.float32), zp, _w(8, 12)], ["table", "scale", "zp", "w"], opset=17)


def byte_classifier() -> onnx.ModelProto:
    """int32 bytes [N, S]: Shape -> Gather (the length, an int64 scalar: the first Gather of the graph) beside the
    embedding Gather on a float [256, 8] table -> MatMul relu -> sum / length."""
    nodes = [helper.make_node("Shape", ["ids"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "one"], ["L"], axis=0, name="length"),
             helper.make_node("Cast", ["L"], ["Lf"], to=onnx.TensorProto.FLOAT, name="cast"),
             helper.make_node("Gather", ["table", "ids"], ["e"], axis=0, name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("ReduceSum", ["r", "axes"], ["t"], keepdims=0, name="total"),
             helper.make_node("Div", ["t", "Lf"], ["y"], name="mean")]
    return make_onnx(nodes, [tensor("ids", ["N", "S"], onnx.TensorProto.INT32)], [tensor("y", ["N", 12])],
                     [_w(256, 8), _w(8, 12), np.array(1, np.int64), np.array([1], np.int64)],
                     ["table", "w", "one", "axes"], opset=17)


@pytest.mark.parametrize("which, ask, said", [
    ("uint8", "q", "optimizing 'e', the DequantizeLinear after the quantized embedding lookup 'q'"),
    ("int8", "auto", "--input-node auto: optimizing 'e', the DequantizeLinear after"),
    ("bytes", "auto", "--input-node auto: optimizing 'e', the embedding lookup of token input 'ids'"),
])
def test_the_float_embedding_is_optimized(which, ask, said, save_onnx):
    from vizcore.analysis.fidelity import fidelity

    proto = byte_classifier() if which == "bytes" else quantized_embedding(
        onnx.TensorProto.INT32 if which == "int8" else onnx.TensorProto.INT64, signed=which == "int8")
    path = save_onnx(proto, f"{which}.onnx")
    m = vizcore.load(path, input=ask, size=10)
    assert m.input.name == "e" and m.layout.name == "NLC" and m.input_shape(1, 10) == (1, 8, 10)
    assert len(m.choices) == 1 and m.choices[0].startswith(said)
    if which != "bytes":  # the dequantized table is the embedding's range
        table = onnx.numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float32)
        assert np.allclose(m.embedding, (table - (0 if which == "int8" else 128)) * 0.02)
    fid = fidelity(m, batch=2, size=10)  # onnxruntime gets the token ids, torch their embedding
    assert fid["available"] and fid["max_abs_diff"] < 1e-5
    r = vizcore.render(m, "proj:2", steps=8, size=10, device="cpu", transforms="none", record_every=1, lr=0.1)
    assert r.traces[0][-1] > r.traces[0][0]


def test_an_integer_tensor_is_refused_with_the_embedding_named(save_onnx, capsys):
    path = save_onnx(byte_classifier(), "bytes.onnx")
    assert main(["inspect", str(path), "--input-node", "L"]) == 2  # the first Gather: the length, not the bytes
    assert "'L' is not a float tensor" in capsys.readouterr().err
    with pytest.raises(vizcore.errors.TargetError, match="--input-node auto: 'e'"):
        vizcore.load(path, input="L")
    assert main(["inspect", str(path), "--input-node", "auto", "--size", "10", "--no-fidelity"]) == 0
    assert "embedding lookup of token input 'ids'" in capsys.readouterr().err


# -- 6. two float inputs: optimize the one the layers depend on ------------------------------------------------------
def speech_encoder() -> onnx.ModelProto:
    """'speaker' [N, 4] (a speaker embedding: Gemm) first, 'features' [N, 6, T] second (conv relu conv relu); the
    two meet in the last Add. The convolutions depend on the second input only."""
    nodes = [helper.make_node("Gemm", ["speaker", "ws", "bs"], ["sg"], transB=1, name="speaker_proj"),
             helper.make_node("Unsqueeze", ["sg", "ax"], ["sg3"], name="to_3d"),
             helper.make_node("Conv", ["features", "w1", "b1"], ["c1"], pads=[1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Add", ["r2", "sg3"], ["y"], name="condition")]
    return _meta(make_onnx(nodes, [tensor("speaker", ["N", 4]), tensor("features", ["N", 6, "T"])],
                           [tensor("y", ["N", 8, "T"])],
                           [_w(8, 4), _w(8), np.array([2], np.int64), _w(8, 6, 3), _w(8), _w(8, 8, 3), _w(8)],
                           ["ws", "bs", "ax", "w1", "b1", "w2", "b2"], opset=17))


def test_the_input_the_layers_depend_on_is_optimized(save_onnx, capsys):
    from vizcore.analysis.fidelity import fidelity

    path = save_onnx(speech_encoder(), "speech.onnx")
    m = vizcore.load(path, size=24)
    assert m.input.name == "features" and m.layout.name == "NCL" and m.input_shape(1, 24) == (1, 6, 24)
    assert m.choices[0].startswith("optimizing input 'features': 2 weighted layers depend on it (on 'speaker' 1)")
    assert m.depends_on_input("conv2") and not m.depends_on_input("speaker_proj")
    for batch in (1, 3):
        assert fidelity(m, batch=batch, size=24, seed=batch)["max_abs_diff"] < 1e-5
    r = vizcore.render(m, "conv2:1", steps=8, size=24, device="cpu", transforms="none", record_every=1, lr=0.1)
    assert r.traces[0][-1] > r.traces[0][0]
    with pytest.raises(vizcore.errors.TargetError, match="depends on input 'speaker'") as info:
        vizcore.render(m, "speaker_proj:1", steps=2, device="cpu")
    assert "--input-node speaker" in info.value.hint
    other = vizcore.load(path, input="speaker")  # asked: no line, the other input fed zeros
    assert other.input.name == "speaker" and not other.choices and other.depends_on_input("speaker_proj")
    r = vizcore.render(other, "speaker_proj:1", steps=8, device="cpu", transforms="none", record_every=1, lr=0.1)
    assert r.traces[0][-1] > r.traces[0][0]


def test_render_cli_switches_to_the_input_the_target_reads(save_onnx, tmp_path, capsys):
    """`vizcore render` of a layer that reads only the other float input optimizes that input, and says so; with
    --input-node given it keeps the user's choice and gives the one-line error."""
    import json

    from vizcore.cli import main

    path = save_onnx(speech_encoder(), "speech_cli.onnx")
    out = tmp_path / "out"
    assert main(["render", str(path), "speaker_proj:1", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "optimizing 'speaker' (--input-node speaker)" in " ".join(err.split())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units"][0]["value"] is not None and len(manifest["units"]) == 1
    assert main(["render", str(path), "speaker_proj:1", "--steps", "2", "--input-node", "features",
                 "--out", str(tmp_path / "o2")]) == 2
    assert "depends on input 'speaker'" in " ".join(capsys.readouterr().err.split())


def test_prune_probes_the_input_the_layers_depend_on(save_onnx, tmp_path, capsys):
    """prune chooses the probed input by the load's rule (the one the most weighted layers depend on), says so, and
    verifies in onnxruntime with the other input at its seeded default."""
    from vizcore.prune.inputs import feeder

    path = save_onnx(speech_encoder(), "speech_prune.onnx")
    f = feeder(onnx.load(path), size=24)
    assert f.specs[0].name == "features" and f.natural == (1, 6, 24)
    assert f.notes == ["probing input 'features': 2 weighted layers depend on it (on 'speaker' 1)"]
    feed = f.feed(np.zeros((2, 6, 24), np.float32), seed=0)
    assert feed["features"].shape == (2, 6, 24) and feed["speaker"].shape == (2, 4)
    out, report = tmp_path / "pruned.onnx", tmp_path / "prune.json"
    assert main(["prune", str(path), "--out", str(out), "--json", str(report), "--size", "24"]) == 0
    data = json.loads(report.read_text())
    assert "probing input 'features'" in " ".join(data["notes"]) and data["verified"]
