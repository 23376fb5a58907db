"""Feature accentuation in the engine: the start picture at the render size, the network cut at the layer below
each target (its features), the penalties that take them, and how far each final image ended from the picture.

A regularizer factory whose signature names `init` or `features` is built per chunk with them (`CONTEXT`):
`init` is the start picture (1, C, ...) in 0..1 on the render's device, `features(images)` gives, per image,
the flattened activations of the layer below its unit's target (the target's own layer when it is layer 0), on
the untransformed images. Everything here runs only when `RenderOptions.init` is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OptionError
from ..objectives import Objective
from ..samples import fit, read_image
from .net import Net

Render = Any  # `vizcore.engine.setup.Render` (which imports this module: named, not imported)

CONTEXT = ("init", "features")
Features = Callable[[torch.Tensor], list[torch.Tensor]]


def wants_context(factory: Callable[..., Any]) -> bool:
    """Whether a regularizer factory takes the start picture or the features (then it is built per chunk)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return any(name in params for name in CONTEXT)


def start_images(init: str | np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """The start picture as (1, C, H, W) float32 in 0..1 at the render shape: read with the project's image reader
    (centre-cropped to the aspect, resized), an array resized the same way."""
    if len(shape) != 4:
        raise OptionError("--init starts a render from a picture; this model's input is not an image",
                          "leave --init out for 1-D inputs")
    if isinstance(init, str):
        a = read_image(Path(init), shape, "--init")
    else:
        from PIL import Image

        rgb = np.round(np.moveaxis(init, 0, -1) * 255).astype(np.uint8)
        a = fit(Image.fromarray(rgb[..., 0] if rgb.shape[-1] == 1 else rgb), shape[1], (shape[2], shape[3]))
    return torch.from_numpy(np.ascontiguousarray(a))[None]


@dataclass
class Accent:
    """The start picture on the device and the network cut at the layers below the targets."""

    init: torch.Tensor
    net: Net
    below: dict[int, int]  # target layer index -> the layer whose features are compared

    def layers(self, objs: Sequence[Objective]) -> list[int]:
        return [self.below[min(o.targets)] for o in objs]

    def features(self, objs: Sequence[Objective], k: int) -> Features:
        """Per image of the chunk `objs` (`k` images per unit): its flattened features at its unit's layer."""
        layers = self.layers(objs)

        def of(images: torch.Tensor) -> list[torch.Tensor]:
            acts = self.net(images)
            return [acts[layers[j // k]][j].float().flatten() for j in range(images.shape[0])]

        return of


def build(r: Render) -> Accent | None:
    """The render's `Accent` (on its device) when it starts from a picture, else None."""
    if r.options.init is None:
        return None
    tops = sorted({min(o.targets) for o in r.objectives})
    below = {t: max(t - 1, 0) for t in tops}
    indices = sorted(set(below.values()))
    net = Net(r.model, r.model.cut_at(indices), indices, r.pre.module(r.shape[1]), r.model.fixed_dims)
    net.to(r.dev)
    net.memory_format = r.net.memory_format
    return Accent(init=start_images(r.options.init, r.shape).to(r.dev), net=net, below=below)


def relative(feats: list[torch.Tensor], ref: list[torch.Tensor]) -> torch.Tensor:
    """Per image: squared distance of its features to the reference, relative to the reference's (N,)."""
    return torch.stack([(f - g).pow(2).mean() / g.pow(2).mean().clamp_min(1e-12) for f, g in zip(feats, ref)])


def chunk_penalties(r: Render, objs: Sequence[Objective]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The penalties built with the chunk's context (`init`, `features`), for the factories that take it."""
    wanted = r.context_regs
    if not wanted:
        return []
    if r.accent is None:
        raise OptionError("a penalty needs a start picture, and none is given", "give --init IMAGE")
    context = {"init": r.accent.init, "features": r.accent.features(objs, r.options.images_per_unit)}
    out = []
    for factory, weight in wanted:
        params = inspect.signature(factory).parameters
        out.append(factory(weight, **{k: v for k, v in context.items() if k in params}))
    return out


def distances(r: Render, objs: Sequence[Objective], images: torch.Tensor) -> dict[str, list[float]] | None:
    """Each final image's distance to the start picture: pixel RMS (0..1) and the relative feature distance (the
    L2 norm of the change at the layer below over the picture's, 0 = unchanged)."""
    if r.accent is None:
        return None
    a = r.accent
    with torch.no_grad():
        img = images.float().clamp(0, 1)
        rms = (img - a.init).pow(2).flatten(1).mean(1).sqrt()
        feats = a.features(objs, r.options.images_per_unit)
        ref = feats(a.init.expand_as(img))
        rel = relative(feats(img), ref).sqrt()
    return {"pixel_rms": rms.cpu().tolist(), "feature_distance": rel.cpu().tolist()}
