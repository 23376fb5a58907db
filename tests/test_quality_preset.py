"""The quality presets (issue 27): default, best and plain as one options value; several random crops per step
inside the one batch (the crops transform), horama's standardized Fourier image. Tiny seeded models, a few seconds
each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import CrossDetector, TinyCNN, TinySignal, export, load_tiny

import vizcore
from vizcore.cli import main
from vizcore.engine.options import BASE_LR, PARAM_PRESETS, QUALITY, RenderOptions, for_input, with_keywords
from vizcore.errors import OptionError
from vizcore.params import FFTImage
from vizcore.transforms import Crops


def test_the_preset_sets_only_the_fields_not_given():
    best = RenderOptions(quality="best")
    for key, value in QUALITY["best"].items():
        assert getattr(best, key) == value
    # a value given explicitly stays, even the default's own value
    assert with_keywords(None, {"quality": "best", "steps": 256}).steps == 256
    assert RenderOptions.from_env(quality="best", lr=0.05).lr == 0.05
    assert with_keywords(None, {"quality": "best"}).replace(lr=0.05).lr == 0.05
    assert with_keywords(RenderOptions(steps=32), {"quality": "best"}).steps == 32
    assert RenderOptions(quality="best").to_json()["quality"] == "best"
    assert RenderOptions() == RenderOptions(quality="default").replace(quality="default")
    with pytest.raises(OptionError, match="quality preset"):
        RenderOptions(quality="fast")
    with pytest.raises(OptionError, match="crops"):
        RenderOptions(crops=0)


def test_the_preset_keeps_images_settings_off_1d_signals():
    opts = for_input(RenderOptions(quality="best"), 3)
    assert opts.param == "signal" and opts.param_options == {}
    std = PARAM_PRESETS["best"]["fft"]
    assert for_input(RenderOptions(quality="best"), 4).param_options == std["param_options"]
    # the Fourier options follow the parameterization, not the input rank
    assert for_input(RenderOptions(quality="best", param="fft"), 4).param_options == std["param_options"]
    assert for_input(RenderOptions(quality="best", param="pixel"), 4).param_options == {}
    # options given are kept as they are
    given = RenderOptions(quality="best", param_options={"decay_power": 1.0})
    assert for_input(given, 4).param_options == {"decay_power": 1.0}
    assert for_input(RenderOptions(quality="plain"), 4).param_options == {}


@pytest.mark.parametrize("given, param_options, lr, optimizer, steps", [
    ({}, "standardized", 0.3, "nadam", 144),  # the default preset: horama's Fourier image at its rate, NAdam
    ({"quality": "best"}, "standardized", 0.3, "nadam", 576),
    ({"quality": "plain"}, {}, BASE_LR, "adam", 256),  # the dataclass's own values
    ({"lr": 0.1}, "standardized", 0.1, "nadam", 144),  # a rate given stays
    ({"param": "pixel"}, {}, BASE_LR, "nadam", 144),  # the preset's rate is the Fourier image's only
    ({"param_options": {"decay_power": 1.0}}, {"decay_power": 1.0}, BASE_LR, "nadam", 144),  # replaced, rate too
    ({"optimizer": "adam", "steps": 256}, "standardized", 0.3, "adam", 256),
    ({"init": np.full((8, 8, 3), 0.5, np.float32)}, {}, BASE_LR, "nadam", 144),  # accentuation: the plain image
])
def test_the_presets_resolve_the_rate_with_the_parameterization(given, param_options, lr, optimizer, steps):
    opts = for_input(with_keywords(None, given), 4)
    want = PARAM_PRESETS["default"]["fft"]["param_options"] if param_options == "standardized" else param_options
    assert (opts.param_options, opts.lr, opts.optimizer, opts.steps) == (want, lr, optimizer, steps)
    assert for_input(with_keywords(None, given), 3).lr == (lr if given.get("lr") else BASE_LR)  # 1-D: signal


def test_changing_the_preset_takes_back_the_old_presets_values_only():
    """`replace(quality=...)` (and `vizcore.render(options, quality=...)`): what the old preset set goes, what was
    given stays, also a given value that equals the plain default."""
    plain = RenderOptions().replace(quality="plain")
    assert (plain.steps, plain.optimizer) == (256, "adam")
    assert RenderOptions().replace(quality="best").steps == QUALITY["best"]["steps"]
    mine = with_keywords(None, {"steps": 64, "optimizer": "adam"}).replace(quality="best")
    assert (mine.steps, mine.optimizer) == (64, "adam")
    assert with_keywords(None, {"optimizer": "adam"}).replace(quality="best").steps == QUALITY["best"]["steps"]
    kept = with_keywords(None, {"quality": "best", "steps": 256}).replace(seed=1)
    assert kept.steps == 256 and kept.to_json()["seed"] == 1 and "given" not in kept.to_json()
    assert RenderOptions(steps=64).replace(quality="plain").steps == 64  # not the preset's value: the user's


def test_an_unknown_optimizer_is_one_line():
    with pytest.raises(OptionError, match="unknown optimizer 'sgd'.*nadam, adam"):
        RenderOptions(optimizer="sgd")
    for bad in (["adam"], {"x": 1}):
        with pytest.raises(OptionError, match="unknown optimizer"):
            RenderOptions(optimizer=bad)
        with pytest.raises(OptionError, match="unknown quality preset"):
            RenderOptions(quality=bad)


def test_crops_layout_and_one_path_for_the_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    y = Crops(4, noise=0.0, generator=g)(x)
    assert y.shape == (12, 3, 16, 16)
    g.manual_seed(0)
    one = Crops(4, noise=0.0, generator=g)(x[1:2])
    assert torch.allclose(y[4:8], one, atol=1e-6)  # image 1's crops: rows 4..7, the same crops as alone
    full = Crops(1, lo=1.0, hi=1.0, spread=0.0, noise=0.0, generator=g)(x)
    assert torch.allclose(full, x, atol=1e-5)  # a crop of the whole image is the image


def test_standardized_fourier_image_ignores_the_parameter_scale():
    p = FFTImage((2, 3, 24, 24), units=2, standardize=True, sd=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = p()
        p.spectrum.mul_(7.0)
        b = p()
    assert torch.allclose(a, b, atol=1e-5)
    assert 0.05 < float(a.std()) < 0.3  # a fixed contrast: neither grey nor saturated


def test_crops_render_batched_is_one_at_a_time_and_needs_the_transform(tmp_path: Path):
    model = load_tiny(TinyCNN(), tmp_path, 32)
    kw = dict(transforms="crops", crops=4, steps=6, size=32)
    both = vizcore.render(model, ["class:0", "class:1"], **kw)
    alone = vizcore.render(model, ["class:1"], **kw)
    assert both.settings["crops"] == 4 and both.settings["transforms"] == ["crops"]
    # the same crops for the batch: equal up to float summation order (batched kernels)
    assert np.abs(both.images[1].astype(int) - alone.images[0].astype(int)).max() <= 1
    with pytest.raises(OptionError, match="transform that makes copies"):
        vizcore.render(model, "class:0", crops=2, steps=2, size=32)


def test_more_crops_and_the_best_preset_raise_the_objective(tmp_path: Path):
    """TinyCNN (seeded weights): at the same 32 steps, averaging the objective over 4 crops per step ends higher than
    1 crop of the same transform; the best preset (its own 576 steps) ends higher than the default (144), on the
    final images (no transform): at least 4 of 5 units, and on average."""
    model = load_tiny(TinyCNN(), tmp_path, 32)
    targets = ["class:0", "class:1", "class:2", "3:5", "3:9"]
    kw = {"size": 32, "on_warning": lambda m: None}
    one = vizcore.render(model, targets, transforms="crops", crops=1, steps=32, **kw).values
    four = vizcore.render(model, targets, transforms="crops", crops=4, steps=32, **kw).values
    default = vizcore.render(model, targets, **kw).values
    best = vizcore.render(model, targets, quality="best", **kw).values
    assert (four > one).sum() >= 4 and four.mean() > one.mean(), (four, one)
    assert (best > default).sum() >= 4 and best.mean() > default.mean(), (best, default)


def test_cli_quality_best_records_the_preset(tmp_path: Path):
    path = export(CrossDetector(), tmp_path / "cross.onnx", (1, 3, 32, 32), metadata={"vizcore.range": "0,1"})
    out = tmp_path / "out"
    assert main(["render", str(path), "class:1", "--quality", "best", "--steps", "4", "--out", str(out),
                 "--quiet", "--trust", "off"]) == 0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert (settings["quality"], settings["steps"], settings["lr"], settings["optimizer"]) == \
        ("best", 4, PARAM_PRESETS["best"]["fft"]["lr"], "nadam")
    plain = out.parent / "plain"
    assert main(["render", str(path), "class:1", "--quality", "plain", "--optimizer", "nadam", "--out", str(plain),
                 "--quiet", "--trust", "off"]) == 0
    settings = json.loads((plain / "manifest.json").read_text())["settings"]
    assert (settings["steps"], settings["lr"], settings["optimizer"]) == (256, BASE_LR, "nadam")
    assert main(["render", str(path), "class:1", "--crops", "3", "--out", str(tmp_path / "o2"), "--quiet"]) == 2


def test_best_renders_1d_signals(tmp_path: Path):
    path = export(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64))
    r = vizcore.render(vizcore.load(path), "1:0", quality="best", steps=4)
    assert r.images.shape[0] == 1 and r.settings["param"] == "signal"
