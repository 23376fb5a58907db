"""The checked layers' activations over a set of inputs, folded into per-channel statistics (`ChannelStats`, the
accumulator prune uses too): the peak, how much the output changes from one input to another, NaN/Inf, APoZ.

The inputs themselves come from `vizcore.samples` (noise, photos, the user's data), mapped to the model's input
by the check's one `InputSpace`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..channelstats import ChannelStats, LayerStats
from ..inputspace import InputSpace
from ..model import Model
from .layers import CheckedLayer


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
    accs = {lay.index: ChannelStats() for lay in keys}
    bs = batch if model.batch_ok else 1
    norm = space.module(model.input_shape()[1]) if space is not None else None
    with torch.no_grad():
        for arr in [inputs] if isinstance(inputs, np.ndarray) else inputs:
            for s in range(0, arr.shape[0], bs):
                x = torch.from_numpy(np.array(arr[s:s + bs], dtype=np.float32))  # a copy: data may be read-only
                outs = cut(*model.feeds(norm(x) if norm is not None else x))
                for lay, a in zip(keys, outs):
                    accs[lay.index].add(a.detach().float().cpu().numpy())
                if progress:
                    progress(int(x.shape[0]))
    return {i: a.summary() for i, a in accs.items()}
