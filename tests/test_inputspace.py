"""One input space for every command: the rule (flags > metadata > defaults with a warning), torch and numpy giving
the same numbers, `check --range` probing where the model lives, prune on the same space, and a Conv's row in
`check --layers` measured after its activation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_check_models import Planted, export
from torch import nn

import vizcore
from vizcore.cli import main
from vizcore.errors import OptionError
from vizcore.inputspace import GUESS_NORM, GUESS_RANGE, IMAGENET, resolve_from


def test_rule_flags_over_metadata_over_defaults() -> None:
    meta = {"vizcore.range": "0,255", "vizcore.mean": "1,2,3", "vizcore.std": "2"}
    s = resolve_from({}, 3)
    assert (s.lo, s.hi, s.mean, s.std) == (0.0, 1.0, *IMAGENET) and s.warnings == (GUESS_NORM,)
    assert resolve_from({}, 1).warnings == (GUESS_RANGE,)  # not an image: no normalization guessed
    s = resolve_from(meta, 3)
    assert (s.lo, s.hi, s.mean, s.std, s.source, s.warnings) == (0, 255, (1, 2, 3), (2,), "metadata", ())
    s = resolve_from(meta, 3, preprocess="none", value_range="-1,1")
    assert (s.lo, s.hi, s.mean, s.std, s.source) == (-1, 1, (0,), (1,), "option")
    # a stated range is what the graph takes: no ImageNet guess on top of it (flag or metadata alike)
    for s in (resolve_from({}, 3, value_range="0,1"), resolve_from({"vizcore.range": "0,1"}, 3)):
        assert (s.mean, s.std, s.warnings) == ((0.0,), (1.0,), ())
    for bad in ({"preprocess": "mean=nan"}, {"value_range": "1,0"}, {"preprocess": "std=0"}):
        with pytest.raises(OptionError):
            resolve_from({}, 3, **bad)


def test_torch_and_numpy_feed_the_same_numbers() -> None:
    space = resolve_from({"vizcore.range": "-1,3", "vizcore.mean": "0.2,0.5,0.9", "vizcore.std": "0.3,2,0.7"}, 3)
    x = np.random.default_rng(0).random((4, 3, 5, 6)).astype(np.float32)
    a = space.to_model(x)
    b = space.module(3)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    lo, hi = space.box(3)
    assert np.all(a.min((0, 2, 3)) >= lo - 1e-6) and np.all(a.max((0, 2, 3)) <= hi + 1e-6)


class _Identity(nn.Module):
    """A 1x1 identity convolution and a ReLU: the measured activation is the probe itself (its positive part)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean((2, 3))


def _peaks(path: Path, out: Path, *flags: str) -> tuple[list[float], list[str]]:
    assert main(["check", str(path), "--size", "16", "--no-fidelity", "--no-duplicates", "--ascent", "none",
                 "--json", str(out), "-q", *flags]) == 0
    rep = json.loads(out.read_text())
    return [u["peak"] for u in rep["layers"][0]["units"]], rep["notes"]


def test_check_range_probes_in_that_range(tmp_path: Path) -> None:
    src = export(_Identity(), tmp_path / "id.onnx", metadata=False)
    peaks, notes = _peaks(src, tmp_path / "a.json", "--range", "0,1")
    assert max(peaks) <= 1.0 + 1e-6 and min(peaks) >= 0.9  # 0..1 images, as told: white pixels reach 1
    assert any("range 0..1, normalization none (from option)" in n for n in notes)
    peaks, notes = _peaks(src, tmp_path / "b.json")  # nothing said: ImageNet assumed, and the report says so
    assert max(peaks) > 2.0 and any("assuming ImageNet" in n for n in notes)
    peaks, _ = _peaks(src, tmp_path / "c.json", "--range", "0,255")
    assert max(peaks) > 200


def test_conv_row_means_its_activation(tmp_path: Path) -> None:
    src = export(Planted(), tmp_path / "p.onnx")
    model = vizcore.load(src, size=16)
    conv = next(lay for lay in model.layers if lay.op_type == "Conv")
    out = tmp_path / "r.json"
    flags = ["--size", "16", "--no-fidelity", "--no-duplicates", "--json", str(out), "-q"]
    assert main(["check", str(src), "--layers", str(conv.index), *flags]) == 0
    lay = json.loads(out.read_text())["layers"][0]
    assert lay["dead"] == [2] and lay["name"] == "/Relu" and lay["chosen"] == str(conv.index)
    assert lay["tensor"] == model.layer("/Relu").output and lay["conv"] == conv.name
    assert any("measured after its Relu" in n for n in lay["notes"])
    assert main(["check", str(src), "--layers", f"{conv.index}:linear", *flags]) == 0
    lay = json.loads(out.read_text())["layers"][0]
    assert lay["dead"] == [] and lay["name"] == conv.name and lay["chosen"] is None  # a linear output: never dead


