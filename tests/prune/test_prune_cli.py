"""`vizcore prune` end to end: tolerance failure (nothing written, exit 1, culprit named), never overwriting, the
input untouched, dry runs, check-JSON evidence, external data / metadata / opset kept, ops not understood.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import torch
from prune_models import PlainCNN, conv_channels, export, max_rel_diff, plant, randomize_bn
from torch import nn

from vizcore.cli import main
from vizcore.prune import prune


class Sleeper(nn.Module):
    """conv-relu whose channel 2 sums its patch with bias -1000: no noise probe fires it, a bright input does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
        with torch.no_grad():
            self.c1.weight[2] = 1.0
            self.c1.bias[2] = -1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x))).mean((2, 3))


def _planted(tmp_path, name="m.onnx"):
    m = PlainCNN()
    randomize_bn(m)
    plant(m.b1, [2, 5])
    plant(m.b2, [3])
    return export(m, tmp_path / name)


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_tolerance_exceeded_writes_nothing_and_names_the_culprit(tmp_path, capsys):
    src = export(Sleeper(), tmp_path / "s.onnx")
    held = tmp_path / "held"
    held.mkdir()
    np.save(held / "bright.npy", np.full((3, 16, 16), 100.0, dtype=np.float32))
    out = tmp_path / "p.onnx"
    code = main(["prune", str(src), "--out", str(out), "--verify-data", str(held), "--probes", "8",
                 "--latency-reps", "0", "--json", str(tmp_path / "r.json")])
    assert code == 1 and not out.exists()
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["written"] is False and rep["verified"] is False
    assert rep["culprit"] == {"unit": "/c1/Conv:2", "action": "remove", "fails_alone": True}
    assert rep["max_relative_diff"] > 1e-5
    assert "/c1/Conv:2" in capsys.readouterr().out


def test_a_unit_that_fires_on_data_is_kept(tmp_path):
    src = export(Sleeper(), tmp_path / "s.onnx")
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "bright.npy", np.full((1, 3, 16, 16), 100.0, dtype=np.float32))
    rep = prune(src, tmp_path / "p.onnx", data=data, probes=8, latency_reps=0)
    assert rep.verified and rep.counts()["removed"] == 0 and rep.evidence["sources"] == {"probes": 22, "data": 1}
    assert rep.evidence["probe_sources"] == {"noise": 8, "skimage": 14}  # the check's probes: noise and photos
    rep = prune(src, tmp_path / "q.onnx", probes=8, latency_reps=0)  # without the data it looks dead...
    assert rep.verified and rep.counts()["removed"] == 1  # ...and the probes cannot tell: the reason for --data


