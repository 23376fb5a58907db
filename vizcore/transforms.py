"""Random, differentiable augmentations applied every step (transformation robustness, Olah 2017).

Each factory takes the image size (and `generator=`, a seeded CPU `torch.Generator`) and returns a list of
modules Tensor -> Tensor (Captum style); `standard` is Lucid's preset (pad 12, jitter 8, scale 0.9-1.1, rotate
+-10 degrees, jitter 4 at 128 px), scaled to the image size. Randomness comes from that generator, never from
torch's global one (the caller's RNG is untouched), and is shared by the whole batch, so a batched render follows
the same path as a one-at-a-time render.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hookspecs import hookimpl

Transform = Callable[[torch.Tensor], torch.Tensor]
REFERENCE_SIZE = 128  # the size Lucid's standard transforms were designed for


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi] from `generator` (a seeded CPU generator; None: torch's global one)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=generator).item()) if hi > lo else lo


def _choice(values: Sequence[float], generator: torch.Generator | None) -> float:
    return float(values[_randint(0, len(values) - 1, generator)])


class Pad(nn.Module):
    """Pad every side by `width` pixels with a constant (0.5 = grey), so jitter/rotate don't only see edges."""

    def __init__(self, width: int, value: float = 0.5) -> None:
        super().__init__()
        self.width, self.value = int(width), float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.width <= 0:
            return x
        pads = (self.width,) * (2 * (x.dim() - 2))
        return F.pad(x, pads, mode="constant", value=self.value)