def test_prune_uses_the_same_space(tmp_path: Path) -> None:
    from vizcore.prune import prune

    src = export(_Identity(), tmp_path / "id.onnx", metadata=False)
    rep = prune(src, dry_run=True, probes=4, latency_reps=0, value_range="0,255")
    assert rep.evidence["input_space"]["range"] == [0.0, 255.0] and rep.evidence["input_space"]["std"] == [1.0]
    rep = prune(src, dry_run=True, probes=4, latency_reps=0)
    assert rep.evidence["input_space"]["std"] == list(IMAGENET[1]) and any("ImageNet" in n for n in rep.notes)
    with pytest.raises(OptionError):
        prune(src, dry_run=True, preprocess="mean=nan")
    for bad in ({"seed": -1}, {"probes": 0}, {"latency_reps": -5}, {"margin": float("nan")}, {"probz": 3}):
        with pytest.raises(OptionError):
            prune(src, dry_run=True, **bad)


def test_check_and_prune_feed_the_same_numbers(tmp_path: Path) -> None:
    """The check (torch, its probes through the input space) and prune (onnxruntime, the same probes through the
    same space, numpy) see the same activations, and fold them with the same accumulator."""
    import onnx
    import onnxruntime as ort

    from vizcore.analysis.layers import select_layers
    from vizcore.analysis.stats import layer_stats
    from vizcore.channelstats import ChannelStats
    from vizcore.inputspace import resolve
    from vizcore.prune.inputs import feeder
    from vizcore.samples import probe_set

    src = export(Planted(), tmp_path / "p.onnx", metadata=False)
    model = vizcore.load(src, size=16)
    relu = model.layer("/Relu")
    proto = onnx.load(str(src))
    proto.graph.output.append(onnx.ValueInfoProto(name=relu.output))
    feed = feeder(proto, size=16)
    x, sources = feed.probes(6, seed=0)
    assert sources["noise"] == 6 and x.shape[1:] == (3, 16, 16)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    seen = sess.run([relu.output], feed.feed(x, 0))[0]
    on_ort = ChannelStats()
    on_ort.add(seen)
    ps = probe_set(model.input_shape(1, 16), noise_count=6, seed=0)
    on_torch = layer_stats(model, select_layers(model, ["/Relu"]), ps.images, space=resolve(model))[relu.index]
    np.testing.assert_allclose(on_torch.peak, on_ort.summary().peak, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on_torch.apoz, on_ort.summary().apoz, atol=1e-6)
    assert on_torch.count == len(x) == len(ps.images)


def test_report_renders_and_checks_in_the_given_space(tmp_path: Path) -> None:
    """`vizcore report` takes the same input flags: its renders and its health check use the one space."""
    src = export(Planted(), tmp_path / "p.onnx", metadata=False)
    out = tmp_path / "atlas"
    assert main(["report", str(src), "--out", str(out), "--layers", "0", "--steps", "2", "--size", "16",
                 "--units-per-layer", "2", "--no-fidelity", "--range", "0,1"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    text = json.dumps(man)
    assert '"source": "option"' in text and "ImageNet" not in text
    assert "input space: range 0..1, normalization none (from option)" in man["health"]["notes"]


def test_prune_probes_a_signal_at_the_length_the_check_uses(tmp_path: Path) -> None:
    """A 1-D model of free length: prune's probe shape is `Model.input_shape()`, the receptive-field length."""
    import onnx
    from tiny import TinySignal
    from tiny import export as export_tiny

    from vizcore.prune.inputs import feeder

    src = export_tiny(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64), metadata={"vizcore.range": "-1,1"})
    model = vizcore.load(src)
    assert feeder(onnx.load(str(src))).natural == model.input_shape() and model.input_shape()[-1] != 224


def test_a_recorded_space_reads_back_and_gives_its_flags() -> None:
    from vizcore.inputspace import InputSpace

    s = resolve_from({"vizcore.range": "-1,3", "vizcore.mean": "0.2,0.5,0.9", "vizcore.std": "0.3,2,0.7"}, 3)
    back = InputSpace.from_json(s.to_json())
    assert (back.lo, back.hi, back.mean, back.std) == (s.lo, s.hi, s.mean, s.std)
    again = resolve_from({}, 3, **s.flags())
    assert (again.lo, again.hi, again.mean, again.std) == (s.lo, s.hi, s.mean, s.std)
    assert InputSpace.from_json(None) is None and InputSpace.from_json({"mean": [0]}) is None
