"""The article's number: `render L:all` and `check --ascent all --layers L` end with "N of M units rose above 0",
and the manifest / JSON hold every unit's best value; without a terminal both print plain progress lines."""

from __future__ import annotations

import json
import re

import pytest
from tiny import IMAGE_META, PlantedVGG, export

from vizcore.cli import main
from vizcore.commands._progress import PlainLines

LAYER = "6"  # the ReLU after the last conv (see PlantedVGG)
LIVE = 12 - len(PlantedVGG.PLANTED_DEAD)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return export(PlantedVGG(), tmp_path_factory.mktemp("m") / "planted.onnx", (1, 3, 16, 16), metadata=IMAGE_META)


def test_render_all_counts_exactly_the_planted_undrivable_units(planted, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["render", str(planted), f"{LAYER}:all", "--steps", "24", "--size", "16", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    last = cap.out.strip().splitlines()[-1]
    assert re.fullmatch(rf"/Relu_2: {LIVE} of 12 units rose above 0 \(best value > 0 within 24 steps\)", last)
    man = json.loads((out / "manifest.json").read_text())
    best = {u["channel"]: u["best_value"] for u in man["units"]}
    assert sorted(c for c, b in best.items() if b <= 0) == list(PlantedVGG.PLANTED_DEAD)
    assert man["rose_above"] == [{"layer": "/Relu_2", "layer_index": 6, "units": 12, "threshold": 0.0,
                                  "steps": 24, "rose": LIVE}]
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("render: ")]  # no TTY: plain progress lines
    assert lines and re.fullmatch(r"render: units 12/12, steps 24/24, \d+ s", lines[-1])


def test_check_ascent_all_counts_them_too(planted, tmp_path, capsys):
    js = tmp_path / "r.json"
    rc = main(["check", str(planted), "--ascent", "all", "--layers", LAYER, "--size", "16", "--noise-probes", "4",
               "--no-fidelity", "--json", str(js)])
    cap = capsys.readouterr()
    assert rc in (0, 1)
    assert f"/Relu_2: {LIVE} of 12 units rose above 0 (best value > 0 within 24 steps)" in cap.out
    lay = json.loads(js.read_text())["layers"][0]
    assert lay["rose_above"]["rose"] == LIVE and len(lay["units"]) == 12
    assert sorted(u["channel"] for u in lay["units"] if u["ascent_best"] <= 0) == list(PlantedVGG.PLANTED_DEAD)
    stages = [ln.split(",")[0] for ln in cap.err.splitlines() if ln.startswith("check: ")]
    assert "check: loading the model" in stages and any(re.match(r"check: probes \d+/\d+ images", s)
                                                       for s in stages)
    assert any(s.startswith("check: gradient ascent") for s in stages)


def test_plain_lines_are_throttled_and_carry_an_eta():
    now, lines = [0.0], []
    p = PlainLines("check", lines.append, every=5.0, clock=lambda: now[0])
    for i in range(1, 11):
        now[0] = float(i)
        p(f"probes {i * 10}/200 images")
    p("probes 200/200 images")  # the last of a stage is always shown
    assert lines == ["check: probes 10/200 images, 0 s", "check: probes 60/200 images, 5 s, ETA 12 s",
                     "check: probes 200/200 images, 9 s"]
    p("duplicate filters in conv")  # a new stage is always shown
    p("gradient ascent on 4 units: 50%, ETA 3 s")
    assert lines[-2:] == ["check: duplicate filters in conv, 0 s",
                          "check: gradient ascent on 4 units: 50%, 0 s, ETA 3 s"]
