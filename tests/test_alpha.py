"""`--export alpha` (issue 27): where the picture matters, as the accumulated |gradient| on the image."""

import numpy as np
import torch
from PIL import Image
from tiny import IMAGE_META, TinyCNN, export
from torch import nn

import vizcore


class LeftHalf(nn.Module):
    """conv(3->4) times a mask that is 1 on the left half of the 32x32 image and 0 on the right."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :16] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.mask


def test_the_map_of_a_unit_that_sees_the_left_half_lies_in_the_left_half(tmp_path):
    path = export(LeftHalf(), tmp_path / "left.onnx", (1, 3, 32, 32), metadata=IMAGE_META, dynamic=False)
    r = vizcore.render(path, ["1:0", "1:2"], steps=16, seed=0, exporters=["alpha"])
    maps = r.extras["alpha"]
    assert sorted(maps) == [0, 1]
    for m in maps.values():
        assert m.shape == (32, 32) and (m >= 0).all() and m.sum() > 0
        assert m[:, :16].sum() / m.sum() > 0.9, m[:, :16].sum() / m.sum()
    files = r.save(tmp_path / "o", exporters=["alpha"])
    names = {p.name for p in files}
    assert {"0000_1_0_alpha.png", "0000_1_0_heat.png", "0001_1_2_alpha.png"} <= names
    with Image.open(tmp_path / "o" / "0000_1_0_alpha.png") as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[..., 3].astype(float)
    assert alpha[:, :16].mean() > 4 * alpha[:, 16:].mean()


def test_a_render_without_the_alpha_exporter_records_nothing(tmp_path):
    path = export(LeftHalf(), tmp_path / "left.onnx", (1, 3, 32, 32), metadata=IMAGE_META, dynamic=False)
    r = vizcore.render(path, "1:0", steps=4, seed=0)
    assert "alpha" not in r.extras


def test_exporting_alpha_leaves_the_plain_images_byte_identical(tmp_path):
    from vizcore.cli import main

    path = export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META)
    common = ["render", str(path), "3:0", "class:1", "--steps", "12", "--size", "32", "--quiet", "--trust", "off"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "alpha"), "--export", "alpha"]) == 0
    plain = sorted(p.name for p in (tmp_path / "plain").glob("*.png"))
    assert plain == ["0000_3_0.png", "0001_class_1.png", "grid.png"]
    for name in plain:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "alpha" / name).read_bytes(), name
    assert (tmp_path / "alpha" / "0001_class_1_heat.png").is_file()
