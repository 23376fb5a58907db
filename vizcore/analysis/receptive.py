"""Receptive fields of layers, measured rather than derived: the input region whose gradient with respect to a
layer's output at its centre position is non-zero (one forward, one backward per layer, on a seeded noise input),
kept as offsets that place a box around any position of that layer's output.

It works for any graph the converter handles. It is a lower bound where gates are closed on the noise input (a
ReLU at 0, a max-pool's losing inputs); the sum over every channel at the centre keeps that rare in practice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..inputspace import InputSpace
from ..model import Layer, Model


@dataclass(frozen=True)
class Field:
    """Where a layer's output at a position looks in the input: per spatial dim, the box [lo, hi) around
    `position * stride`, inside an input of `size`."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    stride: tuple[float, ...]
    size: tuple[int, ...]

    def box(self, position: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """The input region, [lo, hi) per spatial dim, of the output at `position` (clipped to the input)."""
        out = []
        for lo, hi, s, n, p in zip(self.lo, self.hi, self.stride, self.size, position):
            a = max(0, min(n - 1, math.floor(lo + p * s + 0.5)))
            out.append((a, max(a + 1, min(n, math.floor(hi + p * s + 0.5)))))
        return tuple(out)

    def to_json(self) -> dict[str, list[float] | list[int]]:
        """A JSON-ready dict."""
        return {"lo": list(self.lo), "hi": list(self.hi), "stride": list(self.stride), "size": list(self.size)}

    @staticmethod
    def from_json(d: dict[str, list]) -> Field:
        """The inverse of `to_json`."""
        return Field(*(tuple(d[k]) for k in ("lo", "hi", "stride")), tuple(int(v) for v in d["size"]))


def receptive_fields(model: Model, layers: Sequence[Layer], shape: Sequence[int], space: InputSpace | None,
                     seed: int = 0) -> dict[int, Field | None]:
    """The measured receptive field of every layer (by index) for inputs of `shape` (N, C, *spatial): None for a
    layer without spatial dims. `space`: the inputs are 0..1 images mapped by it (None: model units)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, *[int(d) for d in shape[1:]]), generator=g)
    if space is None:
        x = (x - 0.5) * 4.0
    x.requires_grad_(True)
    spatial = tuple(int(d) for d in shape[2:])
    cut = model.cut_at(layers)
    norm = space.module(int(shape[1])) if space is not None else None
    out: dict[int, Field | None] = {}
    with torch.enable_grad():
        acts = cut(*model.feeds(norm(x) if norm is not None else x))
        for lay, a in zip(layers, acts):
            out[lay.index] = _field(a, x, spatial) if a.dim() > 2 and spatial else None
    return out


def _field(a: torch.Tensor, x: torch.Tensor, spatial: tuple[int, ...]) -> Field:
    """The field of one layer's output `a` (1, C, *S) over input `x`: the non-zero gradient of its centre."""
    dims = tuple(int(d) for d in a.shape[2:])
    centre = tuple(d // 2 for d in dims)
    stride = tuple(n / d for n, d in zip(spatial, dims)) if len(dims) == len(spatial) else (1.0,) * len(dims)
    whole = Field(tuple(-c * s for c, s in zip(centre, stride)),
                  tuple(n - c * s for n, c, s in zip(spatial, centre, stride)), stride, spatial)
    if len(dims) != len(spatial) or not a.requires_grad:
        return whole
    (grad,) = torch.autograd.grad(a[(0, slice(None), *centre)].float().sum(), x, retain_graph=True,
                                  allow_unused=True, materialize_grads=True)
    support = grad.detach().abs().sum((0, 1)) > 0
    if not bool(support.any()):
        return whole
    lo, hi = [], []
    for d in range(len(spatial)):
        hit = torch.nonzero(support.any(dim=tuple(i for i in range(len(spatial)) if i != d)) if len(spatial) > 1
                            else support).flatten()
        lo.append(float(hit[0]) - centre[d] * stride[d])
        hi.append(float(hit[-1]) + 1 - centre[d] * stride[d])
    return Field(tuple(lo), tuple(hi), stride, spatial)
