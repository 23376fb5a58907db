"""Issue 25, cause 2: a voice-activity model that switches on its `sr` (sample rate, int64 scalar) input.

Given the input (`--feed sr=16000`, `feeds={"sr": 16000}`, or the metadata default `vizcore.feed.sr`), the loader
folds it in as a constant, folds what is computed from it and inlines the If branches it decides (nested ones
too), then converts; without it the If is refused in one line naming the input. A sibling takes log(0) (no
epsilon, a silent frequency, as a real STFT's imaginary DC row is): onnxruntime's outputs are -inf/NaN and the
parity was printed as a number (`nan`; `inf` where one side stayed finite, or where the converted graph failed or
an output's shape differed); it is now "not measured" naming the output, or an error line, never a number.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper

import vizcore
from vizcore.analysis.fidelity import _compare, fidelity
from vizcore.cli import main
from vizcore.errors import UnsupportedOpError

LENGTH = 64


def _w(rng: np.random.Generator, *shape: int, s: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * s).astype(np.float32)


def _power(tag: str) -> list[onnx.NodeProto]:
    """sqrt(re^2 + im^2) of the STFT halves."""
    return [helper.make_node("Mul", [f"{tag}_re", f"{tag}_re"], [f"{tag}_re2"]),
            helper.make_node("Mul", [f"{tag}_im", f"{tag}_im"], [f"{tag}_im2"]),
            helper.make_node("Add", [f"{tag}_re2", f"{tag}_im2"], [f"{tag}_p"]),
            helper.make_node("Sqrt", [f"{tag}_p"], [f"{tag}_mag"], name=f"{tag}_magnitude")]


def vad_branch(tag: str, frame: int, seed: int, silent_bin: bool = False) -> onnx.GraphProto:
    """x (N, L) -> reflect pad -> STFT as a strided Conv1d -> magnitude -> log -> conv1d relu -> LSTM over frames ->
    conv1d -> sigmoid mean: `out` (N, 1); also `feat` (N, 1), the mean log magnitude. `silent_bin`: the first
    frequency's two basis rows are zero (a real STFT's imaginary DC row is), so its magnitude is exactly 0."""
    rng = np.random.default_rng(seed)
    hidden, freqs = 8, 5
    basis = _w(rng, 2 * freqs, 1, 2 * frame)
    if silent_bin:
        basis[[0, freqs]] = 0.0
    inits = {f"{tag}_basis": basis, f"{tag}_enc": _w(rng, hidden, freqs, 3),
             f"{tag}_W": _w(rng, 1, 4 * hidden, hidden), f"{tag}_R": _w(rng, 1, 4 * hidden, hidden),
             f"{tag}_dec": _w(rng, 1, hidden, 1)}
    t = tag
    nodes = [helper.make_node("Unsqueeze", ["x", "one"], [f"{t}_xu"]),
             helper.make_node("Pad", [f"{t}_xu", "pads"], [f"{t}_xp"], mode="reflect"),
             helper.make_node("Conv", [f"{t}_xp", f"{t}_basis"], [f"{t}_spec"], strides=[frame], name=f"{t}_stft"),
             helper.make_node("Split", [f"{t}_spec"], [f"{t}_re", f"{t}_im"], axis=1, num_outputs=2),
             *_power(t),
             helper.make_node("Add", [f"{t}_mag", "eps"], [f"{t}_mage"]),
             helper.make_node("Log", [f"{t}_mage"], [f"{t}_log"], name=f"{t}_log"),
             helper.make_node("ReduceMean", [f"{t}_log", "axes12"], [f"{t}_feat"], keepdims=0),
             helper.make_node("Unsqueeze", [f"{t}_feat", "one"], [f"{t}_feat1"]),
             helper.make_node("Conv", [f"{t}_log", f"{t}_enc"], [f"{t}_e"], pads=[1, 1], name=f"{t}_encoder"),
             helper.make_node("Relu", [f"{t}_e"], [f"{t}_er"], name=f"{t}_relu"),
             helper.make_node("Transpose", [f"{t}_er"], [f"{t}_seq"], perm=[2, 0, 1]),
             helper.make_node("LSTM", [f"{t}_seq", f"{t}_W", f"{t}_R"], [f"{t}_Y"], hidden_size=hidden,
                              name=f"{t}_lstm"),
             helper.make_node("Squeeze", [f"{t}_Y", "one"], [f"{t}_ys"]),
             helper.make_node("Transpose", [f"{t}_ys"], [f"{t}_yt"], perm=[1, 2, 0]),
             helper.make_node("Conv", [f"{t}_yt", f"{t}_dec"], [f"{t}_d"], name=f"{t}_decoder"),
             helper.make_node("Sigmoid", [f"{t}_d"], [f"{t}_s"], name=f"{t}_prob"),
             helper.make_node("ReduceMean", [f"{t}_s", "axes2"], [f"{t}_out"], keepdims=0)]
    outs = [helper.make_tensor_value_info(f"{t}_out", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info(f"{t}_feat1", TensorProto.FLOAT, ["N", 1])]
    return helper.make_graph(nodes, tag, [], outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])


def vad_model(log_of_zero: bool = False, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Silero-VAD-like: If(sr == 16000) then the 16 kHz net, else If(sr == 8000) (computed inside the else branch)
    then the 8 kHz net else a third; outputs `out` (speech probability) and `feat` (mean log magnitude).
    `log_of_zero`: the sibling whose log has no epsilon and whose first frequency is silent: log(0) = -inf."""
    inner = helper.make_graph(
        [helper.make_node("Equal", ["sr", "sr8k"], ["is8k"], name="is_8k"),
         helper.make_node("If", ["is8k"], ["o8", "f8"], name="by_rate_8k",
                          then_branch=vad_branch("k8", 4, 1, log_of_zero),
                          else_branch=vad_branch("other", 2, 2, log_of_zero))],
        "else", [], [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in ("o8", "f8")])
    shared = {"one": np.array([1], np.int64), "axes2": np.array([2], np.int64), "axes12": np.array([1, 2], np.int64),
              "eps": np.float32(0.0 if log_of_zero else 1e-6), "pads": np.array([0, 0, 8, 0, 0, 8], np.int64),
              "sr16k": np.array(16000, np.int64), "sr8k": np.array(8000, np.int64)}
    nodes = [helper.make_node("Equal", ["sr", "sr16k"], ["is16k"], name="is_16k"),
             helper.make_node("If", ["is16k"], ["out", "feat"], name="by_rate",
                              then_branch=vad_branch("k16", 8, 0, log_of_zero), else_branch=inner)]
    g = helper.make_graph(nodes, "vad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", LENGTH]),
                                         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in ("out", "feat")],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in shared.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], producer_name="vad-standin")
    m.ir_version = 8
    for k, v in {"vizcore.range": "-1,1", **(metadata or {})}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


