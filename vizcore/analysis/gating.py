"""Which units can be "dead" at all: a unit is *gated* when a ReLU-like activation follows it, one that outputs a
flat floor for a whole region of inputs (ReLU, ReLU6 / Clip with a lower bound, HardSwish and HardSigmoid below -3,
GELU's negative tail). A *linear* unit (a Conv with no activation, BatchNorm, LeakyReLU, PReLU, ELU, Sigmoid, Tanh
...) has no such region: a small output on the probes is no evidence, and it is only broken when its weights are all
zero (an exact finding, `zero_weight_units`).

Also the facts a report names for a checked layer: the chain of nodes from the producing convolution to the
measured output (`Conv+BatchNormalization+Relu`), their names, the weight initializer, and the node just before the
gate (where the gradient ascent measures the unit, so a closed gate does not hide how far it is from opening).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..engine.relu import clamp_bounds
from ..errors import OptionError
from ..inputspace import InputSpace, resolve
from ..model import Layer, Model
from .layers import CheckedLayer, conv_module

#: Activations with a flat floor region, and the name a report gives the gate.
GATE_OPS = {"Relu": "relu", "Clip": "clip", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Gelu": "gelu"}


@dataclass(frozen=True)
class LayerFacts:
    """What a report says about a checked layer's structure."""

    chain: tuple[Layer, ...]  # producing conv ... measured layer, in graph order
    gate: str | None  # GATE_OPS value, or None: linear units
    pre: Layer | None  # the node feeding the gate (None: not gated, or the gate reads a graph input)
    weight: str | None  # the producing conv's weight initializer name

    @property
    def op_chain(self) -> str:
        """e.g. 'Conv+BatchNormalization+Relu'."""
        return "+".join(lay.op_type for lay in self.chain)

    @property
    def gated(self) -> bool:
        return self.gate is not None


def _producer(model: Model, tensor: str) -> Layer | None:
    try:
        lay = model.layer(tensor)
    except Exception:  # a graph input or an initializer: no producing layer
        return None
    return lay if lay.output == tensor else None


def _chain(model: Model, c: CheckedLayer) -> tuple[Layer, ...]:
    """The layers from c.conv to c.layer following first inputs (just the layer when they are not linked)."""
    if c.conv is None or c.conv is c.layer:
        return (c.layer,)
    out = [c.layer]
    cur = c.layer
    for _ in range(4):
        prev = _producer(model, cur.inputs[0]) if cur.inputs else None
        if prev is None:
            break
        out.append(prev)
        if prev.index == c.conv.index:
            return tuple(reversed(out))
        cur = prev
    return (c.conv, c.layer)


def _module(model: Model, layer: Layer) -> torch.nn.Module | None:
    for n in model.module.graph.nodes:
        if n.name == layer.fx_name and n.op == "call_module":
            return model.module.get_submodule(n.target)
    return None


def gate_of(model: Model, layer: Layer) -> str | None:
    """The gate kind of `layer`'s op, or None for a linear one (a Clip without a lower bound is not a gate)."""
    kind = GATE_OPS.get(layer.op_type)
    if kind != "clip":
        return kind
    mod = _module(model, layer)
    bounds = clamp_bounds(mod) if mod is not None else None
    if bounds is None:
        return "clip"  # bounds given as graph tensors: a Clip is a ReLU6 in almost every exported model
    lo, _ = bounds
    return "clip" if lo is not None and np.isfinite(lo) else None


def layer_facts(model: Model, c: CheckedLayer) -> LayerFacts:
    """The chain, gate, pre-gate node and weight name of one checked layer."""
    chain = _chain(model, c)
    gate = gate_of(model, c.layer)
    pre = None
    if gate is not None and c.layer.inputs:
        pre = _producer(model, c.layer.inputs[0])
    weight = c.conv.inputs[1] if c.conv is not None and len(c.conv.inputs) > 1 else None
    return LayerFacts(chain=chain, gate=gate, pre=pre, weight=weight)


