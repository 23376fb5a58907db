"""Tiny models built in the tests (exported to ONNX in a temp folder): fast, deterministic, with known structure."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import vizcore


class TinyCNN(nn.Module):
    """conv(3->8) relu pool conv(8->16) relu gap linear(16->5): layers 0..6 in the ONNX graph."""

    def __init__(self, seed: int = 0, in_ch: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(in_ch, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class TinyBNCNN(nn.Module):
    """conv-relu-pool-conv-relu-gap-linear on 3x32x32: small, but with every layer kind a CNN export has."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


class TinySignal(nn.Module):
    """A 1-D model: conv1d(2->4) relu conv1d(4->6) on (N, 2, L) signals."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv1d(2, 4, 5, padding=2)
        self.c2 = nn.Conv1d(4, 6, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def export(model: nn.Module, path: Path, shape: tuple[int, ...], names: dict[int, str] | None = None,
           metadata: dict[str, str] | None = None, dynamic: bool = True,
           axes: dict[int, str] | None = None) -> Path:
    """Export with the TorchScript exporter; optionally rename nodes (by index) and add metadata_props. The input's
    dynamic dims: `axes` ({dim: name}) when given, else batch and every spatial dim (`dynamic`), else batch only."""
    model.eval()
    axes = {"x": dict(axes) if axes is not None else {0: "batch"}, "y": {0: "batch"}}
    if axes["x"] == {0: "batch"} and dynamic and len(shape) == 4:
        axes["x"].update({2: "h", 3: "w"})
    if axes["x"] == {0: "batch"} and dynamic and len(shape) == 3:
        axes["x"].update({2: "len"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes)
    m = onnx.load(str(path))
    for i, name in (names or {}).items():
        m.graph.node[i].name = name
    for k, v in (metadata or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))
    return path


class TextEncoder(nn.Module):
    """input_ids (N, S) int64 + attention_mask (N, S) -> Embedding(50, 8) -> Linear -> ReLU -> masked mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 8)
        self.fc = nn.Linear(8, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(self.emb(ids)))
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.out((h * m).sum(1) / m.sum(1))


def export_text(path: Path) -> Path:
    """TextEncoder exported with int64 `input_ids` and `attention_mask` of symbolic batch and length."""
    ids, mask = torch.randint(0, 50, (1, 7)), torch.ones(1, 7, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TextEncoder().eval(), (ids, mask), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["y"],
                          dynamic_axes={"input_ids": {0: "N", 1: "S"}, "attention_mask": {0: "N", 1: "S"}})
    return path


def gather_output(path: Path) -> str:
    """The output tensor of a model's first Gather (a text model's embedding lookup)."""
    return next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Gather")


#: Preprocessing metadata of the tiny image models: 0..1 images, mean 0.5, std 0.25 (no guessing, no warning).
IMAGE_META = {"vizcore.mean": "0.5", "vizcore.std": "0.25", "vizcore.range": "0,1"}


def load_tiny(model: nn.Module, folder: Path, size: int = 32) -> vizcore.Model:
    """Export a tiny image model with IMAGE_META to `folder` and load it at `size` pixels."""
    path = export(model, Path(folder) / f"{type(model).__name__.lower()}.onnx", (1, 3, size, size),
                  metadata=IMAGE_META)
    return vizcore.load(path, size=size)


class CrossDetector(nn.Module):
    """conv(3->4, 3x3) relu maxpool conv(4->6, 3x3) relu gap linear(6->3) on 0..1 images (metadata range 0,1, no
    normalization). Channel 0 of the first conv detects a small bright cross (+1 on the cross, -1 on the corners,
    bias -6): it is positive only where a cross (or, weaker, a bright bar) is centred; channel 0 of the second conv
    passes it on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            w = torch.zeros(3, 3)
            w[1, :] = w[:, 1] = 1.0
            w[0, 0] = w[0, 2] = w[2, 0] = w[2, 2] = -1.0
            self.conv1.weight[0] = w
            self.conv1.bias[0] = -6.0
            self.conv2.weight[0] = 0.0
            self.conv2.weight[0, 0, 1, 1] = 1.0
            self.conv2.bias[0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


#: where `cross_images` plants the cross: example number -> (row, column) of its centre
CROSSES = {7: (5, 9), 41: (20, 14), 88: (12, 25), 163: (26, 6), 190: (9, 17)}
#: examples with a bright 3-pixel bar (a weaker match)
BARS = (3, 50, 120, 170)


def cross_image(size: int = 32, centre: tuple[int, int] | None = None, bar: tuple[int, int] | None = None,
                seed: int = 0) -> np.ndarray:
    """A (3, size, size) 0..1 image of dim noise (0..0.3) with a bright cross or horizontal bar centred at a point."""
    x = np.random.default_rng(seed).uniform(0, 0.3, (3, size, size)).astype(np.float32)
    if centre is not None:
        r, c = centre
        x[:, r, c - 1:c + 2] = 1.0
        x[:, r - 1:r + 2, c] = 1.0
    if bar is not None:
        r, c = bar
        x[:, r, c - 1:c + 2] = 1.0
    return x


def cross_data(folder: Path, count: int = 200, pngs: int = 150) -> Path:
    """`count` images: the first `pngs` as PNG files (000.png ...), the rest as one `rest.npy` batch; crosses at
    `CROSSES`, bars at `BARS`, the rest noise. Example number n is file n (n < pngs) or rest.npy[n - pngs]."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    imgs = [cross_image(centre=CROSSES.get(n), bar=(16, 16) if n in BARS else None, seed=n) for n in range(count)]
    for n in range(pngs):
        a = (imgs[n].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{n:03d}.png")
    np.save(folder / "rest.npy", np.stack(imgs[pngs:]))
    return folder


def load_cross(folder: Path) -> vizcore.Model:
    """CrossDetector exported to `folder` (0..1 input, no normalization) and loaded at 32 pixels."""
    path = export(CrossDetector(), Path(folder) / "cross.onnx", (1, 3, 32, 32), metadata={"vizcore.range": "0,1"})
    return vizcore.load(path, size=32)


class PlantedVGG(nn.Module):
    """A VGG-like stack, conv(3->8) relu conv(8->8) relu maxpool conv(8->12) relu gap linear(12->4), with
    PLANTED_DEAD filters of the last conv made undrivable: negative weights on its non-negative (ReLU) inputs
    and a negative bias, so no input lifts them above 0 (the article's units whose loss stays at zero)."""

    PLANTED_DEAD = (2, 5, 9)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 4)
        with torch.no_grad():
            for c in range(12):
                if c in self.PLANTED_DEAD:
                    self.c3.weight[c] = -self.c3.weight[c].abs()
                    self.c3.bias[c] = -0.1
                else:  # a drivable filter: something to push up
                    self.c3.weight[c, :, 1, 1] = self.c3.weight[c, :, 1, 1].abs() + 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        x = torch.relu(self.c3(torch.max_pool2d(x, 2)))
        return self.fc(x.mean((2, 3)))

