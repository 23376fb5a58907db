"""Which layers a check looks at: by default the output of every Conv (and ConvTranspose), after its activation when
one follows it.

A checked layer pairs the layer whose output is measured (dead/constant units) with the convolution whose weights
are compared (duplicate filters); either may be missing for user-chosen layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..errors import OptionError
from ..model import ACTIVATION_OPS, Layer, Model

CONV_OPS = frozenset({"Conv", "ConvTranspose", "FusedConv", "QLinearConv", "ConvInteger"})
#: Dense layers: checked by default when a model has no convolution (an MLP, a tabular or text model).
DENSE_OPS = frozenset({"Gemm", "MatMul", "FusedGemm", "QGemm", "QLinearMatMul", "MatMulInteger"})
#: Ops between a Conv and its activation that do not change which channel is which.
PASS_THROUGH_OPS = frozenset({"BatchNormalization"})
#: ... and between a dense layer and its activation (a MatMul's bias is an Add).
DENSE_PASS_THROUGH_OPS = PASS_THROUGH_OPS | {"Add"}


@dataclass(frozen=True)
class CheckedLayer:
    """A measured layer (`layer`) and the convolution that produced it (`conv`, None if there is none)."""

    layer: Layer
    conv: Layer | None
    chosen: str | None = None  # the key the user gave (`--layers`), when it named another layer than `layer`

    @property
    def name(self) -> str:
        """The name reports use: the measured layer's."""
        return self.layer.name

    @property
    def label(self) -> str:
        """Op types along the path, e.g. 'Conv+Relu'."""
        if self.conv is None or self.conv is self.layer:
            return self.layer.op_type
        return f"{self.conv.op_type}+{self.layer.op_type}"


def _consumers(model: Model) -> dict[str, list[Layer]]:
    out: dict[str, list[Layer]] = {}
    for lay in model.layers:
        for t in lay.inputs:
            out.setdefault(t, []).append(lay)
    return out


def _follow(model: Model, conv: Layer, consumers: dict[str, list[Layer]], graph_outputs: set[str],
            through: frozenset[str] = PASS_THROUGH_OPS) -> Layer:
    """The activation that directly follows `conv` (through a BatchNormalization, or the ops `through`), else
    `conv` itself."""
    cur = conv
    for _ in range(2):
        nxt = consumers.get(cur.output, [])
        if cur.output in graph_outputs or len(nxt) != 1:
            return conv
        n = nxt[0]
        if cur.output not in (n.inputs[:2] if n.op_type == "Add" else n.inputs[:1]):  # a bias Add: either side
            return conv
        if n.shape != cur.shape:
            return conv
        if n.op_type in ACTIVATION_OPS:
            return n
        if n.op_type not in through:
            return conv
        cur = n
    return conv


def default_layers(model: Model) -> list[CheckedLayer]:
    """Every Conv of the model with a channel dimension, measured after its activation when one follows it; a
    model without convolutions: every dense layer (Gemm, MatMul) that an activation follows, measured there (the
    hidden units of an MLP; logits, with no activation, are not units that can die)."""
    consumers = _consumers(model)
    outs = {o.name for o in model.outputs}
    convs = [CheckedLayer(_follow(model, c, consumers, outs), c) for c in model.layers
             if c.op_type in CONV_OPS and c.channels]
    if convs or not model.has_float_input:  # token ids only: no input to probe or ascend (see --input-node)
        return convs
    dense = [(_follow(model, d, consumers, outs, DENSE_PASS_THROUGH_OPS), d) for d in model.layers
             if d.op_type in DENSE_OPS and d.channels and model.depends_on_input(d)]
    return [CheckedLayer(m, d) for m, d in dense if m is not d]


#: `--layers KEY:linear` measures a Conv's or dense layer's own (linear) output instead of its activation.
LINEAR = ":linear"


def resolve_key(model: Model, key: str | int) -> CheckedLayer:
    """One `--layers` key as the check reads it: a Conv or dense layer (a row of `vizcore inspect`) means its units,
    measured after the activation that follows it, as in the default check (a linear output has no dead units);
    `KEY:linear` keeps the layer's own output; any other layer is measured as it is."""
    text = str(key)
    linear = text.endswith(LINEAR) and text not in {lay.name for lay in model.layers}
    lay = model.layer(text[:-len(LINEAR)] if linear else key)
    if lay.op_type in CONV_OPS or lay.op_type in DENSE_OPS:
        through = PASS_THROUGH_OPS if lay.op_type in CONV_OPS else DENSE_PASS_THROUGH_OPS
        measured = lay if linear else _follow(model, lay, _consumers(model), {o.name for o in model.outputs}, through)
        return CheckedLayer(measured, lay, text if measured is not lay else None)
    by_measured = {c.layer.index: c.conv for c in default_layers(model)}
    return CheckedLayer(lay, by_measured.get(lay.index))


def select_layers(model: Model, keys: Sequence[str | int] = ()) -> list[CheckedLayer]:
    """The layers to check: `keys` (names, output names or indices, see `resolve_key`) or, if empty,
    `default_layers`. A chosen activation that directly follows a Conv gets that Conv's weights for the duplicate
    search; two keys that mean the same measured tensor are checked once."""
    if not keys:
        return default_layers(model)
    chosen: list[CheckedLayer] = []
    seen: set[int] = set()
    for k in keys:
        c = resolve_key(model, k)
        if not c.layer.channels:
            raise OptionError(f"layer {c.layer.name!r} ({c.layer.op_type}) has no channel dimension to check",
                              "choose a layer with an (N, C, ...) output; see `vizcore inspect MODEL`")
        if c.layer.index not in seen:
            seen.add(c.layer.index)
            chosen.append(c)
    return chosen


def conv_module(model: Model, conv: Layer | None) -> nn.Module | None:
    """The torch convolution module for a Conv layer (None if the converter did not make one)."""
    if conv is None:
        return None
    for n in model.module.graph.nodes:
        if n.name == conv.fx_name:
            if n.op != "call_module":
                return None
            mod = model.module.get_submodule(n.target)
            return mod if isinstance(mod, nn.modules.conv._ConvNd) else None
    return None
