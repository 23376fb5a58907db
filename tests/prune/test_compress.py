"""The lossy prune (`budget=`): the search removes what the budget allows (a planted redundant residual block first,
an essential one never), a budget that cannot be met writes nothing (exit 1), the held-out set never chooses,
recovery improves the agreement, and the written model passes the full checker with the original interface.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from prune_models import TwoBlocks, run, with_data

from vizcore.cli import main
from vizcore.errors import ModelLoadError, OptionError
from vizcore.prune import prune
from vizcore.prune.budget import agreement, parse_budget


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return with_data(TwoBlocks(), tmp_path_factory.mktemp("compress"), seed=0)


def _blocks(rep) -> list[str]:
    return [u["unit"] for st in rep.steps for u in st["units"] if u["kind"] in ("block", "identity")]


def test_the_redundant_block_goes_first_and_the_essential_block_stays(planted, tmp_path):
    d, src = planted
    out = tmp_path / "small.onnx"
    rep = prune(src, out, data=str(d / "calib"), verify_data=str(d / "held"), budget="rel=0.01", latency_reps=0,
                reconstruct="off")  # the search order without re-fitting (a re-fit goes further, near the edge)
    assert rep.verified and rep.written, rep.to_json()["budget"]
    first = rep.steps[0]["units"]
    assert [u["kind"] for u in first] == ["block"] and first[0]["unit"].startswith("/Add:"), first
    assert all(not u.startswith("/Add_1") and "/b2/" not in u for u in _blocks(rep)), _blocks(rep)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    convs = {n.name for n in m.graph.node if n.op_type == "Conv"}
    assert "/a1/Conv" not in convs and "/a2/Conv" not in convs and {"/b1/Conv", "/b2/Conv"} <= convs
    orig = onnx.load(str(src))
    assert [(i.name, str(i.type)) for i in m.graph.input] == [(i.name, str(i.type)) for i in orig.graph.input]
    assert [(o.name, str(o.type)) for o in m.graph.output] == [(o.name, str(o.type)) for o in orig.graph.output]
    held = np.load(d / "held" / "x.npy")
    got = agreement(run(src, held), run(out, held))  # measured here, independently of the report
    assert got["rel"] <= 0.01 and rep.budget["held_out"]["rel"] == pytest.approx(got["rel"], rel=1e-4)
    assert rep.cost["macs"][1] < 0.6 * rep.cost["macs"][0]
    assert rep.interface["identical"] and rep.checker.startswith("passed")


def test_a_budget_that_cannot_be_met_writes_nothing_and_exits_1(planted, tmp_path, capsys):
    d, src = planted
    out, report = tmp_path / "small.onnx", tmp_path / "r.json"
    code = main(["prune", str(src), "--out", str(out), "--data", str(d / "calib"), "--budget", "rel=0.001,macs=0.3",
                 "--latency-reps", "0", "--json", str(report)])
    assert code == 1 and not out.exists()
    assert "BUDGET MISSED" in capsys.readouterr().out
    b = json.loads(report.read_text())["budget"]
    assert b["met"] is False and b["missed_by"]["macs"] > 0 and b["macs_fraction"] > 0.3


def test_the_held_out_set_never_chooses(planted, tmp_path, monkeypatch):
    """A poisoned held-out set (NaN) would reject every step if the search read it; it is read only afterwards."""
    from vizcore.prune import compress, inputs

    d, src = planted
    (tmp_path / "poison").mkdir()
    np.save(tmp_path / "poison" / "x.npy", np.full((8, 3, 16, 16), np.nan, np.float32))
    events = []
    real_data, real_run = inputs.Feeder.data, compress.Search.run
    monkeypatch.setattr(inputs.Feeder, "data", lambda self, path, flag: events.append(flag) or
                        real_data(self, path, flag))
    monkeypatch.setattr(compress.Search, "run", lambda self, m: events.append("searched") or real_run(self, m))
    kw = dict(data=str(d / "calib"), budget="rel=0.01", latency_reps=0)
    clean = prune(src, tmp_path / "a.onnx", **kw)
    poisoned = prune(src, tmp_path / "b.onnx", verify_data=str(tmp_path / "poison"), **kw)
    assert [s["units"] for s in poisoned.steps] == [s["units"] for s in clean.steps] and clean.steps
    assert [s["calibration"] for s in poisoned.steps] == [s["calibration"] for s in clean.steps]
    assert events == ["--data", "searched", "--data", "searched", "--verify-data"]
    assert clean.written and not poisoned.written and not poisoned.verified
    assert not (tmp_path / "b.onnx").exists() and poisoned.budget["missed_by"]["held_out"] > 0


def test_recovery_improves_the_agreement_and_is_deterministic(planted, tmp_path):
    d, src = planted
    kw = dict(data=str(d / "calib"), verify_data=str(d / "held"), budget="cos=0.98", latency_reps=0,
              recover=60, recover_lr=3e-3, seed=3, device="cpu", ranking="taylor",
              channel_multiple=1)  # the planted case of the one-class-at-a-time search (8-channel tensors)
    rep = prune(src, tmp_path / "a.onnx", **kw)
    r = rep.recovery["rounds"][0]
    assert r["kept"] and r["loss_last"] < r["loss_first"], r
    assert r["calibration_after"]["cos"] > r["calibration_before"]["cos"]
    assert r["calibration_after"]["rel"] < r["calibration_before"]["rel"]
    kinds = [s["kinds"] for s in rep.steps]
    first = kinds.index(["recovery"])
    before, after = rep.steps[first - 1]["held_out"], rep.steps[first]["held_out"]
    assert after["cos"] > before["cos"] and after["rel"] < before["rel"]  # the held-out set gains too
    again = prune(src, tmp_path / "b.onnx", **kw)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert [x["loss_last"] for x in again.recovery["rounds"]] == [x["loss_last"] for x in rep.recovery["rounds"]]


def test_recovery_refuses_a_weight_it_cannot_write_back(planted):
    from vizcore.prune.torchgraph import load_proto, weight_map

    _, src = planted
    proto = onnx.load(str(src))
    m = load_proto(proto, (16, 16))
    assert len(weight_map(proto, m)) >= 8  # every Conv weight and bias, the Gemm weight
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(t for t in proto.graph.initializer if t.name == conv.input[1])
    w = onnx.numpy_helper.to_array(init) + 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    with pytest.raises(ModelLoadError, match="cannot map initializer"):
        weight_map(proto, m)


@pytest.mark.parametrize("text", ["", "top1", "top1=2", "rel=-1", "foo=1", "top1=0.9,cos=0.9", "rel=0.1,macs=0",
                                  "rel=nan", "macs=0.5"])
def test_a_bad_budget_is_one_line(text):
    with pytest.raises(OptionError) as e:
        parse_budget(text)
    assert "\n" not in str(e.value)


def test_a_classifier_budget_needs_a_classifier_and_data(planted, tmp_path):
    d, src = planted
    with pytest.raises(OptionError, match="needs --data"):
        prune(src, tmp_path / "a.onnx", budget="top1=0.99")
    with pytest.raises(OptionError, match="--recover needs --budget"):
        prune(src, tmp_path / "a.onnx", recover=5)


def test_the_cli_writes_model_report_and_curve_and_prints_progress(planted, tmp_path, capsys):
    d, src = planted
    out, report, plot = tmp_path / "small.onnx", tmp_path / "r.json", tmp_path / "curve.png"
    code = main(["prune", str(src), "--out", str(out), "--data", str(d / "calib"), "--verify-data", str(d / "held"),
                 "--budget", "rel=0.01", "--latency-reps", "4", "--json", str(report), "--plot", str(plot)])
    got = capsys.readouterr()
    assert code == 0 and out.exists() and "BUDGET MET" in got.out
    assert "search trial 1/60" in got.err and "ETA" in got.err  # plain progress lines off a terminal
    j = json.loads(report.read_text())
    assert j["steps"][0]["latency"]["reps"] == 3 and j["budget"]["met"] and j["written"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["prune", str(src), "--out", str(tmp_path / "x.onnx"), "--plot", str(plot)]) == 2
