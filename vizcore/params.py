"""Image parameterizations: what the optimizer actually changes, mapped to images in 0..1.

`fft` (the default, as Lucid/Lucent/Xplique): a Fourier spectrum scaled by 1/frequency, so that low frequencies
move first and images stay natural; colours decorrelated for 3-channel images. `pixel`: plain pixels.
Both work for (N, C, H, W) images and (N, C, L) signals, with any channel count. `signal` (the default for 1-D
inputs) draws signals only: a 1/f spectrum whose waveform has a fixed RMS level, then a tanh, so that the
ascent shapes the waveform instead of driving every sample to the ends of the range (issue 13, bench/signals.py).
Their initial noise comes from `generator=` (a seeded CPU `torch.Generator`), never from torch's global RNG.
`fft` and `pixel` also start from a given picture (`init=`, feature accentuation): the inverse of their mapping,
so that their first image is that picture (values clamped to INIT_MARGIN..1-INIT_MARGIN, where the sigmoid still
moves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import OptionError
from .hookspecs import hookimpl

# Square root of the colour correlation of natural images (ImageNet), as published by Olah et al. (Lucid).
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_DECORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


DECAY_1D = 1.0  # the signal parameterization's spectrum exponent (bench/signals.py)
INIT_MARGIN = 0.02  # a start picture's 0 and 1 become 0.02 and 0.98: the sigmoid's slope there is still 0.02


def _init_noise(shape: Sequence[int], units: int, sd: float, generator: torch.Generator | None) -> torch.Tensor:
    """Seeded noise for one unit's images, tiled over `units`: every unit starts alike, so batched == one at a time."""
    per = shape[0] // max(units, 1)
    noise = torch.randn((per, *shape[1:]), generator=generator) * sd
    return noise.repeat(units, *([1] * (len(shape) - 1))) if units > 1 else noise


