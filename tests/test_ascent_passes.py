"""The check's ascent on full-size networks (issue 24): a model that fixes its input still ascends at the small
ascent size when the graph up to the layer works at any size (`Model.size_free`), and units that open in the quick
first pass are not run again for the whole budget."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import IMAGE_META, PlantedVGG, export

from vizcore.analysis.gating import closed_for_every_input, layer_facts
from vizcore.analysis.layers import resolve_key
from vizcore.api import load
from vizcore.cli import main
from vizcore.health import ascent

LIVE = 12 - len(PlantedVGG.PLANTED_DEAD)


@pytest.fixture(scope="module")
def fixed_vgg(tmp_path_factory):
    """PlantedVGG with its input fixed at 96x96 (batch free), as a production export would be."""
    return export(PlantedVGG(), tmp_path_factory.mktemp("m") / "fixed.onnx", (1, 3, 96, 96), metadata=IMAGE_META,
                  dynamic=False)


def test_size_free_follows_the_ops_up_to_the_layer(fixed_vgg):
    m = load(fixed_vgg)
    assert m.fixed_size == (96, 96)
    convs = [l for l in m.layers if l.op_type in ("Conv", "Relu", "MaxPool")]
    assert convs and m.size_free(convs)  # convolutions, ReLUs and pooling slide over any size
    head = m.logits_layer()
    assert head.op_type == "Gemm" and not m.size_free([head])  # the mean over a fixed-size map feeds the head


def test_fixed_size_check_ascends_small_and_still_counts_the_planted_units(fixed_vgg, tmp_path, capsys):
    js = tmp_path / "r.json"
    rc = main(["check", str(fixed_vgg), "--ascent", "all", "--layers", "6", "--noise-probes", "4",
               "--no-fidelity", "--json", str(js)])
    assert rc in (0, 1)
    rep = json.loads(js.read_text())
    lay = rep["layers"][0]
    assert lay["rose_above"]["rose"] == LIVE
    assert sorted(u["channel"] for u in lay["units"] if u["ascent_best"] <= 0) == list(PlantedVGG.PLANTED_DEAD)
    assert any("network runs at 32x32, not the model's 96x96" in n for n in rep["notes"]), rep["notes"]
    capsys.readouterr()


@pytest.fixture(scope="module")
def free_vgg(tmp_path_factory):
    return load(export(PlantedVGG(), tmp_path_factory.mktemp("f") / "p.onnx", (1, 3, 16, 16), metadata=IMAGE_META))


def test_units_the_quick_pass_opened_are_not_run_again(free_vgg, monkeypatch):
    relu = free_vgg.layer(6)
    calls: list[list[int]] = []
    once = ascent.ascend_once

    def spy(model, jobs, **kw):
        calls.append(sorted(c for _, chans, _ in jobs for c in chans))
        return once(model, jobs, **kw)

    monkeypatch.setattr(ascent, "ascend_once", spy)
    monkeypatch.setattr(ascent, "QUICK_MIN_UNITS", 12)
    lines: list[str] = []
    got = ascent.ascend(free_vgg, [(relu, list(range(12)), 0.0)], steps=24, size=16, progress=lines.append)[relu.index]
    assert calls[0] == list(range(12))  # the quick pass: every unit
    assert calls[1:] == [list(PlantedVGG.PLANTED_DEAD)]  # then only the ones it left below the bar
    assert {c for c, a in got.items() if a.best > 0} == set(range(12)) - set(PlantedVGG.PLANTED_DEAD)
    assert all(got[c].steps <= ascent.QUICK_STEPS for c in got if got[c].best > 0)  # the step each one opened
    assert all(got[c].steps > ascent.QUICK_STEPS for c in PlantedVGG.PLANTED_DEAD)  # the second pass ran on
    assert lines[-1].startswith("gradient ascent on the 3 units still closed: 100%")  # the second pass's line
    assert "gradient ascent on 12 units, first 6 steps: 100%, ETA 0 s" in lines
    calls.clear()
    monkeypatch.setattr(ascent, "QUICK_MIN_UNITS", 13)  # fewer units than that: one pass with the whole budget
    again = ascent.ascend(free_vgg, [(relu, list(range(12)), 0.0)], steps=24, size=16)[relu.index]
    assert calls == [list(range(12))]
    assert {c for c, a in again.items() if a.best > 0} == set(range(12)) - set(PlantedVGG.PLANTED_DEAD)


def test_units_closed_after_a_relu_are_proven_dead_without_ascent(fixed_vgg, tmp_path, capsys):
    """The planted filters read a ReLU's output (never negative) with weights and bias <= 0: dead by their weights,
    so the check needs no ascent for them; a filter with one positive weight is not claimed."""
    js = tmp_path / "r.json"
    main(["check", str(fixed_vgg), "--layers", "6", "--noise-probes", "4", "--no-fidelity", "--json", str(js)])
    lay = json.loads(js.read_text())["layers"][0]
    assert lay["dead"] == list(PlantedVGG.PLANTED_DEAD) and lay["inconclusive"] == []
    for c in PlantedVGG.PLANTED_DEAD:
        u = lay["units"][c]
        assert u["ascent_best"] is None and "no input in the model's range can open it" in u["reason"]
    net = PlantedVGG()
    with torch.no_grad():
        net.c3.weight[PlantedVGG.PLANTED_DEAD[0], 0, 0, 0] = 1e-3  # one positive weight: a large input opens it
    m = load(export(net, tmp_path / "open.onnx", (1, 3, 16, 16), metadata=IMAGE_META))
    c = resolve_key(m, 6)
    assert closed_for_every_input(m, c, layer_facts(m, c)) == list(PlantedVGG.PLANTED_DEAD[1:])
    capsys.readouterr()


@pytest.mark.parametrize("layer, free", [("6", True), ("class:0", False)])
def test_render_any_size_runs_the_layers_at_the_rendered_size_where_the_graph_allows(fixed_vgg, tmp_path, layer,
                                                                                       free, capsys):
    for flag in ([], ["--any-size"]):
        out = tmp_path / f"o{len(flag)}"
        assert main(["render", str(fixed_vgg), f"{layer}" if ":" in layer else f"{layer}:0", "--size", "32",
                     "--steps", "3", "--out", str(out), "--quiet", *flag]) == 0
        st = json.loads((out / "manifest.json").read_text())["settings"]
        ran_small = st["network_input"] is None
        assert ran_small == (bool(flag) and free), st
    err = " ".join(capsys.readouterr().err.split())
    if free:
        assert "the network runs at 32x32, not the model's 96x96" in err
    else:
        assert "need the model's input size" in err and "the network runs at 96x96" in err
