"""Issue 14: dead / alive / inconclusive verdicts with evidence; linear units never dead; the user's data as probes
(images and .npy); multi-input recurrent models without tracebacks; bounded inputs (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from check_zoo import DetectorHead, VadLstm, export_kind
from PIL import Image
from test_check_models import SHY, Planted, export
from torch import nn

import vizcore
from vizcore.cli import main
from vizcore.health import check
from vizcore.health.schema import validate

QUICK = {"size": 32, "fidelity": False, "duplicates": False}


def test_detector_head_without_activation_has_no_dead_units(tmp_path: Path) -> None:
    rep = check(export_kind("detector_head", tmp_path, DetectorHead()), **QUICK)
    head = rep.layers[-1]
    assert head.op == "Conv" and not head.gated and head.dead == [] and head.inconclusive == []
    assert all(u["verdict"] == "alive" and u["peak"] < 0 for u in head.units)  # never positive, still not dead
    assert rep.passed and "ascent" not in head.probes  # no ascent is spent on linear units


class _Closed(nn.Module):
    """conv(3->8) relu conv1x1: filters 1 and 4 have tiny weights and bias -5 (closed for any input in range)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.c1.bias.uniform_(0.0, 0.1)
            for k in (1, 4):
                self.c1.weight[k] *= 0.01
                self.c1.bias[k] = -5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def test_planted_dead_filters_are_exactly_those(tmp_path: Path) -> None:
    rep = check(export(_Closed(), tmp_path / "closed.onnx"), **QUICK, ascent_steps=48)
    relu = rep.layers[0]
    assert relu.gate == "relu" and relu.zero_weights == []  # dead by evidence, not by zero weights
    assert relu.dead == [1, 4] and relu.inconclusive == []
    for k in (1, 4):
        u = relu.units[k]
        # the first layer reads the input: its weights and bias bound it below 0 on the whole input range
        assert u["apoz"] == 1.0 and "no input in the model's range can open it" in u["reason"]
    assert "ascent" not in relu.probes and rep.layers[1].dead == []  # proven: no ascent needed


class _ClosedDeeper(nn.Module):
    """conv(3->8) relu conv(8->6) relu: filters 1 and 4 of the second conv are closed for any input (tiny weights,
    bias -5); no input bound reaches them, so the gradient ascent has to find that out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        with torch.no_grad():
            self.c1.bias.uniform_(0.0, 0.1)
            self.c2.bias.uniform_(0.0, 0.1)
            for k in (1, 4):
                self.c2.weight[k] *= 0.01
                self.c2.bias[k] = -5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(torch.relu(self.c1(x))))


def test_planted_dead_filters_deeper_are_found_by_the_ascent(tmp_path: Path) -> None:
    rep = check(export(_ClosedDeeper(), tmp_path / "deeper.onnx"), **QUICK, ascent_steps=48)
    second = rep.layers[1]
    assert second.dead == [1, 4] and second.inconclusive == [] and rep.layers[0].dead == []
    for k in (1, 4):
        u = second.units[k]
        assert u["apoz"] == 1.0 and u["ascent_best"] < u["threshold"] and "stalled" in u["reason"]
    assert "ascent" in second.probes


def _white_images(folder: Path, n: int = 3) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((40, 40, 3), 250 - i, np.uint8)).save(folder / f"w{i}.png")
    return folder


def test_dead_on_noise_but_alive_on_the_users_data(tmp_path: Path) -> None:
    path = export(Planted(shy=True), tmp_path / "shy.onnx")
    opts = {**QUICK, "photos": False, "noise_probes": 1, "ascent": "none"}
    on_noise = check(path, **opts)
    assert SHY in on_noise.layers[0].inconclusive
    rep = check(path, **opts, data=str(_white_images(tmp_path / "data")))
    relu = rep.layers[0]
    assert SHY not in relu.inconclusive and relu.units[SHY]["verdict"] == "alive"
    assert "data" in relu.probes and any("your data: 3 inputs" in n for n in rep.notes)
    assert relu.dead == [2]  # zero weights, negative bias: dead on the data too


class _Signal(nn.Module):
    """conv1d(2->6) relu conv1d(6->3): filters 0..2 read channel 0 (+), 3..5 read channel 0 (-)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(2, 6, 3, padding=1), nn.Conv1d(6, 3, 1)
        with torch.no_grad():
            self.c1.weight.zero_()
            self.c1.weight[:3, 0] = 1.0
            self.c1.weight[3:, 0] = -1.0
            self.c1.bias.fill_(-0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def test_1d_model_with_npy_data(tmp_path: Path) -> None:
    path = export_kind("lstm_eeg", tmp_path, _Signal(), shapes=[(1, 2, 64)])
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "batch.npy", np.abs(np.random.default_rng(0).normal(size=(5, 2, 64))).astype(np.float32))
    np.save(data / "one.npy", np.ones((2, 64), np.float32))
    rep = check(path, **QUICK, data=str(data))
    relu = rep.layers[0]
    assert relu.dead == [] and relu.inconclusive == []  # signed noise opens the negative filters
    assert relu.dead_on_data == [3, 4, 5]  # the user's (positive) signals never do
    assert "data" in relu.probes and rep.passed
    np.save(data / "bad.npy", np.ones((3, 64), np.float32))
    with pytest.raises(vizcore.VizcoreError, match="bad.npy has shape"):
        check(path, **QUICK, data=str(data))


def test_lstm_with_three_inputs_exits_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export_kind("vad_lstm", tmp_path, VadLstm())
    js = tmp_path / "r.json"
    assert main(["check", str(path), "--json", str(js)]) in (0, 1)
    data = json.loads(js.read_text())
    assert validate(data) == [] and [lay["op_chain"] for lay in data["layers"]] == ["Conv+Relu", "Conv+Relu"]
    assert "Traceback" not in capsys.readouterr().err


def test_bounded_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export(Planted(plant=False), tmp_path / "p.onnx")
    assert main(["check", str(path), "--noise-probes", "1000000"]) == 2
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    Image.new("L", (9000, 9000)).save(bomb / "huge.png")  # 81 MP of zeros: a few KiB on disk
    capsys.readouterr()
    assert main(["check", str(path), "--size", "32", "--data", str(bomb)]) == 2
    err = capsys.readouterr()
    text = err.out + err.err
    assert "huge.png is 9000x9000 pixels" in text and "Traceback" not in text
