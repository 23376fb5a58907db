"""Conv + ReLU/ReLU6/Clip fused into one oneDNN kernel on the CPU (a speed trick, exact to the bit).

A CPU render is memory-bound (bench/RESULTS.md: MobileNetV2 moves ~4 GB per step at 2.3 FLOP/byte), and every
clamp after a convolution is one more read and write of its activation. oneDNN applies the clamp inside the
convolution (a post-op), which removes that pass and the pre-activation tensor the unfused backward keeps. Both
gradients are computed from the clamped output y: lo < y < hi exactly where lo < x < hi, y = lo exactly where
x <= lo, y = hi exactly where x >= hi, so the result is the unfused graph's, bit for bit. Only CPU float32 2-D
convolutions with zero padding are fused, and only where the kernel exists in this torch build and matches the
unfused result on a probe input. `fuse=False` in the render options (VIZCORE_FUSE=0) turns fusion off.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .relu import Switch, clamp_bounds, clamp_grad

_FUSED_OP = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def _post_op(lo: float | None, hi: float | None) -> tuple[str, list[float]] | None:
    """oneDNN's post-op for clamp(lo, hi): relu for [0, inf), hardtanh for finite bounds; None if neither fits."""
    if lo == 0.0 and hi is None:
        return "relu", []
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and lo < hi:
        return "hardtanh", [float(lo), float(hi)]
    return None


class _ConvClampFn(torch.autograd.Function):
    """y = clamp(conv2d(x, w, b), lo, hi) in one kernel; backward: `clamp_grad` on y, then the conv's backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d,
                post: tuple[str, list[float]], redirect: bool) -> torch.Tensor:
        attr, scalars = post
        y = _FUSED_OP(x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                      attr, scalars, "")
        ctx.save_for_backward(x, weight, y)
        ctx.conv, ctx.bounds, ctx.redirect = conv, ((0.0, None) if attr == "relu" else tuple(scalars)), redirect
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[Any, ...]:
        x, weight, y = ctx.saved_tensors
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        if not any(need):
            return None, None, None, None, None, None
        g = clamp_grad(gy, y, *ctx.bounds, redirect=ctx.redirect)
        c = ctx.conv
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, x, weight, [weight.shape[0]] if ctx.has_bias else None, list(c.stride), list(c.padding),
            list(c.dilation), False, [0] * len(c.padding), c.groups, need)
        return gx, gw, gb, None, None, None


class FusedConvClamp(nn.Module):
    """A Conv2d and the clamp after it: one oneDNN kernel on the CPU in float32, the two modules elsewhere."""

    def __init__(self, conv: nn.Conv2d, clamp: nn.Module, post: tuple[str, list[float]],
                 switch: Switch | None = None) -> None:
        super().__init__()
        self.conv, self.clamp, self.post, self.switch = conv, clamp, post, switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or self.conv.weight.dtype != torch.float32
                or _cpu_autocast()):
            return self.clamp(self.conv(x))
        redirect = bool(self.switch is not None and self.switch.on and x.requires_grad)
        return _ConvClampFn.apply(x, self.conv.weight, self.conv.bias, self.conv, self.post, redirect)


def _cpu_autocast() -> bool:
    try:
        return bool(torch.is_autocast_enabled("cpu"))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_cpu_enabled())


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.dtype == torch.float32)


_PROBED: dict[tuple[Any, ...], bool] = {}


def _probe_ok(conv: nn.Conv2d, post: tuple[str, list[float]], clamp: nn.Module) -> bool:
    """Whether the fused kernel runs here and gives the unfused values and input gradient on a small input
    (probed once per kind of convolution: dense, depthwise or grouped, kernel, stride, padding, dilation, post-op)."""
    key = (post[0], tuple(post[1]), conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups == 1,
           conv.groups == conv.in_channels, conv.bias is None, conv.weight.device.type)
    if key not in _PROBED:
        _PROBED[key] = _probe(conv, post, clamp)
    return _PROBED[key]


def _probe(conv: nn.Conv2d, post: tuple[str, list[float]], clamp: nn.Module) -> bool:
    try:
        g = torch.Generator().manual_seed(0)
        size = max(8, *(d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size)))
        x = torch.randn(2, conv.in_channels, size, size, generator=g).to(conv.weight.device)
        x = x.contiguous(memory_format=torch.channels_last)
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        with torch.enable_grad():
            ref = clamp(conv(x1))
            got = _ConvClampFn.apply(x2, conv.weight, conv.bias, conv, post, False)
            w = torch.randn(ref.shape, generator=g).to(ref.device)
            (ref * w).sum().backward()
            (got * w).sum().backward()

        def close(a: torch.Tensor, b: torch.Tensor) -> bool:
            a, b = a.detach(), b.detach()
            return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * (float(a.abs().max()) + 1.0)))

        return close(ref, got) and close(x1.grad, x2.grad)
    except Exception:  # noqa: BLE001  a kernel this build lacks or refuses: stay unfused
        return False


def fuse_conv_clamps(gm: torch.fx.GraphModule, switch: Switch | None = None, enabled: bool = True) -> int:
    """Replace each Conv2d -> clamp pair of a graph (the conv's only user) by a `FusedConvClamp`; returns how many.

    Call it after `redirect_relus` so fused pairs keep the override (`switch`). Graph outputs are unchanged: a
    conv whose raw output is used elsewhere (another user, a target layer) is not fused.
    """
    if _FUSED_OP is None or not enabled or not torch.backends.mkldnn.is_available():
        return 0
    n = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1 or len(src.args) != 1:
            continue
        clamp, conv = gm.get_submodule(node.target), gm.get_submodule(src.target)
        bounds = clamp_bounds(clamp)
        post = _post_op(*bounds) if bounds is not None else None
        if post is None or not _fusable(conv) or not _probe_ok(conv, post, clamp):
            continue
        name = f"{src.target.replace('.', '_')}_fused"
        while hasattr(gm, name):
            name += "_"
        gm.add_submodule(name, FusedConvClamp(conv, clamp, post, switch))
        with gm.graph.inserting_after(node):
            fused = gm.graph.call_module(name, (src.args[0],))
        node.replace_all_uses_with(fused)
        gm.graph.erase_node(node)
        gm.graph.erase_node(src)
        n += 1
    if n:
        gm.graph.lint()
        gm.recompile()
    return n
