"""Tiny CNNs for the prune tests, with dead channels planted by BatchNorm surgery (gamma 0, beta < 0 before a ReLU)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn


def plant(bn: nn.BatchNorm2d, channels: list[int], beta: float = -1.0) -> None:
    """Make `channels` of `bn` output `beta` whatever the input: dead after a ReLU when beta < 0."""
    with torch.no_grad():
        bn.weight[channels] = 0.0
        bn.bias[channels] = beta


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.5)


def export(model: nn.Module, path: Path, shape=(1, 3, 16, 16), dynamo: bool = False, dynamic: bool = True) -> Path:
    """TorchScript export (opset 17) with a free batch dim (unless not `dynamic`), or the dynamo exporter."""
    model.eval()
    x = torch.rand(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], verbose=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}} if dynamic else None)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None)
    return path


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def max_rel_diff(a: Path, b: Path, x: np.ndarray) -> float:
    """Largest |a - b| over every output, relative to that output's largest |value|."""
    worst = 0.0
    for ya, yb in zip(run(a, x), run(b, x)):
        worst = max(worst, float(np.abs(ya - yb).max() / max(np.abs(ya).max(), 1e-12)))
    return worst


def conv_channels(path: Path) -> dict[str, tuple[int, ...]]:
    """Weight shape of every Conv / Gemm node, by node name."""
    m = onnx.load(str(path))
    inits = {t.name: tuple(t.dims) for t in m.graph.initializer}
    return {n.name: inits[n.input[1]] for n in m.graph.node if n.op_type in ("Conv", "Gemm")}


class PlainCNN(nn.Module):
    """conv-bn-relu-pool, conv-bn-relu, adaptive pool 4x4, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 4), 1))


class ResBlock(nn.Module):
    """stem conv-bn-relu; block conv-bn-relu-conv-bn + identity, relu; head conv, global pool."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem, self.sb = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.sb(self.stem(x)))
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(s)))))
        return self.head(torch.relu(y + s)).mean((2, 3))


class DenseBlock(nn.Module):
    """a = relu(bn(conv(x))); b = relu(bn(conv(a))); conv(cat(a, b)): DenseNet-style feature reuse."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.ca, self.ba = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.cb, self.bb = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.cc = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.ba(self.ca(x)))
        b = torch.relu(self.bb(self.cb(a)))
        return self.cc(torch.cat([a, b], 1)).mean((2, 3))


class Separable(nn.Module):
    """conv-bn-relu, depthwise conv-bn-relu, pointwise conv-relu, global pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.bdw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.fc = nn.Linear(12, 5)
        with torch.no_grad():
            self.pw.bias.fill_(3.0)  # the pointwise units fire on every input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.bdw(self.dw(x)))
        return self.fc(torch.relu(self.pw(x)).mean((2, 3)))


class SEBlock(nn.Module):
    """conv-bn-relu, squeeze-and-excitation (gap, conv, relu, conv, sigmoid, mul), conv, global pool."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1)
        with torch.no_grad():
            self.fc1.bias.fill_(0.5)  # the squeeze units fire on every input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.c2(x * gate).mean((2, 3))


class Shuffle(nn.Module):
    """ShuffleNet-style: conv-bn-relu, split in two (chunk, or slices), branch on one half, concat, shuffle, conv."""

    def __init__(self, chunk: bool = False) -> None:
        super().__init__()
        self.chunk = chunk
        torch.manual_seed(5)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.cb, self.bb = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x1, x2 = x.chunk(2, dim=1) if self.chunk else (x[:, :4], x[:, 4:])
        x = torch.cat([x1, torch.relu(self.bb(self.cb(x2)))], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.c2(x).mean((2, 3))


class Copies(nn.Module):
    """conv-relu whose filter 4 is an exact copy of filter 1, then conv, global pool."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)
        with torch.no_grad():
            self.c1.weight[4] = self.c1.weight[1]
            self.c1.bias[4] = self.c1.bias[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x))).mean((2, 3))


class TwoBlocks(nn.Module):
    """stem; a redundant residual block (branch output x 1e-4: removable); an essential one (branch x 4); linear
    head without bias: for the lossy prune."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.stem, self.sb = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.a1, self.ab1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.a2, self.ab2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b1, self.bb1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b2, self.bb2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5, bias=False)
        randomize_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.sb(self.stem(x)))
        s = torch.relu(s + 1e-4 * self.ab2(self.a2(torch.relu(self.ab1(self.a1(s))))))
        s = torch.relu(s + 4.0 * self.bb2(self.b2(torch.relu(self.bb1(self.b1(s))))))
        return self.fc(s.mean((2, 3)))


class Slack(nn.Module):
    """Three conv layers of 16, 32 and 16 channels, flattened into a linear head (no pooling: every channel's
    variation reaches the output); 24 of the middle layer's 32 channels are read by the next layer with weights
    x 1e-4 (a planted slack group); the first and last layers' channels all matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(12)
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32)
        self.c3, self.b3 = nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 16 * 16, 5, bias=False)
        randomize_bn(self)
        with torch.no_grad():
            self.c3.weight[:, 8:] *= 1e-4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(torch.flatten(x, 1))


def with_data(net: nn.Module, folder: Path, seed: int) -> tuple[Path, Path]:
    """(folder, the exported model) with seeded random calibration (48) and held-out (24) inputs in calib/ and held/."""
    src = export(net, folder / "m.onnx")
    rng = np.random.default_rng(seed)
    for name, n in (("calib", 48), ("held", 24)):
        (folder / name).mkdir()
        np.save(folder / name / "x.npy", rng.standard_normal((n, 3, 16, 16)).astype(np.float32))
    return folder, src