@pytest.fixture
def vad_path(save_onnx):
    return save_onnx(vad_model(), "vad.onnx")


def test_the_sample_rate_if_is_refused_in_one_line_naming_the_input(vad_path, capsys):
    with pytest.raises(UnsupportedOpError, match=r"decided by input 'sr'.*--feed sr=VALUE"):
        vizcore.load(vad_path)
    assert main(["inspect", str(vad_path)]) == 2
    err = capsys.readouterr().err
    assert "--feed sr=VALUE" in err and "Traceback" not in err


@pytest.mark.parametrize("sr, folded", [(16000, 1), (8000, 2), (11025, 2)])
def test_specialised_on_the_sample_rate_matches_onnxruntime_and_renders(vad_path, sr, folded):
    m = vizcore.load(vad_path, feeds={"sr": sr})
    assert m.choices[:1] == (f"specialised on sr={sr}: folded {folded} If node{'s' if folded > 1 else ''}",)
    assert "If" not in {l.op_type for l in m.layers} and not m.unreachable
    assert [t.name for t in m.inputs] == ["x"]
    x = np.random.default_rng(sr).uniform(-1, 1, (3, LENGTH)).astype(np.float32)
    ref = ort_run(vad_path, {"x": x, "sr": np.array(sr, np.int64)})
    with torch.no_grad():
        got = m.module(torch.from_numpy(x))
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g.numpy(), r, atol=1e-5, rtol=1e-4)
    assert fidelity(m)["max_abs_diff"] < 1e-5
    lstm = next(l for l in m.layers if l.op_type == "Relu")
    r = vizcore.render(m, f"{lstm.name}:0", steps=8, size=LENGTH, device="cpu", transforms="none", record_every=1)
    trace = r.traces[0]  # an LSTM behind an STFT: the 8-step trace wobbles, its best rises clearly
    assert np.isfinite(trace).all() and r.best_values[0] >= 1.3 * trace[0], trace


