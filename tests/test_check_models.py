"""Small CNNs for the health-check tests, with planted dead, constant and duplicate filters (exported to ONNX).

The planted facts are listed in PLANTED; `check` must find exactly those and nothing else.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

#: What `Planted(plant=True)` hides, by measured layer (the Relu after each Conv): dead, constant, duplicate pairs.
PLANTED = {
    "/Relu": {"dead": [2], "constant": [5], "duplicates": {(0, 8, "flip_h"), (1, 7, "rot90")}},
    "/Relu_1": {"dead": [3], "constant": [9],
                "duplicates": {(4, 11, "shift"), (6, 12, "rot180"), (10, 13, "flip_v"), (14, 15, "rot270")}},
    "/conv3/Conv": {"dead": [], "constant": [], "duplicates": set()},
}
#: The unit that the probes never drive but the gradient ascent does (through the ReLU override), in "/Relu".
SHY = 10


class Planted(nn.Module):
    """conv(3->12) relu conv(12->16) relu conv1x1(16->8) mean: random weights, optionally with planted faults."""

    def __init__(self, seed: int = 0, plant: bool = True, shy: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 8, 1)
        with torch.no_grad():
            for c in (self.conv1, self.conv2, self.conv3):
                c.bias.uniform_(0.0, 0.1)
            w1, b1, w2, b2 = self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias
            if plant:
                w1[2], b1[2] = 0.0, -1.0  # dead: zero weights, negative bias before ReLU
                w1[5], b1[5] = 0.0, 0.5  # constant: zero weights, positive bias
                w2[3], b2[3] = 0.0, -0.5
                w2[9], b2[9] = 0.0, 0.3
                w1[7] = torch.rot90(w1[1], 1, (1, 2)) * 2.0  # rotated copy, scaled
                w1[8] = torch.flip(w1[0], (2,)) * 0.5  # mirrored left-right, scaled
                base = w2[4].clone()
                base[:, 2, :] = 0.0  # its bottom row is empty, so a shifted copy keeps all of it
                w2[4] = base
                w2[11] = 0.0
                w2[11][:, 1:, :] = base[:, :2, :] * 1.5  # shifted down one pixel
                w2[12] = torch.rot90(w2[6], 2, (1, 2)) * 3.0
                w2[13] = torch.flip(w2[10], (1,))  # mirrored top-bottom
                w2[15] = torch.rot90(w2[14], 3, (1, 2)) * 0.7
            if shy:  # fires only where a 3x3 patch is brighter than 0.75 on average
                w1[SHY], b1[SHY] = 4.0 / 27, -3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.conv3(x).mean((2, 3))


class Wider(Planted):
    """Planted with one more layer at the end (for `diff`: a layer added)."""

    def __init__(self, **kwargs: bool) -> None:
        super().__init__(**kwargs)
        self.conv4 = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.conv4(self.conv3(x)).mean((2, 3))


def export(model: nn.Module, path: Path, metadata: bool = True) -> Path:
    """ONNX export with dynamic batch and size; metadata says the input is a 0..1 image, not normalized."""
    x = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["out"], dynamic_axes={"image": {0: "batch", 2: "h", 3: "w"},
                                                              "out": {0: "batch"}})
    if metadata:
        m = onnx.load(str(path))
        for k, v in {"vizcore.mean": "0", "vizcore.std": "1", "vizcore.range": "0,1"}.items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.save(m, str(path))
    return path


def found(report) -> dict[str, dict]:  # noqa: ANN001 - vizcore.check.CheckReport
    """A report's findings in PLANTED's shape (duplicate similarity dropped)."""
    return {lay.name: {"dead": lay.dead, "constant": lay.constant,
                       "duplicates": {(i, j, t) for i, j, t, _ in lay.duplicates}} for lay in report.layers}


def test_planted_model_is_small(tmp_path: Path) -> None:
    p = export(Planted(), tmp_path / "p.onnx")
    assert p.stat().st_size < 20_000
