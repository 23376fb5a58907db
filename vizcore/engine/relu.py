"""Lucid's ReLU gradient override for ReLU / ReLU6 / Clip on the render path.

A unit whose every ReLU is closed for an image gets no gradient at all; for such images the override also lets the
gradient through where it would move the input back into [lo, hi] (Lucid's "ReLU gradient override"), only on the
steps where the render's `Switch` is on.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..onnx_compat.converters.quantized import Saturating


class Switch:
    """On during the steps that use the ReLU gradient override."""

    on = False


def clamp_bounds(m: nn.Module) -> tuple[float | None, float | None] | None:
    """(lo, hi) of a ReLU-like module (None for a missing bound), or None if it is not one."""
    if isinstance(m, Redirected):
        return m.lo, m.hi
    if isinstance(m, nn.ReLU):
        return 0.0, None
    if isinstance(m, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(m, nn.Hardtanh):
        return float(m.min_val), float(m.max_val)
    if type(m).__name__ == "OnnxClip":
        lo, hi = getattr(m, "min_val", None), getattr(m, "max_val", None)
        try:
            return (None if lo is None else float(lo)), (None if hi is None else float(hi))
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def clamp_grad(g: torch.Tensor, t: torch.Tensor, lo: float | None, hi: float | None, redirect: bool,
               early_exit: bool | None = None) -> torch.Tensor:
    """The gradient of clamp(x, lo, hi) given `t` = its input x or its output (the same masks follow from either).

    With `redirect`, images whose true gradient here is all zero also get the gradient where it would move x back
    into [lo, hi]; images that already get a gradient through this op keep the true one (un-block, never mislead).
    `early_exit` (default: on the CPU only) returns the true gradient at once when no image is blocked.
    """
    if lo is None and hi is None:
        return g
    if hi is None:  # the true gradient, in one fused pass each (ReLU's and clamp's own backward kernels)
        true_g = torch.ops.aten.threshold_backward(g, t, lo)
    else:
        true_g = torch.ops.aten.hardtanh_backward(g, t, -math.inf if lo is None else lo, hi)
    if not redirect:
        return true_g
    dims = tuple(range(1, g.dim()))  # amax and amin are fast reductions on CPU (vector_norm is 5x slower)
    flows = (true_g.amax(dims) != 0) | (true_g.amin(dims) != 0) if dims else true_g != 0
    # the usual case, no image blocked here: return early on the CPU; on a GPU that test would wait for the device
    # at every ReLU of every override step, so the masks below run anyway (they then give true_g, value for value)
    if (g.device.type == "cpu" if early_exit is None else early_exit) and bool(flows.all()):
        return true_g
    # loss = -objective is minimized: g < 0 pushes x up, g > 0 pushes x down; a blocked image also gets the
    # gradient where it would move x back into [lo, hi].
    inside = (t > lo) if lo is not None else None
    if hi is not None:
        inside = t < hi if inside is None else inside & (t < hi)
    back = None
    if lo is not None:
        back = (t <= lo) & (g < 0)
    if hi is not None:
        back = (t >= hi) & (g > 0) if back is None else back | ((t >= hi) & (g > 0))
    blocked = (~flows).view(-1, *([1] * (g.dim() - 1)))
    return torch.where(inside | (back & blocked), g, 0)


class RedirectedClamp(torch.autograd.Function):
    """clamp(x, lo, hi) whose backward is `clamp_grad(..., redirect=True)`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return torch.clamp(x, lo, hi)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return clamp_grad(g, x, ctx.lo, ctx.hi, redirect=True), None, None


class Redirected(nn.Module):
    """Wraps a ReLU-like module; while the switch is on, its zero-gradient region passes useful gradients."""

    def __init__(self, inner: nn.Module, lo: float | None, hi: float | None, switch: Switch) -> None:
        super().__init__()
        self.inner, self.lo, self.hi, self.switch = inner, lo, hi, switch

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        if self.switch.on and x.requires_grad:
            return RedirectedClamp.apply(x, self.lo, self.hi)
        return self.inner(x, *args)


class RedirectedSaturate:
    """A quantized module's saturation clamp(x, qmin, qmax) with the override while the switch is on."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch

    def __call__(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        if self.switch.on and x.requires_grad:
            return RedirectedClamp.apply(x, float(lo), float(hi))
        return torch.clamp(x, lo, hi)


def redirect_relus(gm: torch.fx.GraphModule, switch: Switch) -> int:
    """Replace ReLU/ReLU6/Clip modules of a cut graph by redirected ones, and quantized modules by copies whose
    saturation at [qmin, qmax] is redirected (a Relu absorbed into a requantization is that clamp). The model's own
    modules are untouched (the copies share their buffers)."""
    n = 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        bounds = clamp_bounds(m)
        if bounds is not None and len(node.args) == 1:
            setattr(gm, node.target, Redirected(m, *bounds, switch))
            n += 1
        elif isinstance(m, Saturating):
            twin = copy.copy(m)
            twin.saturate = RedirectedSaturate(switch)
            setattr(gm, node.target, twin)
            n += 1
    return n
