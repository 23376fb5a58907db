"""Issue 25 cause 6: a channel-last 1-D audio model [N, L, 1] at a long length whose objective is tiny (1e-5).

Before, the `ends` penalty (weight 1 in absolute units) outweighed an objective of 1e-5 and the render's objective
fell or stayed flat; now an objective smaller than 1 is scaled up to 1 against the penalties, and it rises.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ort_run
from torch import nn

import vizcore

LENGTH = 20000


class Audio(nn.Module):
    """[N, L, 1] samples in 0..1 -> -1..1 -> a strided front end (k400, s160) -> conv -> mean -> tiny logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.c1, self.c2, self.fc = nn.Conv1d(1, 16, 400, stride=160), nn.Conv1d(16, 8, 3), nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.weight.mul_(1e-3)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x.transpose(1, 2) * 2 - 1))))
        return self.fc(h.mean(-1))


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, vizcore.Model]:
    path = tmp_path_factory.mktemp("long") / "audio.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Audio().eval(), (torch.rand(1, LENGTH, 1),), str(path), dynamo=False, opset_version=17,
                          input_names=["audio"], output_names=["y"], dynamic_axes={"audio": {0: "N"}})
    return path, vizcore.load(path)


def test_long_channel_last_signal_matches_onnxruntime(audio: tuple[Path, vizcore.Model]) -> None:
    path, model = audio
    assert model.input_shape(1) == (1, 1, LENGTH)
    x = model.probe_input(1, None, seed=3)
    ref = ort_run(path, {"audio": model.feeds(x)[0].numpy()})[0]
    with torch.no_grad():
        got = model.run(x).numpy()
    assert abs(ref).max() < 1e-3  # the scale: logits of 1e-5 .. 1e-4
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()


def test_tiny_objective_rises_with_the_default_penalty(audio: tuple[Path, vizcore.Model]) -> None:
    _, model = audio
    r = vizcore.render(model, ["class:0", "class:2"], steps=24, device="cpu", seed=0, record_every=1,
                       on_warning=lambda m: None)
    assert r.settings["regularizers"] == {"ends": 1.0}
    for target, trace, rise in zip(("class:0", "class:2"), r.traces, (1.15, 1.5)):  # before: 1.0x and 1.1x
        assert 0 < trace[0] < 1e-4, target
        assert trace[-1] >= rise * trace[0], (target, trace[0], trace[-1])
