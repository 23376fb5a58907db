"""Receptive fields of layers, kept as offsets that place a box around any position of a layer's output.

Derived from the graph where the arithmetic can follow it (`analytic`: Conv and pooling windows from their torch
modules' kernel, stride, padding and dilation, composed along the converted graph; elementwise ops and
channel concatenation take the union of their inputs' fields; a global pool or a dense layer sees the whole input),
and measured elsewhere (`measured`): the input region whose gradient with respect to the layer's output at its
centre position is non-zero (one forward, one backward per layer, on a seeded noise input). The measured field works
for any graph the converter handles but is a lower bound where gates are closed on the noise input (a ReLU at 0, a
max-pool's losing inputs; the sum over every channel at the centre keeps that rare), and a backward per layer is
most of an exemplar pass's fixed cost on a CPU (bench/RESULTS.md); the derived one is exact and free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    """The receptive field of every layer (by index) for inputs of `shape` (N, C, *spatial): None for a layer
    without spatial dims; derived from the graph where it can be (`analytic`), else measured (`measured`).
    `space`: the inputs are 0..1 images mapped by it (None: model units)."""
    spatial = tuple(int(d) for d in shape[2:])
    derived = analytic(model, layers, spatial)
    rest = [lay for lay in layers if lay.index not in derived]
    return {**derived, **(measured(model, rest, shape, space, seed) if rest else {})}


def measured(model: Model, layers: Sequence[Layer], shape: Sequence[int], space: InputSpace | None,
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


#: Ops whose output at a position depends on their inputs at that position only (or, for Concat along channels,
#: on one of them there): the field is the union of their inputs' fields.
POINTWISE = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Mul", "Add", "Sub", "Div",
    "BatchNormalization", "Identity", "Cast", "Dropout", "Elu", "Selu", "PRelu", "Softplus", "Erf", "Sqrt", "Pow",
    "Neg", "Abs", "Exp", "Log", "Max", "Min", "Sum", "Mean", "Mish", "Gelu", "Reciprocal", "Sign", "Floor", "Ceil",
    "Round", "QuantizeLinear", "DequantizeLinear", "Concat"})
#: Ops whose every output sees the whole input.
WHOLE_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Gemm"})
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool"})
WHOLE = "whole"
_Box = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]  # lo, hi, stride per spatial dim


def _per_dim(v: int | Sequence[int], d: int) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * d


def _params(mod: torch.nn.Module, d: int) -> tuple[tuple[int, ...], ...] | None:
    """(kernel, stride, begin padding, dilation) per spatial dim of a Conv or pooling module (torch's, or the
    converter's `OnnxPool` with explicit pads); None for any other module."""
    conv = isinstance(mod, torch.nn.modules.conv._ConvNd)
    if conv or isinstance(mod, (torch.nn.modules.pooling._MaxPoolNd, torch.nn.modules.pooling._AvgPoolNd)):
        if conv and (mod.transposed or isinstance(mod.padding, str)):
            return None
        return (_per_dim(mod.kernel_size, d), _per_dim(mod.stride or mod.kernel_size, d), _per_dim(mod.padding, d),
                _per_dim(getattr(mod, "dilation", 1), d))
    if type(mod).__name__ == "OnnxPool" and getattr(mod, "auto_pad", "") in ("NOTSET", "VALID", ""):
        return (tuple(mod.kernel), tuple(mod.strides), tuple(int(b) for b, _ in mod.pairs), tuple(mod.dilations))
    return None


def _window(f: _Box, mod: torch.nn.Module) -> _Box | None:
    """The field after a Conv or pooling module (None: not one whose window the arithmetic knows)."""
    d = len(f[0])
    got = _params(mod, d)
    if got is None or any(len(v) != d for v in got):
        return None
    k, st, pad, dil = got
    lo = tuple(a - p * s for a, p, s in zip(f[0], pad, f[2]))
    hi = tuple(b + (di * (kk - 1) - p) * s for b, di, kk, p, s in zip(f[1], dil, k, pad, f[2]))
    return lo, hi, tuple(s * t for s, t in zip(f[2], st))


def _union(fields: list[Any]) -> Any:
    if any(f is WHOLE for f in fields):
        return WHOLE
    if len({f[2] for f in fields}) != 1:
        return None
    return (tuple(min(v) for v in zip(*(f[0] for f in fields))), tuple(max(v) for v in zip(*(f[1] for f in fields))),
            fields[0][2])


def _step(node: Any, lay: Layer | None, ins: list[Any], mods: dict[str, Any]) -> Any:
    """The field of one graph node from its input-derived inputs' fields (None: unknown)."""
    if lay is None or any(f is None for f in ins):
        return None
    if lay.op_type in WINDOW_OPS:
        return _window(ins[0], mods[node.target]) if len(ins) == 1 and node.op == "call_module" and \
            ins[0] is not WHOLE else (WHOLE if ins == [WHOLE] else None)
    if lay.op_type == "Concat" and getattr(mods.get(str(node.target)), "axis", None) not in (1, -len(ins[0][0]) - 1):
        return None
    if lay.op_type in POINTWISE:
        return _union(ins)
    return WHOLE if lay.op_type in WHOLE_OPS else None


def analytic(model: Model, layers: Sequence[Layer], spatial: tuple[int, ...]) -> dict[int, Field | None]:
    """The fields the graph arithmetic can follow, by layer index (a layer it cannot follow is left out; a layer
    without spatial dims is None). `spatial`: the input's spatial size."""
    d = len(spatial)
    by_fx = {lay.fx_name: lay for lay in model.layers}
    mods = dict(model.module.named_modules())
    holders = [n for n in model.module.graph.nodes if n.op == "placeholder"]
    i = len(model.inputs) if model.optimized is not None else model.inputs.index(model.input)
    state: dict[Any, Any] = {holders[i]: ((0.0,) * d, (1.0,) * d, (1.0,) * d)} if i < len(holders) else {}
    for n in model.module.graph.nodes:
        ins = [state[a] for a in n.all_input_nodes if a in state]
        if ins and n not in state:
            state[n] = _step(n, by_fx.get(n.name), ins, mods)
    nodes = {n.name: n for n in model.module.graph.nodes}
    out: dict[int, Field | None] = {}
    for lay in layers:
        f = state.get(nodes.get(lay.fx_name))
        if lay.shape is None or len(lay.shape) <= 2 or not d:
            out[lay.index] = None
        elif f is WHOLE:
            out[lay.index] = Field((-1e9,) * d, (1e9,) * d, (1.0,) * d, spatial)
        elif f is not None and len(lay.shape) == d + 2:
            out[lay.index] = Field(f[0], f[1], f[2], spatial)
    return out
