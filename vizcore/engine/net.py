"""The network as the optimization loop sees it: 0..1 images -> resize -> normalize -> cut graph -> activations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Model


class Net(nn.Module):
    """0..1 images -> (resize the dims the model fixes back to their size) -> normalize -> cut graph ->
    {layer index: activation}."""

    def __init__(self, model: Model, cut: nn.Module, indices: Sequence[int], normalize: nn.Module,
                 fixed: Sequence[int | None] | None) -> None:
        super().__init__()
        self.cut, self.normalize, self.indices = cut, normalize, list(indices)
        self.fixed = tuple(fixed) if fixed else None  # per spatial dim: the size the model needs, None where free
        self.extra = [t for t in model.inputs if t is not model.input]
        self.feeds = model.feeds
        self.extra_feeds = model.extra_feeds
        self._rest: tuple[tuple[int, ...], torch.device, list[torch.Tensor]] | None = None  # per input shape
        self.direct = not self.extra and (model.layout is None or model.layout.identity)  # else feeds() lays it out
        self.memory_format = torch.contiguous_format

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.fixed is not None:
            want = tuple(f or d for f, d in zip(self.fixed, x.shape[2:]))  # transforms may have changed the size
            if want != tuple(x.shape[2:]):
                x = F.interpolate(x, size=want, mode="bilinear" if x.dim() == 4 else "linear", align_corners=False)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        x = self.normalize(x)
        feeds = [x] if self.direct else self.feeds(x, self._extra(x))
        outs = self.cut(*[f.to(x.device) for f in feeds])
        return dict(zip(self.indices, outs))

    def _extra(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The other graph inputs (constant for a chunk), made once per batch shape and device, not every step."""
        if self._rest is None or self._rest[0] != tuple(x.shape) or self._rest[1] != x.device:
            self._rest = (tuple(x.shape), x.device, self.extra_feeds(x))
        return self._rest[2]


def memory_format(cut: nn.Module, shape: Sequence[int], force: bool | None = None) -> torch.memory_format:
    """channels_last for image models with 2-D convolutions, else contiguous; `force` True/False (the render option
    `channels_last`, VIZCORE_CHANNELS_LAST=1/0) decides it instead.

    Measured on MobileNetV2 (bench/RESULTS.md): forward+backward 25-35 % faster on CPU; cuDNN prefers it on CUDA.
    """
    if len(shape) != 4 or force is False:
        return torch.contiguous_format
    if force or any(isinstance(m, nn.Conv2d) for m in cut.modules()):
        return torch.channels_last
    return torch.contiguous_format
