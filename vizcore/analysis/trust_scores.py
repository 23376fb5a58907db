"""The measurements behind a trust verdict (`vizcore.analysis.trust`), each a few forward passes, no backward:

- `scores`: each input's activation pattern at some layers, one number per channel (its largest value over
  positions, the measure exemplars rank by);
- `path_layers`: the layers on the way to a unit (the measured layers `vizcore check` uses that the unit's layer
  depends on), a spread of at most a few;
- `attributions`: each input's pattern at some layers as one unit sees it (activation x gradient per channel);
- `rank_corr`: Spearman correlations between patterns (Geirhos et al. 2023's path similarity);
- `transformed`: a unit's activation on its picture under seeded standard transforms (jitter, scale, rotate);
- `class_probability`: the probability another model gives a class for a picture (MACO's transferability).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..inputspace import InputSpace
from ..model import Layer, Model
from ..transforms import standard
from .layers import default_layers


def _spread(items: Sequence[Layer], count: int) -> list[Layer]:
    """About `count` of `items`, evenly spaced, the last one always kept."""
    if len(items) <= count:
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)}) if count > 1 else [-1]
    return [items[i] for i in idx]


def path_layers(model: Model, target: Layer, cap: int = 8) -> list[Layer]:
    """The measured layers (`default_layers`, after their activation) that `target` depends on, in graph order,
    at most `cap` of them spread over the depth (the deepest kept): the layers on the way to the unit."""
    by_output = {lay.output: lay for lay in model.layers}
    seen: set[int] = set()
    todo = list(target.inputs)
    while todo:
        lay = by_output.get(todo.pop())
        if lay is None or lay.index in seen:
            continue
        seen.add(lay.index)
        todo.extend(lay.inputs)
    measured = [c.layer for c in default_layers(model) if c.layer.index in seen and c.layer.channels]
    return _spread(measured, cap)


def scores(model: Model, x: np.ndarray, layers: Sequence[Layer], space: InputSpace | None,
           batch: int = 16) -> dict[int, np.ndarray]:
    """Per layer (by index), each input's activation pattern (N, C): a channel's largest value over positions.
    `x` (N, C, *spatial): 0..1 images mapped by `space`, or model units when `space` is None."""
    if not len(layers) or not len(x):
        return {lay.index: np.zeros((len(x), int(lay.channels or 0)), np.float32) for lay in layers}
    cut = model.cut_at(layers)
    norm = space.module(int(x.shape[1])) if space is not None else None
    parts: dict[int, list[np.ndarray]] = {lay.index: [] for lay in layers}
    step = batch if model.batch_ok else 1
    with torch.no_grad():
        for s in range(0, len(x), step):
            t = torch.from_numpy(np.array(x[s:s + step], dtype=np.float32))
            outs = cut(*model.feeds(norm(t) if norm is not None else t))
            for lay, a in zip(layers, outs):
                parts[lay.index].append(_channel_max(a))
    return {i: np.concatenate(p) for i, p in parts.items()}


def _channel_max(a: torch.Tensor) -> np.ndarray:
    a = a.detach().float()
    v = a.reshape(a.shape[0], -1) if a.dim() <= 2 else a.flatten(2).max(2).values
    return np.nan_to_num(v.cpu().numpy(), nan=0.0, posinf=3e38, neginf=-3e38)


def _ranked(a: np.ndarray) -> np.ndarray:
    """Rows of `a` as centred, unit-length average ranks (a constant row: zeros)."""
    from scipy.stats import rankdata

    r = rankdata(np.atleast_2d(a), axis=1)
    r = r - r.mean(1, keepdims=True)
    n = np.linalg.norm(r, axis=1, keepdims=True)
    return np.divide(r, n, out=np.zeros_like(r), where=n > 0)


def rank_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of every row of `a` (M, C) with every row of `b` (K, C): (M, K) (0 for a constant
    row, which has no ranking)."""
    return np.clip(_ranked(a) @ _ranked(b).T, -1.0, 1.0)