class _ToImage(nn.Module):
    """Decorrelated colour (3 channels only) then a sigmoid: unconstrained values -> valid images in 0..1."""

    def __init__(self, channels: int, decorrelate: bool) -> None:
        super().__init__()
        self.decorrelate = decorrelate and channels == 3
        self.register_buffer("color", COLOR_DECORRELATION.clone(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.decorrelate:
            # one broadcast matmul over the flattened pixels: 5x faster than einsum here (bench/RESULTS.md)
            t = torch.matmul(self.color, t.flatten(2)).view(t.shape)
        return torch.sigmoid(t)

    def inverse(self, images: torch.Tensor) -> torch.Tensor:
        """The unconstrained values whose image is `images` (0..1, clamped to INIT_MARGIN..1-INIT_MARGIN)."""
        t = torch.logit(images.float().clamp(INIT_MARGIN, 1 - INIT_MARGIN))
        if self.decorrelate:
            t = torch.linalg.solve(self.color, t.flatten(2)).view(t.shape)
        return t


def _start(init: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A start picture (1 or N, C, ...) in 0..1 as the batch `shape`, checked."""
    init = torch.as_tensor(init, dtype=torch.float32)
    if init.dim() != len(shape) or tuple(init.shape[1:]) != tuple(shape[1:]) or init.shape[0] not in (1, shape[0]):
        raise OptionError(f"the start picture has shape {tuple(init.shape)}, the render needs {tuple(shape)}",
                          "give an image of the render's channel count (it is resized to the render size)")
    return init.expand(*shape).contiguous()


class FFTImage(nn.Module):
    """Images parameterized by their Fourier spectrum, scaled by 1/frequency^decay_power (Olah 2017).

    decay_power 1.25 (Lucid: 1.0) measured better here: on MobileNetV2's goldfish class the image transfers to
    EfficientNet-Lite0 at p 0.965 vs 0.891 (seed 0), and channel objectives end higher.

    `standardize` (horama's Fourier preconditioning): each image's spectrum is standardized before the 1/f scale and
    its pixels after the inverse FFT (mean 0, standard deviation 1 per image, then `contrast` times that), so the
    image's contrast is fixed and the ascent can only change its content; the parameter's own scale no longer
    matters (the start noise `sd` then only sets how far one step moves).
    """

    def __init__(self, shape: Sequence[int], units: int = 1, sd: float = 0.01, decay_power: float = 1.25,
                 decorrelate: bool = True, standardize: bool = False, contrast: float = 1.0,
                 generator: torch.Generator | None = None, init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        n, c, *spatial = self.shape
        if len(spatial) not in (1, 2):
            raise OptionError(f"the fft parameterization draws signals (N, C, L) and images (N, C, H, W); this input "
                              f"is {len(self.shape) - 2}-D {self.shape}", "use --param pixel (any rank)")
        if len(spatial) == 2:
            h, w = spatial
            fy = torch.fft.fftfreq(h)[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            freqs = torch.sqrt(fx * fx + fy * fy)
            spec_shape = (n, c, h, w // 2 + 1)
        else:
            (w,) = spatial
            h = 1
            freqs = torch.fft.rfftfreq(w)
            spec_shape = (n, c, w // 2 + 1)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale.to(torch.float32), persistent=False)
        self.to_image = _ToImage(c, decorrelate)
        self.spatial = tuple(spatial)
        self.standardize, self.contrast = bool(standardize), float(contrast)
        if init is not None and self.standardize:
            raise OptionError("a start picture (--init) needs the fft parameterization without standardize",
                              "leave --init out, or use --param-option standardize=false")
        if init is None:
            spectrum = torch.view_as_complex(_init_noise((*spec_shape, 2), units, sd, generator).contiguous())
        else:  # the picture's spectrum divided by the scale: forward() gives the picture back
            t = self.to_image.inverse(_start(init, self.shape)) * 4.0
            spectrum = (torch.fft.rfft2(t, norm="ortho") if len(spatial) == 2 else
                        torch.fft.rfft(t, norm="ortho")) / self.scale
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        spec = _standard(self.spectrum) if self.standardize else self.spectrum
        spec = spec * self.scale
        if len(self.spatial) == 2:
            t = torch.fft.irfft2(spec, s=self.spatial, norm="ortho")
        else:
            t = torch.fft.irfft(spec, n=self.spatial[0], norm="ortho")
        return self.to_image(_standard(t) * self.contrast if self.standardize else t / 4.0)


def _standard(t: torch.Tensor) -> torch.Tensor:
    """Each image of `t` (real or complex) at mean 0 and standard deviation 1 over all its other dims."""
    dims = tuple(range(1, t.dim()))
    t = t - t.mean(dims, keepdim=True)
    return t / (t.abs().pow(2).mean(dims, keepdim=True).sqrt() + 1e-4)


class PixelImage(nn.Module):
    """Images parameterized directly by (pre-sigmoid, colour-decorrelated) pixel values."""

    def __init__(self, shape: Sequence[int], units: int = 1, sd: float = 0.01, decorrelate: bool = True,
                 generator: torch.Generator | None = None, init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.to_image = _ToImage(self.shape[1], decorrelate)
        start = _init_noise(self.shape, units, sd, generator) if init is None else \
            self.to_image.inverse(_start(init, self.shape))
        self.pixels = nn.Parameter(start.contiguous())

    def forward(self) -> torch.Tensor:
        return self.to_image(self.pixels)


class FFTSignal(nn.Module):
    """1-D signals (N, C, L) from a spectrum scaled by 1/frequency^decay_power, at a fixed level: each signal's
    waveform (all channels together) is scaled to RMS `rms` in units of half the range, then 0.5 + 0.5*tanh.

    A unit whose response grows with the input's amplitude (any conv filter) pushes a free signal to a square wave
    at the range ends; at a fixed level the ascent can only change the waveform's shape, so it finds the waveform
    the unit prefers (for a linear filter: the filter itself). With `rms` 0.75 a sine peaks at 0.79 of the half
    range and a Gaussian waveform comes within 1 % of an end in about 0.2 % of its samples. `dc` False holds each
    signal's mean at mid-range (a unit that prefers a constant offset then gets a waveform, at a lower value).
    """

    def __init__(self, shape: Sequence[int], units: int = 1, sd: float = 1.0, decay_power: float = DECAY_1D,
                 rms: float = 0.75, dc: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise OptionError(f"the signal parameterization draws 1-D signals (N, C, L); this input is {self.shape}",
                              "use --param fft (or leave --param at auto) for images")
        if not 0 < rms <= 4:
            raise OptionError(f"signal rms must be in (0, 4] (half-range units), got {rms}", "e.g. rms=0.75")
        n, c, length = self.shape
        freqs = torch.fft.rfftfreq(length)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / length) ** decay_power
        scale = scale / scale.max()
        if not dc:
            scale[0] = 0.0
        self.register_buffer("scale", scale.to(torch.float32), persistent=False)
        noise = _init_noise((n, c, length // 2 + 1, 2), units, sd, generator)
        self.spectrum = nn.Parameter(torch.view_as_complex(noise.contiguous()))
        self.length, self.rms = length, float(rms)

    def forward(self) -> torch.Tensor:
        t = torch.fft.irfft(self.spectrum * self.scale, n=self.length, norm="ortho")
        level = t.pow(2).mean((1, 2), keepdim=True).add(1e-12).sqrt()
        return 0.5 + 0.5 * torch.tanh(t * (self.rms / level))


BUILTIN: dict[str, Callable[..., nn.Module]] = {"fft": FFTImage, "pixel": PixelImage, "signal": FFTSignal}


@hookimpl
def vizcore_add_params() -> dict[str, Callable[..., nn.Module]]:
    return dict(BUILTIN)