def zero_weight_units(model: Model, c: CheckedLayer) -> list[int] | None:
    """Output channels of the producing convolution whose weights are all exactly zero (None: no weights known)."""
    mod = conv_module(model, c.conv)
    if mod is None:
        return None
    w = mod.weight.detach()
    if getattr(mod, "transposed", False):  # (in, out/groups, *k): output channels along dim 1 per group
        g = mod.groups
        w = w.reshape(g, w.shape[0] // g, *w.shape[1:]).transpose(1, 2).reshape(-1, w.shape[0] // g, *w.shape[2:])
    if c.layer.channels is not None and w.shape[0] != c.layer.channels:
        return None
    flat = w.reshape(w.shape[0], -1)
    return [int(i) for i in torch.nonzero((flat == 0).all(1)).reshape(-1).tolist()]


#: Ops whose output is never negative when every input is not (a ReLU's output passed on unchanged or averaged)
_KEEPS_SIGN = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Identity", "Dropout",
                         "Flatten", "Reshape", "Concat", "Relu"})


def _nonnegative(model: Model, tensor: str, depth: int = 8) -> bool:
    """Whether a tensor is >= 0 for every input: a ReLU's output, or pools/concats/reshapes of such outputs."""
    lay = _producer(model, tensor)
    if lay is None or depth == 0:
        return False
    if lay.op_type == "Relu":
        return True
    if lay.op_type == "Clip":
        mod = _module(model, lay)
        bounds = clamp_bounds(mod) if mod is not None else None
        return bounds is not None and bounds[0] is not None and bounds[0] >= 0
    if lay.op_type not in _KEEPS_SIGN or not lay.inputs:
        return False
    data = lay.inputs if lay.op_type == "Concat" else lay.inputs[:1]
    return all(_nonnegative(model, t, depth - 1) for t in data)


def _closed_after_relu(mod: torch.nn.Module) -> list[int]:
    """Units of a Conv/Gemm fed by a tensor that is never negative: every weight <= 0 and the bias <= 0 (padding
    feeds 0), so the output is <= 0 for every input."""
    w = mod.weight.detach()
    shut = (w.reshape(w.shape[0], -1) <= 0).all(1)
    if mod.bias is not None:
        shut &= mod.bias.detach() <= 0
    return [int(i) for i in torch.nonzero(shut).reshape(-1).tolist()]


def closed_for_every_input(model: Model, c: CheckedLayer, facts: LayerFacts, space: InputSpace | None = None
                           ) -> list[int]:
    """Units of a ReLU-gated Conv or Gemm (the ReLU right after it) that no input can open. For a first layer (it
    reads the optimized input directly): bias + sum of max(w*lo, w*hi) over the input box is <= 0, the box being
    the input range after the model's mean/std (`space`, default: the model's own), and 0 for a convolution's
    padding. For a layer fed by a ReLU's output (never negative): every weight and the bias <= 0."""
    if facts.gate != "relu" or len(facts.chain) != 2 or c.conv is None:
        return []
    if c.conv.inputs and _nonnegative(model, c.conv.inputs[0]):
        mod = _module(model, c.conv)
        ok = isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))
        return _closed_after_relu(mod) if ok and mod.weight.shape[0] == c.layer.channels else []
    if model.optimized is not None:
        return []
    if not c.conv.inputs or c.conv.inputs[0] != model.input.name or len(model.inputs) != 1:
        return []
    if model.layout is not None and not (model.layout.identity or model.layout.name == "NF"):
        return []
    mod = _module(model, c.conv)
    if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) or getattr(mod, "groups", 1) != 1:
        return []
    w = mod.weight.detach().double()
    chans = w.shape[1]
    try:
        lo, hi = (torch.from_numpy(v) for v in (space or resolve(model)).box(chans))
    except OptionError:  # mean/std given for another channel count: no bound, no claim
        return []
    if isinstance(mod, torch.nn.Conv1d | torch.nn.Conv2d):  # zero padding can feed a 0 as well
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    shape = (1, chans) + (1,) * (w.dim() - 2)
    top = torch.maximum(w * lo.view(shape), w * hi.view(shape)).reshape(w.shape[0], -1).sum(1)
    if mod.bias is not None:
        top = top + mod.bias.detach().double()
    return [int(i) for i in torch.nonzero(top <= 0).reshape(-1).tolist()]