class Jitter(nn.Module):
    """Random crop that removes `d` pixels in total along each spatial axis (a random shift)."""

    def __init__(self, d: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.d, self.generator = int(d), generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.d <= 0:
            return x
        if x.dim() == 3:
            o = _randint(0, self.d, self.generator)
            return x[..., o:x.shape[-1] - self.d + o]
        oy, ox = _randint(0, self.d, self.generator), _randint(0, self.d, self.generator)
        h, w = x.shape[-2:]
        return x[..., oy:h - self.d + oy, ox:w - self.d + ox]


class Affine(nn.Module):
    """Random zoom (from `scales`) and rotation (degrees, from `angles`) in one differentiable resampling, onto a
    grid `shrink` pixels smaller along each spatial axis (the whole view, resampled smaller: a padded picture comes
    back to the network's size without a second resampling). 1-D signals: zoom only, no shrink."""

    def __init__(self, scales: Sequence[float] = (1.0,), angles: Sequence[float] = (0.0,),
                 generator: torch.Generator | None = None, shrink: int = 0) -> None:
        super().__init__()
        self.scales, self.angles, self.generator = tuple(scales), tuple(angles), generator
        self.shrink = int(shrink)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, a = _choice(self.scales, self.generator), _choice(self.angles, self.generator)
        if x.dim() == 3:  # 1-D signals: zoom only
            if s == 1.0:
                return x
            n = max(2, round(x.shape[-1] * s))
            return F.interpolate(x, size=n, mode="linear", align_corners=False)
        out = [max(1, d - self.shrink) for d in x.shape[2:]]
        if s == 1.0 and a == 0.0 and self.shrink <= 0:
            return x
        r = math.radians(a)
        cos, sin = math.cos(r) / s, math.sin(r) / s
        # built on the host and copied without blocking: a plain torch.tensor(..., device=cuda) syncs every step
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype).to(x.device, non_blocking=True)
        # one grid for the whole batch (every image gets the same transform), expanded without a copy:
        # bit-identical to a per-image grid and 4-5 ms less per step at 16 x 252 px on the CPU (bench/RESULTS.md)
        grid = F.affine_grid(theta[None], [1, x.shape[1], *out], align_corners=False).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class Blur(nn.Module):
    """Gaussian blur with standard deviation `sigma` pixels (suppresses high-frequency noise)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        r = max(1, int(math.ceil(2 * self.sigma)))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * self.sigma ** 2))
        self.kernel = k / k.sum()
        self._on: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}  # the kernel per device: one copy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return x
        c = x.shape[1]
        k = self._on.get((x.device, x.dtype))
        if k is None:
            k = self._on.setdefault((x.device, x.dtype), self.kernel.to(x.device, x.dtype))
        r = k.numel() // 2
        if x.dim() == 3:
            return F.conv1d(F.pad(x, (r, r), mode="reflect"), k.view(1, 1, -1).repeat(c, 1, 1), groups=c)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class Crops(nn.Module):
    """`copies` random square crops of every image per step, each resampled to the image size, plus a little
    Gaussian and uniform noise (horama's multi-crop step, Fel et al. 2023; horama's noise 0.05 is in ImageNet-normalized
    units, about 0.01 in 0..1): (N, C, H, W) -> (N * copies, C, H, W),
    image i's crops at rows i*copies .. (i+1)*copies-1; the engine averages the objective over them. A crop's side
    is `lo`..`hi` of the image's, its centre 0.5 + N(0, `spread`) of the side (outside the image: grey); the same
    crops for every image of the batch (batched == one at a time). One batched resampling for all crops."""

    def __init__(self, copies: int = 4, lo: float = 0.9, hi: float = 1.0, spread: float = 0.15, noise: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.copies, self.lo, self.hi, self.spread, self.noise = int(copies), float(lo), float(hi), float(spread), \
            float(noise)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # 1-D signals: no crops
            return x
        k, g = self.copies, self.generator
        side = self.lo + (self.hi - self.lo) * torch.rand(k, generator=g)
        centre = (torch.randn(k, 2, generator=g) * self.spread).clamp(-0.5, 0.5) * 2  # in grid units (-1..1)
        theta = torch.zeros(k, 2, 3)
        theta[:, 0, 0] = side
        theta[:, 1, 1] = side
        theta[:, :, 2] = centre
        n = x.shape[0]
        theta = theta.to(x.device, x.dtype, non_blocking=True).repeat(n, 1, 1)  # row i*k+j: crop j of image i
        grid = F.affine_grid(theta, [n * k, *x.shape[1:]], align_corners=False)
        y = F.grid_sample(x.repeat_interleave(k, 0) - 0.5, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) + 0.5
        if self.noise > 0:
            shape = (k, *x.shape[1:])
            jolt = torch.randn(shape, generator=g) * self.noise + (torch.rand(shape, generator=g) - 0.5) * self.noise
            y = y + jolt.to(x.device, x.dtype, non_blocking=True).repeat(n, 1, 1, 1)
        return y


def _px(v: float, size: int) -> int:
    return max(0, round(v * size / REFERENCE_SIZE))


Gen = torch.Generator | None


def standard(size: int, generator: Gen = None, **_: object) -> list[Transform]:
    """Lucid's standard transforms, scaled from 128 px to `size`, with the rotation and zoom resampling the padded
    picture to the picture's own size: the network sees `size` px, not Lucid's 1.09x (1.19x the pixels, and of the
    network's work per step; bench/RESULTS.md 2026-12-07 issue 27)."""
    pad, first, last = _px(12, size), _px(8, size), _px(4, size)
    return [
        Pad(pad),
        Jitter(first, generator),
        Affine(scales=[1 + (i - 5) / 50 for i in range(11)], angles=list(range(-10, 11)) + [0] * 5,
               generator=generator, shrink=2 * pad - first - last),
        Jitter(last, generator),
    ]


def none(size: int, generator: Gen = None, **_: object) -> list[Transform]:
    """No transforms (plain gradient ascent; expect high-frequency patterns)."""
    return []


def pad(size: int, width: int = 12, generator: Gen = None, **_: object) -> list[Transform]:
    """Constant grey padding, `width` pixels at 128 px."""
    return [Pad(_px(width, size))]


def jitter(size: int, d: int = 8, generator: Gen = None, **_: object) -> list[Transform]:
    """A random shift of up to `d` pixels at 128 px."""
    return [Jitter(_px(d, size), generator)]


def scale(size: int, lo: float = 0.9, hi: float = 1.1, generator: Gen = None, **_: object) -> list[Transform]:
    """A random zoom from lo to hi."""
    return [Affine(scales=[lo + (hi - lo) * i / 10 for i in range(11)], generator=generator)]


def rotate(size: int, degrees: int = 10, generator: Gen = None, **_: object) -> list[Transform]:
    """A random rotation of up to +-`degrees`."""
    return [Affine(angles=list(range(-int(degrees), int(degrees) + 1)), generator=generator)]


def blur(size: int, sigma: float = 0.5, generator: Gen = None, **_: object) -> list[Transform]:
    """A Gaussian blur, `sigma` pixels at 128 px."""
    return [Blur(sigma * size / REFERENCE_SIZE)]


def crops(size: int, copies: int = 1, lo: float = 0.9, hi: float = 1.0, noise: float = 0.01, generator: Gen = None,
          **_: object) -> list[Transform]:
    """`copies` random crops of `lo`..`hi` of the side per image and step, with noise (`Crops`); the render's
    `crops` option sets `copies`."""
    return [Crops(copies, lo, hi, noise=noise, generator=generator)]


BUILTIN: dict[str, Callable[..., list[Transform]]] = {
    "standard": standard, "none": none, "pad": pad, "jitter": jitter, "scale": scale, "rotate": rotate, "blur": blur,
    "crops": crops,
}


@hookimpl
def vizcore_add_transforms() -> dict[str, Callable[..., list[Transform]]]:
    return dict(BUILTIN)
