"""Penalties on the image itself (images in 0..1, before transforms), each with a weight: L1, L2, total variation,
`ends` (the soft fraction of samples near the ends of the range, for signals), and the two of feature
accentuation, which hold a render that starts from a picture near it (`init_pixel`, `init_feature`; their factories
take the engine's `init` and `features`, see `vizcore.engine.accent`).

Each returns one value per image, subtracted from that image's objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import OptionError
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


def _needs(init: torch.Tensor | None, name: str) -> torch.Tensor:
    if init is None:
        raise OptionError(f"the {name} penalty holds the render near a start picture, and none is given",
                          "give --init IMAGE (init= in Python)")
    return init


def init_pixel(weight: float, init: torch.Tensor | None = None) -> Regularizer:
    """Mean squared pixel distance to the start picture `init` (1, C, ...) in 0..1."""
    start = _needs(init, "init_pixel")
    return lambda x: weight * (x - start).pow(2).flatten(1).mean(1)


def init_feature(weight: float, init: torch.Tensor | None = None,
                 features: Callable[[torch.Tensor], list[torch.Tensor]] | None = None) -> Regularizer:
    """Squared distance of each image's features (the layer below its target, from `features`) to the start
    picture's, relative to the picture's: 0 at the start, 1 when the change is as large as the features."""
    start = _needs(init, "init_feature")
    if features is None:
        raise OptionError("the init_feature penalty needs the render's features", "use it through vizcore.render")
    ref: list[torch.Tensor] = []

    def penalty(x: torch.Tensor) -> torch.Tensor:
        if len(ref) != x.shape[0]:  # the picture's features, once per chunk (per image: its unit's layer)
            with torch.no_grad():
                ref[:] = [f.detach() for f in features(start.expand_as(x))]
        got = features(x)
        return weight * torch.stack([(f - g).pow(2).mean() / g.pow(2).mean().clamp_min(1e-12)
                                     for f, g in zip(got, ref)])

    return penalty


@hookimpl
def vizcore_add_regularizers() -> dict[str, Callable[..., Regularizer]]:
    return {"l1": l1, "l2": l2, "tv": tv, "ends": ends, "init_pixel": init_pixel, "init_feature": init_feature}
