"""Penalties on the image itself (images in 0..1, before transforms), each with a weight: L1, L2, total variation,
and `ends` (the soft fraction of samples near the ends of the range, for signals).

Each returns one value per image, subtracted from that image's objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .hookspecs import hookimpl

Regularizer = Callable[[torch.Tensor], torch.Tensor]


def l1(weight: float) -> Regularizer:
    """Mean absolute distance from grey: keeps images from saturating."""
    return lambda x: weight * (x - 0.5).abs().flatten(1).mean(1)


def l2(weight: float) -> Regularizer:
    """Mean squared distance from grey."""
    return lambda x: weight * ((x - 0.5) ** 2).flatten(1).mean(1)


def tv(weight: float) -> Regularizer:
    """Total variation: mean absolute difference of neighbouring pixels, against high-frequency noise."""

    def penalty(x: torch.Tensor) -> torch.Tensor:
        d = (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)
        if x.dim() == 4:
            d = d + (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
        return weight * d

    return penalty


def ends(weight: float, margin: float = 0.05) -> Regularizer:
    """The soft fraction of samples within `margin` of 0 or 1: 0 inside, rising linearly to 1 at an end.

    A sample at an end costs `weight`/L of its image's value per sample; samples away from the ends cost nothing,
    so a waveform is left as it is and only a square wave at the rails pays.
    """
    return lambda x: weight * ((x - 0.5).abs() - (0.5 - margin)).clamp(min=0).div(margin).flatten(1).mean(1)


@hookimpl
def vizcore_add_regularizers() -> dict[str, Callable[[float], Regularizer]]:
    return {"l1": l1, "l2": l2, "tv": tv, "ends": ends}
