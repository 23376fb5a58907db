"""Recovery without labels: distil the pruned model towards the original's outputs on the calibration data through
the torch graph (`vizcore.load` of the pruned ONNX), then write the tuned weights back into the ONNX initializers.

The loss follows the budget: KL(softmax(original) || softmax(pruned)) on classifier outputs for a top1 or kl budget
(it ignores a common shift of the logits), else the mean squared error divided by the original output's variance
(rel and cos budgets, and outputs that are not classifiers). Adam over the Conv/Gemm/MatMul/BatchNormalization
weights, minibatches drawn by a local `torch.Generator` seeded with `seed` (the process's RNG is not touched): the
same seed gives the same weights on the same device. CUDA when `device` is "auto" and a GPU is there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import torch

from ..engine.adam import Adam
from .budget import is_classifier
from .search import eta
from .torchgraph import graph_inputs, load_proto, weight_map, write_back


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _loss(ys: Sequence[torch.Tensor], refs: Sequence[torch.Tensor], kl: bool) -> torch.Tensor:
    total = torch.zeros((), device=ys[0].device)
    for y, r in zip(ys, refs):
        if kl and is_classifier(r):
            total = total + torch.nn.functional.kl_div(torch.log_softmax(y, 1), torch.log_softmax(r, 1),
                                                       reduction="batchmean", log_target=True)
        else:
            total = total + torch.mean((y - r) ** 2) / torch.clamp(r.var(), min=1e-12)
    return total


def recover(model: onnx.ModelProto, size: Sequence[int] | None, feed: dict[str, np.ndarray],
            ref: Sequence[np.ndarray], *, steps: int, metric: str = "top1", seed: int = 0, batch: int = 16,
            lr: float = 1e-5, device: str = "auto", say: Callable[[str], None] = lambda m: None
            ) -> tuple[onnx.ModelProto, dict]:
    """The model with its weights distilled for `steps` minibatches of `batch` calibration inputs; and what was done
    (the loss at the start and the end, seconds, device, tuned tensors)."""
    m = load_proto(model, size)
    mapping = weight_map(model, m)
    dev = _device(device)
    module = m.module.to(dev)
    tuned = list({id(p): p for p, _ in mapping.values()}.values())
    for p in module.parameters():
        p.requires_grad_(False)
    for p in tuned:
        p.requires_grad_(True)
    opt = Adam(tuned, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(next(iter(feed.values())))
    refs = [torch.from_numpy(np.asarray(r, np.float32)) for r in ref]
    order, losses, t0, step = torch.randperm(n, generator=gen), [], time.monotonic(), 0
    with torch.enable_grad():
        while step < steps:
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(n, generator=gen)])
            idx, order = order[:batch], order[batch:]
            ys = module(*graph_inputs(m, feed, idx.numpy(), dev))
            ys = list(ys) if isinstance(ys, (tuple, list)) else [ys]
            loss = _loss(ys, [r[idx].to(dev) for r in refs], metric in ("top1", "kl"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if step == 1 or step % max(1, steps // 20) == 0 or step == steps:
                spent = time.monotonic() - t0
                say(f"recovery step {step}/{steps}: loss {np.mean(losses[-10:]):.4g}; ETA "
                    f"{eta(spent / step * (steps - step))}")
    info = {"steps": steps, "loss": "KL" if metric in ("top1", "kl") else "MSE / variance", "batch": batch,
            "lr": lr, "seed": seed, "device": str(dev),
            "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-10:])) if losses else None,
            "seconds": time.monotonic() - t0, "tensors": len(mapping)}
    return write_back(model, mapping), info