def attributions(model: Model, x: np.ndarray, units: Sequence[tuple[Layer, int]], layers: Sequence[Layer],
                 space: InputSpace | None, batch: int = 16) -> dict[int, np.ndarray]:
    """Per layer of `layers`, the pattern of each input `x[r]` as unit `units[r]` sees it: per channel, activation
    x gradient of the unit's activation (its channel's largest value), summed over positions: (N, C). A channel
    the unit does not read gets 0. One forward and one backward per batch."""
    targets = sorted({lay.index: lay for lay, _ in units}.values(), key=lambda lay: lay.index)
    want = sorted({lay.index: lay for lay in [*layers, *targets]}.values(), key=lambda lay: lay.index)
    pos = {lay.index: k for k, lay in enumerate(want)}
    cut = model.cut_at(want)
    norm = space.module(int(x.shape[1])) if space is not None else None
    out: dict[int, list[np.ndarray]] = {lay.index: [] for lay in layers}
    step = batch if model.batch_ok else 1
    for s in range(0, len(x), step):
        t = torch.from_numpy(np.array(x[s:s + step], dtype=np.float32)).requires_grad_(True)
        with torch.enable_grad():
            outs = cut(*model.feeds(norm(t) if norm is not None else t))
            total = sum(outs[pos[lay.index]][r].float()[c].max() for r, (lay, c) in enumerate(units[s:s + step]))
            grads = torch.autograd.grad(total, [outs[pos[lay.index]] for lay in layers], allow_unused=True,
                                        materialize_grads=True)
        for lay, g in zip(layers, grads):
            a = (outs[pos[lay.index]].detach().float() * g.detach().float())
            out[lay.index].append(np.nan_to_num(a.flatten(2).sum(2).numpy() if a.dim() > 2 else a.numpy()))
    return {i: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for i, v in out.items()}


def transformed(model: Model, x: np.ndarray, layers: Sequence[Layer], space: InputSpace | None, draws: int = 8,
                seed: int = 0, batch: int = 16) -> dict[int, np.ndarray]:
    """Per layer, each picture's activation pattern under `draws` seeded draws of the standard transforms (pad,
    jitter, scale 0.9-1.1, rotate +-10 degrees, as during the render): (draws, N, C). `x` (N, C, H, W) in 0..1."""
    g = torch.Generator().manual_seed(seed)
    chain = standard(max(x.shape[2:]), generator=g)
    out: dict[int, list[np.ndarray]] = {lay.index: [] for lay in layers}
    with torch.no_grad():
        for _ in range(draws):
            t = torch.from_numpy(np.array(x, dtype=np.float32))
            for f in chain:
                t = f(t)
            for i, v in scores(model, t.numpy(), layers, space, batch).items():
                out[i].append(v)
    return {i: np.stack(v) for i, v in out.items()}


def class_probability(other: Model, space: InputSpace | None, x: np.ndarray, classes: Sequence[int],
                      batch: int = 16) -> list[tuple[float, int] | None]:
    """For each picture `x[i]` (0..1, resized to `other`'s input if it fixes one), the probability `other` gives
    `classes[i]` (softmax of its logits) and that class's rank (1: its top class); None where it has no such class."""
    shape = other.input_shape(1, tuple(int(d) for d in x.shape[2:]))  # a fixed input keeps its own size
    t = torch.from_numpy(np.array(x, dtype=np.float32))
    if tuple(t.shape[2:]) != tuple(shape[2:]):
        mode = "bilinear" if t.dim() == 4 else "linear"
        t = F.interpolate(t, size=tuple(int(d) for d in shape[2:]), mode=mode, align_corners=False)
    logits = scores(other, t.numpy(), [other.logits_layer()], space, batch)[other.logits_layer().index]
    out: list[tuple[float, int] | None] = []
    for row, c in zip(logits, classes):
        if not 0 <= c < row.shape[0]:
            out.append(None)
            continue
        p = np.exp(row - row.max())
        p /= p.sum()
        out.append((float(p[c]), int((row > row[c]).sum()) + 1))
    return out
