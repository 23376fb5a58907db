"""Recovery without labels: distil the pruned model towards the original's outputs on the calibration data through
the torch graph (`vizcore.load` of the pruned ONNX), then write the tuned weights back into the ONNX initializers.

The loss follows the budget: KL(softmax(original) || softmax(pruned)) on classifier outputs for a top1 or kl budget
(it ignores a common shift of the logits), else the mean squared error divided by the original output's variance
(rel and cos budgets, and outputs that are not classifiers). Adam over the Conv/Gemm/MatMul/BatchNormalization
weights, minibatches drawn by a local `torch.Generator` seeded with `seed` (the process's RNG is not touched): the
same seed gives the same weights on the same device. CUDA when `device` is "auto" and a GPU is there.

With `teacher` (the original model) the minibatches are *augmented* afresh at every step and the targets are the
teacher's outputs on the augmented inputs, so that the student cannot learn the calibration inputs by heart: image
inputs (N, C <= 4, H, W) get a random resized crop (35-100 % of the area, aspect 3/4-4/3), a horizontal flip,
contrast and brightness jitter (in the model's units, kept within the calibration data's per-channel range) and,
on half of the steps, mixup of pairs. Only the calibration inputs it is given are read.
"""

from __future__ import annotations

import math
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


def augment(x: torch.Tensor, gen: torch.Generator, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """A freshly augmented copy of an image batch (N, C, H, W) in the model's units (see the module doc); `lo`, `hi`:
    the per-channel range (1, C, 1, 1) the result is clipped to."""
    n, _, h, w = x.shape

    def u(a: float, b: float, *shape: int) -> torch.Tensor:
        return a + (b - a) * torch.rand(shape or (1,), generator=gen)

    out = []
    for i in range(n):
        area, ratio = float(u(0.35, 1.0)), float(torch.exp(u(math.log(3 / 4), math.log(4 / 3))))
        ch, cw = min(h, max(2, round(h * math.sqrt(area / ratio)))), min(w, max(2, round(w * math.sqrt(area * ratio))))
        y0, x0 = int(u(0, h - ch + 1e-6)), int(u(0, w - cw + 1e-6))
        crop = x[i:i + 1, :, y0:y0 + ch, x0:x0 + cw]
        crop = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        if float(u(0, 1)) < 0.5:
            crop = crop.flip(3)
        mean = crop.mean(dim=(2, 3), keepdim=True)
        std = crop.std(dim=(2, 3), keepdim=True) + 1e-6
        crop = mean + u(0.75, 1.25).to(x) * (crop - mean) + (u(-0.2, 0.2) + u(-0.05, 0.05, 1, x.shape[1], 1, 1)
                                                              ).to(x) * std
        out.append(crop)
    y = torch.cat(out)
    if float(u(0, 1)) < 0.5:
        lam = u(0.6, 1.0).to(x)
        y = lam * y + (1 - lam) * y[torch.randperm(n, generator=gen).to(y.device)]
    return torch.maximum(torch.minimum(y, hi), lo)


def _images(m, feed: dict[str, np.ndarray]) -> set[str]:
    """The graph inputs that are image batches (N, C <= 4, H >= 8, W >= 8) of floats."""
    return {t.name for t in m.inputs if feed[t.name].ndim == 4 and feed[t.name].dtype.kind == "f" and
            feed[t.name].shape[1] <= 4 and min(feed[t.name].shape[2:]) >= 8}


def recover(model: onnx.ModelProto, size: Sequence[int] | None, feed: dict[str, np.ndarray],
            ref: Sequence[np.ndarray], *, steps: int, metric: str = "top1", seed: int = 0, batch: int = 16,
            lr: float = 1e-5, device: str = "auto", say: Callable[[str], None] = lambda m: None,
            teacher: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, dict]:
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
    aug = None
    if teacher is not None:
        tm = load_proto(teacher, size)
        teach = tm.module.to(dev).eval()
        for p in teach.parameters():
            p.requires_grad_(False)
        names = _images(m, feed)
        ranges = {k: (torch.from_numpy(feed[k].min(axis=(0, 2, 3), keepdims=True)).to(dev),
                      torch.from_numpy(feed[k].max(axis=(0, 2, 3), keepdims=True)).to(dev)) for k in names}
        aug = (teach, ranges)
    with torch.enable_grad():
        while step < steps:
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(n, generator=gen)])
            idx, order = order[:batch], order[batch:]
            xs = graph_inputs(m, feed, idx.numpy(), dev)
            if aug is not None:
                xs = [augment(x, gen, *aug[1][t.name]) if t.name in aug[1] else x for t, x in zip(m.inputs, xs)]
                with torch.no_grad():
                    want = aug[0](*xs)
                want = list(want) if isinstance(want, (tuple, list)) else [want]
            else:
                want = [r[idx].to(dev) for r in refs]
            ys = module(*xs)
            ys = list(ys) if isinstance(ys, (tuple, list)) else [ys]
            loss = _loss(ys, want, metric in ("top1", "kl"))
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
            "lr": lr, "seed": seed, "device": str(dev), "augment": teacher is not None,
            "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-10:])) if losses else None,
            "seconds": time.monotonic() - t0, "tensors": len(mapping)}
    return write_back(model, mapping), info
