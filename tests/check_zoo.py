"""Small models of the kinds `vizcore check` got wrong (issue 14), built and exported here, for the tests and for
bench/check_speed.py: a detector head without activation, 1-D signal models (LSTM over a conv stack, a CRNN, a 1-D
U-Net with two inputs) and a voice-activity LSTM with three inputs (signal, h0, c0).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class DetectorHead(nn.Module):
    """conv3x3 relu -> a final 1x1 Conv with no activation and a strongly negative bias (like YOLO's cv3.*.2)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 18, 1)
        with torch.no_grad():
            self.head.bias.fill_(-10.0)  # no output ever positive: a gate would call this dead; there is no gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


class LstmEEG(nn.Module):
    """(N, 4, L) signal: conv1d stack (ReLU) -> LSTM over time -> linear."""

    def __init__(self, seed: int = 0, ch: int = 4, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv1d(ch, width, 7, padding=3)
        self.c2 = nn.Conv1d(width, width * 2, 5, stride=2, padding=2)
        self.c3 = nn.Conv1d(width * 2, width * 2, 5, stride=2, padding=2)
        self.lstm = nn.LSTM(width * 2, 32, batch_first=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        y, _ = self.lstm(x.transpose(1, 2))
        return self.fc(y[:, -1])


class Crnn(nn.Module):
    """(N, 1, 32, W) spectrogram: conv2d/BN/ReLU stack -> GRU over width -> per-step classes."""

    def __init__(self, seed: int = 0, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        cin = 1
        for k in range(3):
            cout = width * 2 ** k
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d((2, 1))]
            cin = cout
        self.cnn = nn.Sequential(*layers)
        self.rnn = nn.GRU(cin * 4, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)
        n, c, h, w = f.shape
        y, _ = self.rnn(f.permute(0, 3, 1, 2).reshape(n, w, c * h))
        return self.fc(y)


class UNet1D(nn.Module):
    """Two inputs (signal (N, 2, L), a mask (N, 1, L)): down/up 1-D U-Net with skip connections."""

    def __init__(self, seed: int = 0, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.d1 = nn.Conv1d(3, width, 5, padding=2)
        self.d2 = nn.Conv1d(width, width * 2, 5, stride=2, padding=2)
        self.d3 = nn.Conv1d(width * 2, width * 4, 5, stride=2, padding=2)
        self.u2 = nn.ConvTranspose1d(width * 4, width * 2, 4, stride=2, padding=1)
        self.u1 = nn.ConvTranspose1d(width * 4, width, 4, stride=2, padding=1)
        self.out = nn.Conv1d(width * 2, 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.d1(torch.cat([x, mask], 1)))
        b = torch.relu(self.d2(a))
        c = torch.relu(self.d3(b))
        u = torch.relu(self.u2(c))
        u = torch.relu(self.u1(torch.cat([u, b], 1)))
        return self.out(torch.cat([u, a], 1))


class VadLstm(nn.Module):
    """Voice activity: three inputs (signal (N, 1, L), h0, c0 (1, N, 32)); conv1d front end, LSTM, sigmoid."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv1d(1, 16, 9, stride=4, padding=4)
        self.c2 = nn.Conv1d(16, 32, 5, stride=2, padding=2)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = torch.relu(self.c2(torch.relu(self.c1(x))))
        y, (h, c) = self.lstm(f.transpose(1, 2), (h0, c0))
        return torch.sigmoid(self.fc(y)), h, c


#: name -> (builder, example input shapes, input names, dynamic axes of the first input)
KINDS = {
    "detector_head": (DetectorHead, [(1, 3, 32, 32)], ["image"], {0: "batch", 2: "h", 3: "w"}),
    "lstm_eeg": (LstmEEG, [(1, 4, 256)], ["eeg"], {0: "batch"}),
    "crnn": (Crnn, [(1, 1, 32, 64)], ["spec"], {0: "batch"}),
    "unet1d": (UNet1D, [(1, 2, 256), (1, 1, 256)], ["signal", "mask"], {0: "batch"}),
    "vad_lstm": (VadLstm, [(1, 1, 512), (1, 1, 32), (1, 1, 32)], ["audio", "h0", "c0"], {}),
}


def export_kind(kind: str, folder: Path, model: nn.Module | None = None,
                shapes: Sequence[tuple[int, ...]] | None = None) -> Path:
    """Export one of KINDS (or `model` with that kind's input spec) to `folder/kind.onnx`."""
    build, default_shapes, names, axes = KINDS[kind]
    model = (model or build()).eval()
    xs = tuple(torch.rand(s) for s in (shapes or default_shapes))
    path = Path(folder) / f"{kind}.onnx"
    dyn = {names[0]: axes} if axes else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, xs, str(path), dynamo=False, opset_version=17, input_names=names,
                          dynamic_axes=dyn)
    return path
