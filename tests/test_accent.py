"""Feature accentuation (issue 27): a render that starts from a photo (`--init`, `init=`) and stays near it."""

import json

import numpy as np
import pytest
import torch
from tiny import IMAGE_META, TinyCNN, export, load_tiny

import vizcore
from vizcore.engine import RenderOptions
from vizcore.errors import OptionError
from vizcore.params import FFTImage, PixelImage
from vizcore.samples import SHIPPED_PHOTOS, read_picture

PHOTO = SHIPPED_PHOTOS / "chelsea.jpg"
FAST = dict(steps=24, size=32, seed=0)
TARGETS = ["3:0", "3:5", "class:1"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("m"))


def _rms(images: np.ndarray, start: np.ndarray) -> np.ndarray:
    return np.sqrt(((images / 255.0 - start) ** 2).mean(axis=(1, 2, 3)))


def test_accentuation_raises_the_unit_and_stays_nearer_the_photo_than_a_render_from_noise(model):
    photo = vizcore.render(model, TARGETS, steps=1, lr=1e-9, transforms="none", init=str(PHOTO), size=32)
    start = photo.images.astype(np.float64) / 255.0  # the photo as the render sees it
    accent = vizcore.render(model, TARGETS, init=str(PHOTO), **FAST)
    noise = vizcore.render(model, TARGETS, **FAST)
    assert (accent.values > photo.values + 0.1 * np.abs(photo.values) + 1e-3).all(), (accent.values, photo.values)
    near, far = _rms(accent.images, start), _rms(noise.images, start)
    assert (near < 0.5 * far).all(), (near, far)
    got = accent.extras["init"]
    assert got["file"] == "chelsea.jpg" and np.allclose(got["pixel_rms"], near, atol=0.01)
    assert all(0 < d < 1 for d in got["feature_distance"])


def test_the_penalties_hold_the_picture_nearer_than_a_free_start_from_the_photo(model):
    held = vizcore.render(model, TARGETS, init=str(PHOTO), **FAST)
    free = vizcore.render(model, TARGETS, init=str(PHOTO), init_pixel=0, init_feature=0, **FAST)
    assert np.mean(held.extras["init"]["pixel_rms"]) < np.mean(free.extras["init"]["pixel_rms"])
    assert np.mean(held.extras["init"]["feature_distance"]) < np.mean(free.extras["init"]["feature_distance"])
    assert held.settings["regularizers"] == {"init_pixel": 256.0, "init_feature": 0.05}  # the defaults
    assert free.settings["regularizers"] == {}


def test_an_array_start_is_the_same_render_as_its_file(model):
    a = vizcore.render(model, "3:0", init=str(PHOTO), **FAST)
    b = vizcore.render(model, "3:0", init=read_picture(PHOTO), **FAST)
    assert np.array_equal(a.images, b.images)
    assert b.extras["init"]["file"].startswith("array 3x")


@pytest.mark.parametrize("param", [FFTImage, PixelImage])
def test_the_parameterizations_start_at_the_picture(param):
    pic = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    p = param((2, 3, 20, 28), units=2, init=pic)
    want = pic.clamp(0.02, 0.98).expand(2, -1, -1, -1)
    assert torch.allclose(p(), want, atol=1e-5)
    grey = pic[:, :1, :16, :16]
    assert torch.allclose(FFTImage((1, 1, 16, 16), init=grey)(), grey.clamp(0.02, 0.98), atol=1e-5)


def test_penalties_without_a_picture_and_a_parameterization_without_init_are_refused(model):
    with pytest.raises(OptionError, match="start picture"):
        vizcore.render(model, "3:0", init_pixel=1.0, **FAST)
    with pytest.raises(OptionError, match="cannot start from a picture"):
        vizcore.render(model, "3:0", init=str(PHOTO), param="signal", **FAST)
    with pytest.raises(OptionError, match="0..1"):
        RenderOptions(init=np.full((3, 8, 8), 2.0))


def test_cli_init_writes_the_start_and_distances_in_the_manifest(tmp_path):
    from vizcore.cli import main

    path = export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META)
    out = tmp_path / "o"
    assert main(["render", str(path), "3:0", "--steps", "8", "--size", "32", "--init", str(PHOTO),
                 "--init-pixel", "2", "--out", str(out), "--quiet", "--trust", "off"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    unit = m["units"][0]["init"]
    assert unit["file"] == "chelsea.jpg" and 0 < unit["pixel_rms"] < 1 and unit["feature_distance"] >= 0
    assert m["settings"]["init"] == "chelsea.jpg"
    assert m["settings"]["regularizers"] == {"init_pixel": 2.0, "init_feature": 0.05}


@pytest.mark.parametrize("bad", ["missing.jpg", "."])
def test_a_bad_init_path_is_one_line_exit_2(tmp_path, capsys, bad):
    from vizcore.cli import main

    path = export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META)
    rc = main(["render", str(path), "3:0", "--steps", "2", "--init", str(tmp_path / bad), "--out",
               str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--init" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2  # the error and its hint


def test_a_file_that_is_no_image_is_one_line_exit_2(tmp_path, capsys):
    from vizcore.cli import main

    path = export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    rc = main(["render", str(path), "3:0", "--steps", "2", "--init", str(text), "--out", str(tmp_path / "o"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read notes.jpg" in err and "Traceback" not in err
