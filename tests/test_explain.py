"""What fires on my image: on an image with the planted cross the detector unit ranks first and its heat map peaks
at the cross; the CLI writes heat maps, pictures and explain.json, and refuses bad input in one line (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tiny import cross_image, load_cross

import vizcore
from vizcore.analysis.explain import depth_layers
from vizcore.cli import main

CENTRE = (12, 20)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    model = load_cross(tmp)
    img = tmp / "cross.png"
    a = cross_image(centre=CENTRE, seed=999)
    Image.fromarray((a.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(img)
    return model, img


def test_the_detector_ranks_first_and_its_heat_map_peaks_at_the_cross(setup):
    model, img = setup
    out = vizcore.explain(model, img, ["/Relu", 4], top=3, size=32)
    for lay in out.layers:
        first = out.units[lay.index][0]
        assert first.channel == 0  # the cross detector, and what the second conv passes on
        assert first.activation > 2 * out.units[lay.index][1].activation
        assert first.heat.shape == (32, 32)
        peak = np.unravel_index(np.argmax(first.heat), first.heat.shape)
        assert np.abs(np.subtract(peak, CENTRE)).max() <= 1
    assert out.units[1][0].position == CENTRE
    over = out.overlay(out.units[1][0])
    assert over.shape == (32, 32, 3) and np.unravel_index(np.argmax(over[..., 1]), (32, 32)) == CENTRE


def test_an_image_without_the_cross_does_not_rank_it_first(setup):
    model, _ = setup
    out = vizcore.explain(model, cross_image(seed=5), ["/Relu"], top=4, size=32)
    assert out.units[1][0].activation == pytest.approx(0.0) or out.units[1][0].channel != 0


def test_default_layers_spread_over_the_depth(setup):
    model, _ = setup
    assert [lay.index for lay in depth_layers(model)] == [1, 4]  # both measured layers of a two-conv model
    assert [lay.index for lay in depth_layers(model, 1)] == [4]  # the deepest comes first to mind


def test_cli_writes_heat_maps_pictures_and_json(setup, tmp_path, capsys):
    model, img = setup
    out = tmp_path / "out"
    argv = ["explain", str(model.path), str(img), "--size", "32", "--top", "2", "--steps", "4", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "explain.json").read_text())
    assert [lay["index"] for lay in data["layers"]] == [1, 4]
    first = data["layers"][0]["units"][0]
    assert first["channel"] == 0 and first["position"] == list(CENTRE)
    assert (out / first["heat"]).is_file() and (out / first["picture"]).is_file()
    heat = np.asarray(Image.open(out / first["heat"]))
    assert np.abs(np.subtract(np.unravel_index(np.argmax(heat[..., 1]), heat.shape[:2]), CENTRE)).max() <= 1
    assert "fire most" in capsys.readouterr().out
    assert main(argv) == 2  # an output folder with files: refused without --force
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--force", "--steps", "0"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--layer", "/Relux"], "closest: /Relu"),
    (["--top", "0"], "--top must be at least 1"),
])
def test_cli_bad_options_are_one_line(setup, tmp_path, capsys, extra, message):
    model, img = setup
    assert main(["explain", str(model.path), str(img), "--size", "32", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_cli_missing_or_unreadable_image(setup, tmp_path, capsys):
    model, _ = setup
    assert main(["explain", str(model.path), str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(model.path), str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot read bad.png" in err and "Traceback" not in err and not (tmp_path / "o").exists()