def test_never_overwrites_and_never_touches_the_input(tmp_path, capsys):
    src = _planted(tmp_path)
    before = _sha(src)
    out = tmp_path / "p.onnx"
    out.write_bytes(b"precious")
    assert main(["prune", str(src), "--out", str(out), "--latency-reps", "0"]) == 2
    assert out.read_bytes() == b"precious" and "--force" in capsys.readouterr().err
    assert main(["prune", str(src), "--out", str(src), "--force"]) == 2
    assert main(["prune", str(src), "--out", str(out), "--force", "--latency-reps", "2", "--probes", "8"]) == 0
    assert _sha(src) == before and conv_channels(out)["/c1/Conv"][0] == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_dry_run_reports_and_writes_nothing(tmp_path, capsys):
    src = _planted(tmp_path)
    assert main(["prune", str(src), "--dry-run", "--json", "-", "--latency-reps", "0", "--probes", "8"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dry_run"] and not rep["written"] and rep["counts"]["removed"] == 3
    assert sorted(r["unit"] for r in rep["removed"]) == ["/c1/Conv:2", "/c1/Conv:5", "/c2/Conv:3"]
    assert rep["cost"]["macs"][1] < rep["cost"]["macs"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_check_json_gates_the_removal(tmp_path):
    src = _planted(tmp_path)
    layers = [{"name": "/Relu", "channels": 8, "dead": [2, 5], "constant": [], "duplicates": []},
              {"name": "/Relu_1", "channels": 16, "dead": [3], "constant": [], "duplicates": []}]
    check = tmp_path / "check.json"
    check.write_text(json.dumps({"model": {}, "passed": True, "layers": layers, "fidelity": {}, "failures": []}))
    rep = prune(src, tmp_path / "a.onnx", from_check=check, probes=8, latency_reps=0)
    assert rep.counts()["removed"] == 3 and rep.inconclusive == 0
    layers[0]["dead"] = [2]  # the check's ascent drove channel 5: it stays, inconclusive
    check.write_text(json.dumps({"model": {}, "passed": True, "layers": layers, "fidelity": {}, "failures": []}))
    rep = prune(src, tmp_path / "b.onnx", from_check=check, probes=8, latency_reps=0)
    assert rep.counts()["removed"] == 2 and rep.inconclusive == 1
    why = "zero on the probes, but the check (probes/ascent) saw it fire"
    assert rep.kept == [{"unit": "/c1/Conv:5", "reason": why}]


def test_real_check_report_feeds_prune(tmp_path):
    import vizcore

    src = _planted(tmp_path)
    report = vizcore.check(str(src), size=16, fidelity=False, duplicates=False, ascent="none", noise_probes=4)
    (tmp_path / "check.json").write_text(json.dumps(report.to_json()))
    rep = prune(src, tmp_path / "p.onnx", from_check=tmp_path / "check.json", probes=8, latency_reps=0)
    assert rep.verified and rep.counts()["removed"] == 3


def test_external_data_metadata_and_opset_are_kept(tmp_path):
    src = _planted(tmp_path)
    m = onnx.load(str(src))
    m.metadata_props.add(key="vizcore.mean", value="0.5")
    ext = tmp_path / "ext.onnx"
    onnx.save_model(m, str(ext), save_as_external_data=True, location="ext.weights", size_threshold=0)
    out = tmp_path / "out" / "p.onnx"
    rep = prune(ext, out, probes=8, latency_reps=0)
    assert rep.written and (tmp_path / "out" / "p.onnx.data").exists()
    head = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in head.graph.initializer)
    got = onnx.load(str(out))
    assert {p.key: p.value for p in got.metadata_props}["vizcore.mean"] == "0.5"
    assert [(o.domain, o.version) for o in got.opset_import] == [(o.domain, o.version) for o in m.opset_import]
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert max_rel_diff(ext, out, x) <= 1e-6


class Mixer(nn.Module):
    """conv-bn-relu then a softmax over the channels (an op the pruner does not understand), conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.c1, self.b1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return self.c2(y * torch.softmax(y, 1)).mean((2, 3))


def test_op_not_understood_keeps_its_channels_and_is_named(tmp_path):
    m = Mixer()
    plant(m.b1, [1])
    rep = prune(export(m, tmp_path / "m.onnx"), tmp_path / "p.onnx", probes=8, latency_reps=0)
    assert rep.verified and rep.counts()["removed"] == 0
    assert any(op.startswith("Softmax") for op in rep.frozen_ops)
    assert rep.kept and "Softmax" in rep.kept[0]["reason"]


def test_an_initializer_only_an_if_branch_reads_survives_the_pruning(tmp_path):
    """The sweep of unused weights sees the names an If body reads from the outer graph."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b1 = np.full(4, 0.1, np.float32)
    w1[2], b1[2] = 0.0, -1.0  # a dead channel: prune has something to remove
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(True), "cond"), numpy_helper.from_array(np.float32(3.0), "k_outer")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])
    then = helper.make_graph([helper.make_node("Mul", ["c2", "k_outer"], ["y_then"])], "then", [],
                             [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [1, 2, 8, 8])])
    other = helper.make_graph([helper.make_node("Identity", ["c2"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [1, 2, 8, 8])])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="c2"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [out],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key="vizcore.range", value="0,1")
    src = tmp_path / "if.onnx"
    onnx.save(m, str(src))
    rep = prune(src, tmp_path / "p.onnx", probes=8, latency_reps=0)
    assert rep.verified and rep.counts()["removed"] == 1
    assert "k_outer" in {t.name for t in onnx.load(str(tmp_path / "p.onnx")).graph.initializer}
