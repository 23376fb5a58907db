"""1-D renders that a person can read (issue 13): the `signal` parameterization and the `ends` penalty are the
defaults for 1-D inputs, their renders stay off the ends of the range where fft's reach them, images keep fft,
and a signal's plot has its own axes (values in the model's range, sample ticks, times with a sample rate)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from signal_zoo import export, train
from tiny import TinyCNN, load_tiny

import vizcore
from vizcore import images
from vizcore.engine.options import BASE_LR, PARAM_PRESETS, RenderOptions, for_input
from vizcore.errors import OptionError
from vizcore.params import FFTSignal
from vizcore.regularizers import ends

STEPS = 64
TARGETS = ["class:1", "/Relu_2:0"]


def saturated(signal: np.ndarray) -> float:
    """Fraction of uint8 samples within 1 % of either end of the range (<= 2 or >= 253 of 255)."""
    return float(((signal <= 2) | (signal >= 253)).mean())


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> vizcore.Model:
    net, acc = train("audio", steps=60)
    assert acc > 0.5  # frequency-selective filters, not random ones
    return vizcore.load(export("audio", tmp_path_factory.mktemp("audio"), net))


@pytest.fixture(scope="module")
def renders(audio: vizcore.Model) -> dict[str, vizcore.Result]:
    kw = {"steps": STEPS, "device": "cpu", "seed": 0, "on_warning": lambda m: None}
    return {"old": vizcore.render(audio, TARGETS, param="fft", quality="plain", **kw),  # fft + sigmoid, as before
            "new": vizcore.render(audio, TARGETS, **kw)}


def test_new_defaults_keep_samples_off_the_range_ends_where_fft_saturates(renders: dict[str, vizcore.Result]) -> None:
    old, new = renders["old"], renders["new"]
    assert (new.settings["param"], new.settings["regularizers"]) == ("signal", {"ends": 1.0})
    assert old.settings["param"] == "fft" and old.settings["regularizers"] == {}
    for i in range(len(TARGETS)):
        assert saturated(old.images[i]) > 0.5, TARGETS[i]  # the issue: a square wave at the rails
        assert saturated(new.images[i]) < 0.1, TARGETS[i]
        assert new.values[i] > 0.3 * old.values[i] > 0, TARGETS[i]  # a bounded level gives up some value, not all
        trace = new.traces[i]
        assert trace[-1] > trace[0] + 0.1 * abs(trace[0]), TARGETS[i]  # the objective rises


def test_signal_waveform_has_the_fixed_level_and_stays_inside_the_range() -> None:
    g = torch.Generator().manual_seed(0)
    p = FFTSignal((3, 2, 200), rms=0.75, generator=g)
    with torch.no_grad():
        p.spectrum.mul_(50)  # however large the parameters grow, the level stays
        x = p()
    assert x.shape == (3, 2, 200) and float(x.min()) > 0 and float(x.max()) < 1
    y = torch.atanh(2 * x.double() - 1)
    assert torch.allclose(y.pow(2).mean((1, 2)).sqrt(), torch.full((3,), 0.75, dtype=torch.float64), atol=1e-4)
    with torch.no_grad():
        held = FFTSignal((2, 2, 64), dc=False, generator=g)()
    assert torch.atanh(2 * held.double() - 1).mean(2).abs().max() < 1e-5  # each channel's mean stays at mid-range
    with pytest.raises(OptionError, match="1-D signals"):
        FFTSignal((1, 3, 8, 8))
    with pytest.raises(OptionError, match="rms"):
        FFTSignal((1, 1, 16), rms=0)


def test_ends_penalty_is_zero_inside_and_one_at_the_ends() -> None:
    x = torch.tensor([[[0.5, 0.06, 0.94]], [[0.0, 1.0, 1.0]], [[0.975, 0.5, 0.5]]])
    got = ends(2.0)(x)
    assert torch.allclose(got, torch.tensor([0.0, 2.0, 2.0 * 0.5 / 3]), atol=1e-6)


def test_auto_is_fft_for_images_and_signal_for_1d_unless_chosen() -> None:
    o = RenderOptions()
    assert o.param == "auto"
    std = PARAM_PRESETS["default"]["fft"]
    images = o.replace(param="fft", param_options=std["param_options"], lr=std["lr"])
    assert for_input(o, 4) == images  # images: the preset's Fourier image
    assert for_input(o.replace(quality="plain"), 4) == o.replace(param="fft", quality="plain", lr=BASE_LR)
    assert for_input(o, 3).param == "signal" and for_input(o, 3).regularizers == {"ends": 1.0}
    off = o.replace(regularizers={"ends": 0.0, "tv": 0.1})
    assert for_input(off, 3).regularizers == {"ends": 0.0, "tv": 0.1}  # a weight given (even 0) is kept
    assert for_input(o.replace(param="fft"), 3).param == "fft"  # an explicit choice is kept
    assert for_input(o, 3, embedding=True) == images  # an optimized embedding is no waveform


def test_images_render_as_before(tmp_path: Path) -> None:
    model = load_tiny(TinyCNN(), tmp_path, size=32)
    kw = {"steps": 4, "device": "cpu", "on_warning": lambda m: None}
    auto, fft = vizcore.render(model, "3:1", **kw), vizcore.render(model, "3:1", param="fft", **kw)
    assert np.array_equal(auto.images, fft.images) and auto.settings == fft.settings
    assert auto.settings["param"] == "fft" and auto.settings["regularizers"] == {}


def test_plot_has_the_signals_own_axes(renders: dict[str, vizcore.Result], tmp_path: Path) -> None:
    res = renders["new"]
    assert res.value_range == (-1.0, 1.0) and res.sample_rate == 8000.0  # from the model's metadata
    files = res.save(tmp_path / "out")
    png = np.asarray(Image.open(tmp_path / "out" / res.filename(0)).convert("RGB")).astype(int)
    x0, y0, x1, y1 = images.signal_box(png.shape[1], png.shape[0], (-1, 1), 8000)
    assert (png[:, :x0 - 2] < 200).any()  # value labels left of the plot
    assert (png[y1 + 3:, x0:] < 200).sum() > 40  # sample ticks and times below it
    bare = np.asarray(images.plot_signal(res.images[0], png.shape[1], png.shape[0])).astype(int)
    assert (bare != png).any(axis=2)[y1 + 3:].any()  # the times row is drawn from the sample rate
    npy = [p for p in files if p.suffix == ".npy"]
    assert len(npy) == len(res)  # the signals themselves, next to their plots
    arr = np.load(io.BytesIO(npy[0].read_bytes()))
    lo, hi = res.value_range
    assert arr.dtype == np.float32 and arr.shape == res.images[0].shape  # the signal in the model's units
    assert np.allclose(arr, lo + res.images[0] / 255.0 * (hi - lo), atol=1e-6)  # this model: no mean/std


def test_sample_rate_metadata_that_is_not_a_positive_number_is_ignored(renders: dict[str, vizcore.Result]) -> None:
    res = renders["new"]
    for bad in ("", "fast", "-8000", "nan", "inf"):
        r = vizcore.result.Result(images=res.images, values=res.values, traces=res.traces, units=res.units,
                                  settings=res.settings, model={"metadata": {"vizcore.sample_rate": bad}})
        assert r.sample_rate is None, bad
        assert r.image(0).size == (320, 120)


@pytest.mark.parametrize("length", [1, 2, 7, 100, 4097])
def test_plot_draws_any_length_inside_its_box(length: int) -> None:
    sig = np.full((length, 1), 255, dtype=np.uint8)
    img = np.asarray(images.plot_signal(sig, 160, 120, value_range=(-1, 1), sample_rate=44100))
    x0, y0, x1, y1 = images.signal_box(160, 120, (-1, 1), 44100)
    assert img.shape == (120, 160, 3)
    line = (img == images.COLOURS[0]).all(axis=2)
    assert line[y0, x0:x1 + 1].any() and not line[y0 + 1:].any() and not line[:, :x0].any()
