"""`vizcore report --alpha` (issue 27): the atlas records each unit's alpha map with its picture and shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_alpha import LeftHalf
from tiny import IMAGE_META, TinyCNN, TinySignal, export

import vizcore
from vizcore.atlas.build import CACHE_DIR, build_report
from vizcore.cli import main

FAST = {"steps": 8, "size": 32, "seed": 0, "health": False, "fidelity": False}


@pytest.fixture(scope="module")
def left(tmp_path_factory: pytest.TempPathFactory) -> vizcore.Model:
    folder = tmp_path_factory.mktemp("left")
    return vizcore.load(export(LeftHalf(), folder / "left.onnx", (1, 3, 32, 32), metadata=IMAGE_META, dynamic=False))


def _units(out: Path) -> list[dict]:
    return json.loads((out / "manifest.json").read_text())["units"]


def _alpha(out: Path, unit: dict) -> np.ndarray:
    with Image.open(out / unit["alpha"]["picture"]) as im:
        assert im.mode == "RGBA"
        return np.asarray(im).astype(float)


def test_the_atlas_shows_where_a_left_half_unit_matters(left: vizcore.Model, tmp_path: Path) -> None:
    out = build_report(left, tmp_path / "atlas", layers=[1], units_per_layer=3, alpha=True, **FAST).parent
    units = _units(out)
    assert len(units) == 3
    for u in units:
        rgba = _alpha(out, u)
        assert rgba[:, :16, 3].mean() > 4 * rgba[:, 16:, 3].mean(), u["channel"]  # the map lies where the unit sees
        with Image.open(out / u["file"]) as plain:
            assert np.array_equal(rgba[..., :3], np.asarray(plain.convert("RGB")))  # the same picture, made see-through
        with Image.open(out / u["alpha"]["heat"]) as heat:
            h = np.asarray(heat.convert("L")).astype(float)
        assert h[:, :16].mean() > 4 * h[:, 16:].mean()
    page = (out / "layer-1.html").read_text()
    assert 'data-view="heat"' in page and page.count('class="alpha-pair"') == 3
    assert f'data-heat="{units[0]["alpha"]["heat"]}"' in page


def test_alpha_changes_no_picture_and_a_grown_report_renders_only_what_lacks_a_map(tmp_path: Path) -> None:
    model = vizcore.load(export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META))
    plain = build_report(model, tmp_path / "plain", layers=[3], units_per_layer=4, classes="1", **FAST).parent
    out = tmp_path / "grown"
    build_report(model, out, layers=[3], units_per_layer=4, **FAST)
    assert "alpha" not in _units(out)[0] and not list(out.glob("img/**/*-alpha.png"))
    log: list[str] = []
    build_report(model, out, layers=[3], units_per_layer=4, classes="1", alpha=True, log=log.append, **FAST)
    assert "5 units: 0 from the cache, 5 to render" in log  # units cached without a map are rendered again
    for u in _units(out):
        assert (out / u["file"]).read_bytes() == (plain / u["file"]).read_bytes(), u["file"]  # same bytes as plain
        assert (out / u["alpha"]["picture"]).is_file() and (out / u["alpha"]["heat"]).is_file()
    log.clear()
    build_report(model, out, layers=[3], units_per_layer=4, classes="1", alpha=True, log=log.append, **FAST)
    assert "5 units: 5 from the cache, 0 to render" in log
    build_report(model, out, layers=[3], units_per_layer=4, classes="1", **FAST)  # without --alpha: the maps go
    assert not list(out.glob("img/**/*-alpha.png")) and len(list((out / CACHE_DIR).glob("*.alpha.png"))) == 5


def test_alpha_on_an_executor_gives_the_maps_of_the_plain_path(tmp_path: Path) -> None:
    model = vizcore.load(export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META))
    opts = {"layers": [3, 1], "units_per_layer": 4, "alpha": True, "render_options": {"batch_size": 2}, **FAST}
    here = build_report(model, tmp_path / "here", **opts).parent
    there = build_report(model, tmp_path / "there", executor="local", **opts).parent
    for u in _units(here):
        for f in (u["file"], u["alpha"]["picture"], u["alpha"]["heat"]):
            assert (here / f).read_bytes() == (there / f).read_bytes(), f


def test_alpha_for_a_signal_model_is_a_usage_error(tmp_path: Path) -> None:
    path = export(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64), metadata={"vizcore.range": "-1,1"})
    rc = main(["report", str(path), "--out", str(tmp_path / "r"), "--layers", "1", "--steps", "2", "--alpha",
               "--no-health", "--no-fidelity"])
    assert rc == 2 and not (tmp_path / "r" / "index.html").exists()
