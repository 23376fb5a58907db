"""Dead and constant units: the verdict rules, the probes, the layer choice, and the gradient ascent that keeps a
unit blocked only by ReLU gradients from being called dead."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_check_models import SHY, Planted, export
from torch import nn

import vizcore
from vizcore import samples as probes
from vizcore.analysis import dead
from vizcore.analysis.layers import default_layers, select_layers
from vizcore.channelstats import LayerStats
from vizcore.errors import OptionError
from vizcore.health import ascent, check


def _stats(peak: list[float], spread: list[float], scale: float = 1.0) -> LayerStats:
    return LayerStats(np.array(peak), np.array(spread), np.zeros(len(peak), bool), scale)


def test_verdict_rules() -> None:
    st = _stats([0.0, 0.005, 0.5, 0.3, 2.0], [0.0, 0.001, 0.0, 0.2, 1.0], scale=2.0)
    # threshold 0.01 * 2.0 = 0.02: units 0 and 1 are candidates; unit 2 is alive but never changes
    assert dead.candidates(st, 1e-2) == [0, 1]
    v = dead.classify(st, None, 1e-2, 1e-4)
    assert (v.dead, v.constant) == ([0, 1], [2])
    v = dead.classify(st, {1: 0.5, 0: 0.01}, 1e-2, 1e-4)  # the ascent drove unit 1 only
    assert (v.dead, v.revived, v.constant) == ([0], [1], [2])


def test_an_all_zero_layer_is_all_dead() -> None:
    v = dead.classify(_stats([0.0, 0.0], [0.0, 0.0], scale=0.0), None, 1e-2, 1e-4)
    assert v.dead == [0, 1] and v.constant == []


@pytest.fixture(scope="module")
def shy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(Planted(shy=True), tmp_path_factory.mktemp("shy") / "shy.onnx")


def test_ascent_keeps_relu_blocked_units_alive(shy_model: Path) -> None:
    # One probe (fine full-contrast noise) never makes a 3x3 patch brighter than 0.75 on average, so the probes
    # alone call the shy unit dead; the ascent, with the ReLU gradient override, drives it.
    opts = {"size": 32, "photos": False, "noise_probes": 1, "fidelity": False, "duplicates": False}
    m = vizcore.load(shy_model, size=32)
    without = check(m, **opts, ascent="none")
    assert without.layers[0].dead == [2]  # zero weights: dead without an ascent; the shy unit is not proven dead
    assert without.layers[0].inconclusive == [SHY] and without.passed
    assert "constant units not judged" in " ".join(without.notes)  # one probe cannot tell
    rep = check(m, **opts)
    assert rep.layers[0].dead == [2]  # the planted dead unit stays dead: no ascent can drive zero weights
    assert rep.layers[0].inconclusive == [] and rep.layers[0].units[SHY]["verdict"] == "alive"
    assert rep.layers[1].dead == [3]
    assert any(str(SHY) in n for n in rep.layers[0].notes)


def test_ascent_on_every_unit(shy_model: Path) -> None:
    rep = check(shy_model, size=32, photos=False, noise_probes=4, ascent="all", fidelity=False, duplicates=False)
    assert [lay.dead for lay in rep.layers] == [[2], [3], []]
    assert "gradient ascent: 28 units of 2 layers" in " ".join(rep.notes)  # the linear conv3 needs none


def test_noise_probes_are_seeded_images() -> None:
    a = probes.noise((1, 3, 16, 16), 8, seed=3)
    assert a.shape == (8, 3, 16, 16) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert np.array_equal(a, probes.noise((1, 3, 16, 16), 8, seed=3))
    assert not np.array_equal(a, probes.noise((1, 3, 16, 16), 8, seed=4))
    assert np.all(a[-1] == 0.5)  # the flat grey probe
    assert a[0].std() > a[5].std()  # fine noise has more local contrast than smooth noise


def test_user_images(tmp_path: Path, shy_model: Path) -> None:
    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "white.png")
    Image.new("L", (10, 30), 0).save(tmp_path / "black.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    x = probes.user_images(tmp_path, (1, 3, 16, 16))
    assert x.shape == (2, 3, 16, 16) and float(x[0].min()) == 0 and float(x[1].max()) == 1  # sorted by name
    with pytest.raises(OptionError):
        probes.user_images(tmp_path / "nope", (1, 3, 16, 16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError):
        probes.user_images(tmp_path / "empty", (1, 3, 16, 16))
    # a white image drives the shy unit, so with it as a probe no ascent is needed
    rep = check(shy_model, size=32, photos=False, noise_probes=1, images=str(tmp_path), ascent="none",
                fidelity=False, duplicates=False)
    assert rep.layers[0].dead == [2]
    assert "2 images" in " ".join(rep.notes)


def test_without_scikit_image(monkeypatch: pytest.MonkeyPatch) -> None:
    probes._photos.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    photos, why = probes.photos((1, 3, 32, 32))  # the photos shipped with vizcore stand in
    assert why is None and photos.shape[1:] == (3, 32, 32) and photos.shape[0] == len(
        list(probes.SHIPPED_PHOTOS.glob("*.jpg"))) >= 5
    probes._photos.cache_clear()


def test_photos_when_available() -> None:
    pytest.importorskip("skimage")
    photos, why = probes.photos((1, 1, 24, 24))
    assert why is None and photos.shape[1:] == (1, 24, 24) and photos.shape[0] >= 5


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.c2, self.c3 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn(self.c1(x)))
        b = self.c2(a)
        return torch.relu(b) + b + torch.sigmoid(self.c3(a))


def test_default_layers_follow_batchnorm_and_stop_at_branches(tmp_path: Path) -> None:
    m = vizcore.load(export(_BNNet().eval(), tmp_path / "bn.onnx", metadata=False), size=16)
    got = [(c.conv.op_type, c.layer.op_type) for c in default_layers(m)]
    # c1 -> BN -> Relu (the exporter may fold BN into the Conv); c2 feeds two nodes: measured as it is; c3 -> Sigmoid
    assert got == [("Conv", "Relu"), ("Conv", "Conv"), ("Conv", "Sigmoid")]
    chosen = select_layers(m, [default_layers(m)[0].layer.name])
    assert chosen[0].conv is not None  # a chosen activation keeps its Conv's weights for the duplicate search


def test_depth_groups_cover_every_job_in_order(shy_model: Path) -> None:
    m = vizcore.load(shy_model, size=32)
    layers = [c.layer for c in default_layers(m)]
    jobs = [(lay, [0, 1], 0.1) for lay in layers]
    groups = ascent.depth_groups(m, jobs)
    assert [j for g in groups for j in g] == jobs
    assert ascent.depth_groups(m, []) == []