def test_the_branches_differ_so_the_constant_matters(vad_path):
    x = np.random.default_rng(0).uniform(-1, 1, (1, LENGTH)).astype(np.float32)
    a, b = (ort_run(vad_path, {"x": x, "sr": np.array(sr, np.int64)})[0] for sr in (16000, 8000))
    assert abs(float(a[0, 0]) - float(b[0, 0])) > 1e-4


def test_metadata_default_and_cli_feed_number(save_onnx, capsys):
    path = save_onnx(vad_model(metadata={"vizcore.feed.sr": "8000"}), "vad_meta.onnx")
    m = vizcore.load(path)
    assert m.choices[:1] == ("specialised on sr=8000: folded 2 If nodes",)
    assert any(l.name.endswith("k8_stft") for l in m.layers)
    assert main(["inspect", str(path), "--feed", "sr=16000"]) == 0  # the flag wins over the metadata
    got = capsys.readouterr()
    assert "specialised on sr=16000: folded 1 If node" in got.out + got.err


def test_an_infinite_reference_is_not_measured_never_inf(save_onnx, capsys):
    """The sibling that takes log(0) (no epsilon, a silent frequency): onnxruntime's outputs are -inf and NaN, the
    old comparison printed `max |torch - onnxruntime| = nan` (inf where one side was finite) and failed the check;
    now the parity is "not measured", naming the output."""
    path = save_onnx(vad_model(log_of_zero=True), "vad_log0.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (1, LENGTH)).astype(np.float32)
    assert np.isneginf(ort_run(path, {"x": x, "sr": np.array(16000, np.int64)})[1]).all()
    m = vizcore.load(path, feeds={"sr": 16000})
    fid = fidelity(m)
    assert not fid["available"] and "onnxruntime's output 'out' is NaN" in fid["reason"], fid
    assert main(["check", str(path), "--feed", "sr=16000", "--ascent", "none", "--noise-probes", "2"]) in (0, 1)
    out = capsys.readouterr().out
    assert "not measured: onnxruntime's output" in out and "= nan" not in out and "= inf" not in out


def test_parity_is_a_finite_number_or_none():
    head = {"available": True}
    ok = _compare(["y"], [np.ones((1, 2))], [np.ones((1, 2), np.float32) * 1.5], head)
    assert ok["max_abs_diff"] == 0.5
    both_inf = _compare(["y"], [np.array([np.inf])], [np.array([np.inf], np.float32)], head)
    assert not both_inf["available"] and "inf" in both_inf["reason"]
    torch_nan = _compare(["y"], [np.zeros(2)], [np.array([0, np.nan], np.float32)], head)
    assert torch_nan["max_abs_diff"] is None and "inf or NaN here" in torch_nan["error"]
    shapes = _compare(["y"], [np.zeros((1, 2))], [np.zeros((2, 2), np.float32)], head)
    assert shapes["max_abs_diff"] is None and "[2, 2] here, [1, 2] in onnxruntime" in shapes["error"]
