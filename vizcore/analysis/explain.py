"""What fires on one input: for each chosen layer, the units whose activation on it is largest (a unit's activation:
its channel's largest value over positions, as for exemplars), each with its activation map over the input as a
heat map. The Microscope question "what does the network see here?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..inputspace import InputSpace
from ..model import Layer, Model
from .layers import default_layers


@dataclass(frozen=True)
class Firing:
    """One unit on the input: its activation (channel max) and mean, the arg-max position in the layer's output,
    and `heat`, its activation map resized to the input's spatial size (None for a layer without positions)."""

    layer: Layer
    channel: int
    activation: float
    mean: float
    position: tuple[int, ...] | None
    heat: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the heat map itself is a picture, not listed)."""
        return {"layer": self.layer.name, "layer_index": self.layer.index, "channel": self.channel,
                "activation": self.activation, "mean": self.mean,
                "position": None if self.position is None else list(self.position)}


@dataclass
class Explanation:
    """The input (C, *spatial; 0..1 when `is_image`, else model units) and, per layer, its top units, best first."""

    input: np.ndarray
    is_image: bool
    layers: tuple[Layer, ...]
    units: dict[int, list[Firing]]
    pictures: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (layer, channel) -> uint8 render

    def overlay(self, f: Firing) -> np.ndarray | None:
        """The unit's heat map blended over the input, uint8 (H, W, 3); None without a 2-D map."""
        if f.heat is None or f.heat.ndim != 2 or self.input.ndim != 3:
            return None
        return blend(self.input, f.heat, self.is_image)

    def to_json(self) -> dict[str, Any]:
        """Per layer, the top units."""
        return {"layers": [{"index": lay.index, "name": lay.name,
                            "units": [f.to_json() for f in self.units[lay.index]]} for lay in self.layers]}


def blend(x: np.ndarray, heat: np.ndarray, is_image: bool = True, peak: float | None = None,
          opacity: float = 1.0) -> np.ndarray:
    """A heat map (H, W) blended over an input (C, H, W) (0..1 when `is_image`, else min-max scaled), as uint8
    (H, W, 3): the input in grey, the heat from dark red to white over it; `peak` (default: the map's max) is
    full heat, so that several maps of one unit share a scale; `opacity` < 1 lets more of the input through."""
    base = x if is_image else _minmax(x)
    grey = np.clip(base.mean(0), 0, 1)[..., None] * np.ones(3)
    top = float(heat.max()) if peak is None else float(peak)
    h = np.clip(heat / top, 0, 1)[..., None] if top > 0 else np.zeros((*heat.shape, 1))
    hot = np.concatenate([np.clip(3 * h, 0, 1), np.clip(3 * h - 1, 0, 1), np.clip(3 * h - 2, 0, 1)], -1)
    a = (0.35 + 0.65 * h) * opacity
    return ((grey * 0.6 * (1 - a) + hot * a) * 255 + 0.5).clip(0, 255).astype(np.uint8)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def depth_layers(model: Model, count: int = 4) -> list[Layer]:
    """`count` layers spread over the depth among those `vizcore check` measures (the last one included)."""
    all_ = [c.layer for c in default_layers(model)]
    if len(all_) <= count:
        return all_
    picks = np.unique(np.round(np.linspace(0, len(all_) - 1, count + 1)[1:]).astype(int))
    return [all_[i] for i in picks]


def explain_input(model: Model, x: np.ndarray, layers: Sequence[Layer], *, top: int = 8,
                  space: InputSpace | None = None) -> Explanation:
    """The top-`top` units of each layer on input `x` (C, *spatial): a 0..1 image mapped by `space`, or model
    units when `space` is None."""
    t = torch.from_numpy(np.array(x, dtype=np.float32)[None])
    norm = space.module(int(x.shape[0])) if space is not None else None
    with torch.no_grad():
        acts = model.cut_at(layers)(*model.feeds(norm(t) if norm is not None else t))
    units = {}
    for lay, a in zip(layers, acts):
        a = a.detach().float().cpu()[0]  # (C, *S)
        flat = a.reshape(a.shape[0], -1)
        peak, where = flat.max(1)
        order = torch.argsort(torch.nan_to_num(peak, nan=-float("inf")), descending=True, stable=True)[:top]
        units[lay.index] = [_firing(lay, a, int(c), float(peak[c]), int(where[c]), x.shape[1:]) for c in order]
    return Explanation(np.asarray(x), space is not None, tuple(layers), units)


def _firing(lay: Layer, a: torch.Tensor, c: int, peak: float, where: int, spatial: Sequence[int]) -> Firing:
    m = a[c]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(m.dim())
    if mode is None or len(spatial) != m.dim():
        return Firing(lay, c, peak, float(m.mean()), None, None)
    pos = tuple(int(v) for v in np.unravel_index(where, tuple(m.shape)))
    heat = F.interpolate(m[None, None], size=tuple(int(s) for s in spatial), mode=mode, align_corners=False)
    return Firing(lay, c, peak, float(m.mean()), pos, heat[0, 0].numpy())
