"""Weights that are NaN or infinite: a broken export or training run, found before any input is fed."""

from __future__ import annotations

from typing import Any

import torch

from ..model import Model


def nonfinite_weights(model: Model) -> list[dict[str, Any]]:
    """One entry per weight tensor with NaN or Inf values: layer name, tensor name, counts."""
    owner = {}
    by_fx = {lay.fx_name: lay.name for lay in model.layers}
    for n in model.module.graph.nodes:
        if n.op == "call_module" and n.name in by_fx:
            owner[str(n.target)] = by_fx[n.name]
    found = []
    tensors = list(model.module.named_parameters()) + list(model.module.named_buffers())
    for name, t in tensors:
        if not t.is_floating_point():
            continue
        nan = int(torch.isnan(t).sum())
        inf = int(torch.isinf(t).sum())
        if nan or inf:
            mod, _, leaf = name.rpartition(".")
            found.append({"layer": owner.get(mod, mod or name), "tensor": leaf or name, "nan": nan, "inf": inf,
                          "size": int(t.numel())})
    return found
