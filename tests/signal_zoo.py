"""Small 1-D models with trained-ish weights (issue 13), for tests/test_signals.py and bench/signals.py.

Each is trained for a few hundred seeded steps on synthetic signals (tones, chirps, bursts vs noise), so that its
filters are frequency-selective as a real audio/EEG/VAD model's are, then exported with its value range in the
ONNX metadata (`vizcore.range`, and `vizcore.sample_rate`). Random weights would not show the saturation users
saw: a random filter prefers white noise, which any parameterization draws.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from torch import nn


class ToneNet(nn.Module):
    """Audio-like (N, 1, L) in -1..1: conv1d stack -> global average -> 4 classes (noise, low, high tone, chirp)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(1, width, 15, stride=2, padding=7)
        self.c2 = nn.Conv1d(width, width * 2, 9, stride=2, padding=4)
        self.c3 = nn.Conv1d(width * 2, width * 2, 5, padding=2)
        self.fc = nn.Linear(width * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(x.mean(2))


class EegNet(nn.Module):
    """EEG-like (N, 4, L): conv1d stack -> LSTM over time -> 5 classes (which channel oscillates, or none)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, width, 7, padding=3)
        self.c2 = nn.Conv1d(width, width, 5, stride=2, padding=2)
        self.lstm = nn.LSTM(width, 16, batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        y, _ = self.lstm(x.transpose(1, 2))
        return self.fc(y[:, -1])


class VadNet(nn.Module):
    """Voice-activity-like (N, 1, L): strided conv1d front end -> per-frame speech logit (bursts vs noise)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(1, 12, 17, stride=4, padding=8)
        self.c2 = nn.Conv1d(12, 16, 9, stride=2, padding=4)
        self.out = nn.Conv1d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.c2(torch.relu(self.c1(x))))).mean(2)


def _tone(n: int, length: int, lo: float, hi: float, g: torch.Generator, chirp: bool = False) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float32)
    f0 = lo + (hi - lo) * torch.rand(n, 1, generator=g)
    f = f0 + (t / length) * 0.25 * (1 - f0) if chirp else f0  # cycles per sample
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    return torch.sin(2 * math.pi * torch.cumsum(f.expand(n, length), 1) + phase)


def tone_batch(n: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Signals in -1..1 of 4 classes: 0 noise, 1 a low tone, 2 a high tone, 3 a rising chirp (plus noise)."""
    y = torch.randint(0, 4, (n,), generator=g)
    amp = 0.3 + 0.5 * torch.rand(n, 1, generator=g)
    sig = torch.stack([_tone(n, length, 0.01, 0.03, g), _tone(n, length, 0.12, 0.2, g),
                       _tone(n, length, 0.02, 0.05, g, chirp=True)], 1)  # (n, 3, L)
    x = torch.where((y == 0)[:, None], 0.0, sig[torch.arange(n), (y - 1).clamp(min=0)])
    x = amp * x + 0.15 * torch.randn(n, length, generator=g)
    return x.clamp(-1, 1)[:, None], y


def eeg_batch(n: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """4-channel noise in -1..1; class c < 4: channel c carries a 0.03-0.06 cycles/sample rhythm; class 4: none."""
    y = torch.randint(0, 5, (n,), generator=g)
    x = 0.2 * torch.randn(n, 4, length, generator=g)
    rhythm = 0.5 * _tone(n, length, 0.03, 0.06, g)
    has = y < 4
    x[has.nonzero()[:, 0], y[has]] += rhythm[has]
    return x.clamp(-1, 1), y


def vad_batch(n: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1: an amplitude-modulated harmonic burst (speech-like) over noise; class 0: noise alone."""
    y = torch.randint(0, 2, (n,), generator=g)
    t = torch.arange(length, dtype=torch.float32)
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * t / length))
    voiced = (_tone(n, length, 0.02, 0.04, g) + 0.5 * _tone(n, length, 0.06, 0.1, g)) * envelope * 0.5
    x = torch.where((y == 1)[:, None], voiced, 0.0) + 0.1 * torch.randn(n, length, generator=g)
    return x.clamp(-1, 1)[:, None], y


#: name -> (builder, batch maker, input shape, sample rate recorded in the metadata)
KINDS: dict[str, tuple[Callable[[], nn.Module], Callable[..., tuple[torch.Tensor, torch.Tensor]],
                       tuple[int, int, int], int]] = {
    "audio": (ToneNet, tone_batch, (1, 1, 512), 8000),
    "eeg": (EegNet, eeg_batch, (1, 4, 256), 128),
    "vad": (VadNet, vad_batch, (1, 1, 512), 16000),
}


def train(kind: str, steps: int = 150, seed: int = 0) -> tuple[nn.Module, float]:
    """The kind's model trained for `steps` Adam steps on its synthetic data (seeded); returns it and its accuracy
    on a fresh batch. The caller's torch RNG and thread count are left as they were."""
    build, batch, shape, _ = KINDS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is as fast, and does not fight a busy machine
    try:
        for _ in range(steps):
            x, y = batch(32, shape[-1], g)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        x, y = batch(256, shape[-1], g)
        acc = float((model(x).argmax(1) == y).float().mean())
    return model, acc


def export(kind: str, folder: Path, model: nn.Module, value_range: str = "-1,1") -> Path:
    """Export `model` of `kind` to `folder/KIND.onnx` (static shape) with `vizcore.range` and `vizcore.sample_rate`."""
    _, _, shape, rate = KINDS[kind]
    path = Path(folder) / f"{kind}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    m = onnx.load(str(path))
    for k, v in {"vizcore.range": value_range, "vizcore.sample_rate": str(rate)}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))
    return path
