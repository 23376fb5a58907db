"""The MACO parameterization (Fel et al., NeurIPS 2023): only the Fourier phase is optimized; the magnitude is
fixed to the mean spectrum of natural photos, so every image keeps natural-image energy at every frequency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vizcore.errors import OptionError

from . import spectrum


def magnitude(size: tuple[int, int], channels: int, stats: spectrum.Statistics | None = None) -> torch.Tensor:
    """The fixed |rfft2| (norm="ortho") for an image of `size` (H, W): (channels, H, W//2+1), float32.

    The stored spectrum is sampled at this size's frequencies (bilinear in log magnitude), so any size works;
    frequency 0 is rescaled apart, as its ortho-normalized magnitude grows with the pixel count.
    3 channels use the whitened colour spectra, any other count the grey one.
    """
    stats = stats or spectrum.load()
    logm = torch.from_numpy(stats.log_magnitude[:3] if channels == 3 else stats.log_magnitude[3:])
    s = logm.shape[-2]
    dc = logm[:, s // 2, 0].clone()
    logm = logm.clone()
    # Bilinear sampling must not smear the DC spike over the lowest frequencies: use the mean of its neighbours.
    logm[:, s // 2, 0] = (logm[:, s // 2 - 1, 0] + logm[:, s // 2 + 1, 0] + logm[:, s // 2, 1]) / 3
    h, w = size
    fy = torch.fft.fftfreq(h, dtype=torch.float64)  # cycles per pixel, in [-0.5, 0.5)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)  # [0, 0.5]
    rows = fy * s + s // 2  # source row of each target frequency (row s//2 is 0)
    cols = fx * s
    grid = torch.stack(torch.broadcast_tensors(cols[None, :] / (s // 2) * 2 - 1,
                                               rows[:, None] / (s - 1) * 2 - 1), -1).float()
    out = F.grid_sample(logm[None], grid[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
    out[:, 0, 0] = dc + 0.5 * math.log(h * w / (s * s))
    mag = out.exp()
    return mag if channels in (1, 3) else mag.expand(channels, -1, -1).contiguous()


class MacoImage(nn.Module):
    """Images whose Fourier magnitude is fixed and whose phase is the trainable parameter.

    forward() -> (N, C, H, W) images in 0..1: inverse FFT, normalized per image to unit RMS, coloured with the
    photos' colour covariance (3 channels) and mapped into 0..1 by a sigmoid centred on their mean grey level.
    `units`: phases are drawn for one unit's images and tiled, so a batched render equals one unit at a time
    (as vizcore's built-in parameterizations do).
    """

    def __init__(self, shape: Sequence[int], units: int = 1, phase_sd: float | None = None) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4:
            raise OptionError(f"the maco parameterization needs 2-D images (N, C, H, W), got shape {shape}",
                              "use --param fft for 1-D inputs")
        n, c, h, w = shape
        self.shape, self.size = shape, (h, w)
        stats = spectrum.load()
        self.register_buffer("magnitude", magnitude((h, w), c, stats), persistent=False)
        per = n // max(units, 1)
        phase = torch.rand(per, c, h, w // 2 + 1) * (2 * math.pi) - math.pi if phase_sd is None else \
            torch.randn(per, c, h, w // 2 + 1) * float(phase_sd)
        self.phase = nn.Parameter(phase.repeat(max(units, 1), 1, 1, 1) if units > 1 else phase)
        # Centred on a neutral grey: five photos' mean colour would tint every image (it is orange).
        if c == 3:
            mean = torch.full((c,), float(stats.color_mean.mean()))
            color = torch.from_numpy(stats.color_sqrt).float()
        else:
            mean = torch.full((c,), stats.gray_mean)
            color = torch.eye(c) * stats.gray_std
        self.register_buffer("color", color, persistent=False)
        self.register_buffer("center", torch.logit(mean.clamp(0.05, 0.95)), persistent=False)

    def spatial(self) -> torch.Tensor:
        """The inverse FFT of magnitude and phase, before colour and range: (N, C, H, W), whitened colours."""
        return torch.fft.irfft2(torch.polar(self.magnitude.expand_as(self.phase), self.phase), s=self.size,
                                norm="ortho")

    def forward(self) -> torch.Tensor:
        x = self.spatial()
        x = x / x.square().mean(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        x = torch.einsum("nchw,dc->ndhw", x, self.color)  # whitened -> natural colour covariance
        # sigmoid'(0) = 1/4: near the mean colour the image has the photos' statistics
        return torch.sigmoid(self.center.view(1, -1, 1, 1) + 4.0 * x)
