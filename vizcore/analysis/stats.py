"""Per-channel activation statistics of the checked layers over a set of inputs: the peak value, how much the
output changes from one input to another (zero for a unit that does not depend on its input), NaN/Inf, APoZ.

The inputs themselves come from `vizcore.samples` (noise, photos, the user's data), mapped to the model's input
by the check's one `InputSpace`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..inputspace import InputSpace
from ..model import Model
from .layers import CheckedLayer


@dataclass
class LayerStats:
    """Per channel of one layer, over all probes: `peak` (largest value anywhere), `spread` (largest change of the
    output at one position from one input to another), `nonfinite` (NaN/Inf seen) and `scale` (the layer's
    largest finite |value|)."""

    peak: np.ndarray
    spread: np.ndarray
    nonfinite: np.ndarray
    scale: float
    apoz: np.ndarray | None = None  # fraction of outputs <= 0 per channel (Hu et al. 2016), over every position
    count: int = 0  # inputs seen


class _Acc:
    """Running per-position max and min over the probe batch (everything else derives from those two)."""

    def __init__(self) -> None:
        self.hi: torch.Tensor | None = None
        self.lo: torch.Tensor | None = None
        self.zeros: torch.Tensor | None = None
        self.values = 0
        self.count = 0

    def add(self, a: torch.Tensor) -> None:
        a = a.detach()
        if a.dim() < 2:
            a = a.reshape(a.shape[0], 1)
        z = (a <= 0).transpose(0, 1).reshape(a.shape[1], -1).sum(1).double().cpu()
        self.zeros = z if self.zeros is None else self.zeros + z
        self.values += a.numel() // a.shape[1]
        self.count += a.shape[0]
        hi, lo = a.amax(0).float(), a.amin(0).float()
        if self.hi is None or self.lo is None:
            self.hi, self.lo = hi, lo
        else:
            self.hi = torch.maximum(self.hi, hi)
            self.lo = torch.minimum(self.lo, lo)

    def result(self) -> LayerStats:
        assert self.hi is not None and self.lo is not None
        c = self.hi.shape[0]
        hi, lo = self.hi.reshape(c, -1), self.lo.reshape(c, -1)
        bad = ~(torch.isfinite(hi).all(1) & torch.isfinite(lo).all(1))
        peak = hi.amax(1)
        spread = (hi - lo).amax(1)
        fin_hi = torch.where(torch.isfinite(hi), hi.abs(), torch.zeros_like(hi))
        fin_lo = torch.where(torch.isfinite(lo), lo.abs(), torch.zeros_like(lo))
        scale = float(torch.maximum(fin_hi.amax(), fin_lo.amax())) if hi.numel() else 0.0
        apoz = (self.zeros / max(self.values, 1)).numpy() if self.zeros is not None else None
        return LayerStats(peak.double().cpu().numpy(), spread.double().cpu().numpy(), bad.cpu().numpy(), scale, apoz,
                          self.count)


def layer_stats(model: Model, layers: Sequence[CheckedLayer], inputs: np.ndarray | Iterable[np.ndarray], *,
                space: InputSpace | None, batch: int = 8, progress: Callable[[int], None] | None = None,
                extra: Sequence[Any] = ()) -> dict[int, LayerStats]:
    """Run `inputs` (one array or batches of them, (N, C, ...)) through the graph cut at `layers` (never past the
    deepest) and collect per-channel stats, keyed by layer index. `space`: the inputs are 0..1 images mapped to the
    model's input by it (None: they are model inputs already); `extra`: more layers to measure (e.g. the nodes
    before the gates)."""
    keys = [c.layer for c in layers] + [lay for lay in extra if lay is not None]
    keys = list({lay.index: lay for lay in keys}.values())
    cut = model.cut_at(keys)
    accs = {lay.index: _Acc() for lay in keys}
    bs = batch if model.batch_ok else 1
    norm = space.module(model.input_shape()[1]) if space is not None else None
    with torch.no_grad():
        for arr in [inputs] if isinstance(inputs, np.ndarray) else inputs:
            for s in range(0, arr.shape[0], bs):
                x = torch.from_numpy(np.array(arr[s:s + bs], dtype=np.float32))  # a copy: data may be read-only
                outs = cut(*model.feeds(norm(x) if norm is not None else x))
                for lay, a in zip(keys, outs):
                    accs[lay.index].add(a)
                if progress:
                    progress(int(x.shape[0]))
    return {i: a.result() for i, a in accs.items()}