def smooth_images(count: int, size: int = 32, seed: int = 0, red_every: int = 4) -> np.ndarray:
    """`count` smooth (N, 3, size, size) 0..1 images: a colour gradient and blurred blobs of random colours; every
    `red_every`-th has a strong red blob (the natural feature the planted units answer). No fine texture."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((count, 3, size, size), np.float32)
    for n in range(count):
        x = rng.uniform(0.1, 0.5, (3, 1, 1)) + rng.uniform(-0.2, 0.2, (3, 1, 1)) * (yy if n % 2 else xx)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            colour = rng.uniform(0, 0.6, (3, 1, 1))
            if n % red_every == 0:
                colour = np.array([0.9, 0.05, 0.05]).reshape(3, 1, 1)
            x = x + colour * blob
        out[n] = gaussian_filter(np.clip(x, 0, 1), (0, 1.5, 1.5))
    return out


def save_images(x: np.ndarray, folder: Path) -> Path:
    """(N, 3, H, W) 0..1 images as PNG files 000.png ... in `folder`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for n, a in enumerate(x):
        Image.fromarray((a.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(folder / f"{n:03d}.png")
    return folder


class FoolingNet(nn.Module):
    """A Geirhos-style fooling unit, planted: conv1 (3->12, 5x5, replicate padding: no border response) has 6 smooth
    filters (colour means, low-frequency edges) and 6 texture filters (zero-sum checkerboards of 2-pixel squares,
    silent on smooth images); conv2's channel 0 is the red filter plus `gain` x the texture filters. On smooth data
    it is a red-blob unit; its optimized picture is texture, reached through a branch no data input uses. conv2's
    other channels mix the smooth filters only."""

    def __init__(self, gain: float = 10.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 5, padding=2, padding_mode="replicate")
        self.conv2 = nn.Conv2d(12, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)
        g = torch.Generator().manual_seed(0)
        w1 = torch.zeros(12, 3, 5, 5)
        for c in range(3):
            w1[c, c] = 1 / 25  # colour means
        ramp = torch.linspace(-1, 1, 5) / 10
        w1[3, :] = ramp.view(1, 5, 1)  # vertical, horizontal, diagonal low-frequency edges (on all colours)
        w1[4, :] = ramp.view(1, 1, 5)
        w1[5, :] = (ramp.view(5, 1) + ramp.view(1, 5)) / 2
        sign = torch.tensor([1.0, 1.0, -1.0, -1.0])
        checker = torch.zeros(5, 5)
        checker[:4, :4] = sign.view(4, 1) * sign.view(1, 4)
        for j in range(6):
            w1[6 + j, j % 3] = torch.roll(checker, shifts=(j // 3, j // 3), dims=(0, 1)) / 4
        w2 = torch.randn(6, 12, 3, 3, generator=g) * 0.2
        w2[:, 6:] = 0.0  # the texture filters feed channel 0 only
        w2[0] = 0.0
        w2[0, 0, 1, 1] = 1.0
        w2[0, 6:, 1, 1] = gain
        with torch.no_grad():
            self.conv1.weight.copy_(w1)
            self.conv1.bias.copy_(torch.tensor([-0.3] * 3 + [0.0] * 3 + [-0.3] * 6))
            self.conv2.weight.copy_(w2)
            self.conv2.bias.zero_()
            self.fc.weight.copy_(torch.randn(3, 6, generator=g))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def trained_cnn(images: np.ndarray, steps: int = 150, seed: int = 0) -> nn.Module:
    """A TinyCNN trained (seeded, `steps` Adam steps of 32: a second or two on a CPU) to tell which colour
    dominates the smooth `images` (red, green, blue: 3 of its 5 logits) - an ordinary trained-ish model."""
    x = torch.from_numpy(images)
    y = x.mean((2, 3)).argmax(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and a loaded machine does not stall it
    try:
        return _train(x, y, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        model = TinyCNN(seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (32,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
