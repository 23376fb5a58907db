"""Which layers and units an atlas shows.

`--auto` shows convolutions spread through the depth, each *before* its activation: the layers of
`vizcore.analysis.layers.default_layers` (the Convs the health check measures), taken at the input of the activation
that follows them. A bounded activation (ReLU6, as in MobileNetV2's `features.0.2/Clip`) saturates, so an image that
maximizes it is a flat colour field, and a ReLU hides how a unit answers what it dislikes; the linear response of the
convolution shows what the filter detects (edges and colours in the first layer). The health verdicts, measured after
the activation, attach to the same channels (`atlas.health`).

A first-layer unit (a convolution of the input itself, through elementwise ops only) is a linear filter of a few
pixels: the mean of its channel depends only on the image's mean colour, so maximizing it gives a flat colour field
whatever the filter. Its units are rendered as neurons (the channel at the centre position), which shows the filter's
edge or colour pattern; deeper units are rendered as whole channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..analysis.layers import CheckedLayer, default_layers
from ..errors import OptionError
from ..model import Layer, Model
from .cache import UnitSpec

#: Ops that carry pixels to a first-layer convolution without mixing positions (input normalization, casts).
ELEMENTWISE_OPS = frozenset({"Sub", "Div", "Mul", "Add", "Cast", "Identity", "Transpose", "Clip"})

#: `--auto`: how many layers, units per layer, steps and image size; measured to finish in minutes on 2 CPU cores.
AUTO_LAYERS = 6
AUTO_UNITS = 8
AUTO_STEPS = 64
AUTO_SIZE = 112
DEFAULT_UNITS = 8
DEFAULT_STEPS = 128
DEFAULT_SIZE = 128


def _spatial(layer: Layer) -> bool:
    """A (N, C, H, W) output with more than one position: a layer whose units have something to draw."""
    sh = layer.shape
    return sh is not None and len(sh) == 4 and sh[1] > 0 and sh[2] * sh[3] > 1


def _drawable(layer: Layer) -> bool:
    """A checked layer whose units the atlas can draw: an image or signal layer with more than one position, or
    the hidden units of a model without convolutions (its input is drawn whatever the layer's rank)."""
    sh = layer.shape
    return sh is not None and len(sh) >= 2 and sh[1] > 0 and (len(sh) == 2 or int(np.prod(sh[2:])) > 1)


def chain(model: Model, checked: CheckedLayer) -> list[Layer]:
    """The layers from a checked layer's convolution to its measured activation (e.g. Conv, BatchNorm, Relu): they
    share channels, so channel c of each is the same unit."""
    if checked.conv is None or checked.conv.index == checked.layer.index:
        return [checked.layer]
    by_output = {ly.output: ly for ly in model.layers}
    out = [checked.layer]
    for _ in range(3):  # default_layers looks through at most one BatchNorm
        if out[-1].index == checked.conv.index or not out[-1].inputs or out[-1].inputs[0] not in by_output:
            break
        out.append(by_output[out[-1].inputs[0]])
    return out[::-1] if out[-1].index == checked.conv.index else [checked.conv, checked.layer]


def pre_activation(model: Model, checked: CheckedLayer) -> Layer:
    """The layer the atlas shows for a checked layer: the input of its activation (the Conv, or a BatchNorm after
    it), or the layer itself when no activation follows."""
    path = chain(model, checked)
    return path[-2] if len(path) > 1 else path[0]


def spread(items: Sequence[Layer], count: int) -> list[Layer]:
    """About `count` of `items` evenly spaced from the first to the last."""
    if len(items) <= count:
        return list(items)
    if count <= 1:
        return [items[len(items) // 2]]
    idx = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})
    return [items[i] for i in idx]


def auto_layers(model: Model, count: int = AUTO_LAYERS) -> list[Layer]:
    """About `count` of the layers `vizcore check` looks at (convolutions; without them, dense layers with an
    activation), spread evenly through the depth, each before its activation (module docstring); when none can be
    drawn, the visual layers with more than one position."""
    picked = [pre_activation(model, c) for c in default_layers(model)]
    picked = [ly for ly in picked if _drawable(ly)]
    if not picked:
        picked = [ly for ly in model.layers if ly.visual and _spatial(ly)]
    return spread(picked, count)


def choose_layers(model: Model, keys: Sequence[str | int] | None, auto: bool) -> list[Layer]:
    """The layers named by `keys` (exactly those: names, output names or indices), else `auto_layers` with `auto`."""
    if keys:
        out: list[Layer] = []
        for k in keys:
            layer = model.layer(k)
            if layer.channels is None:
                raise OptionError(f"layer {layer.name!r} has no channel axis (shape {layer.shape})",
                                  "pick layers with channels; `vizcore inspect MODEL` lists them")
            if layer not in out:
                out.append(layer)
        return out
    return auto_layers(model) if auto else []


def parse_classes(text: str | Iterable[int] | None) -> list[int]:
    """Class indices from `1,9,130` (or an iterable of ints)."""
    if text is None:
        return []
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise OptionError(f"--classes {text!r} is not a list of class indices", "write e.g. --classes 1,9,130")
        return list(dict.fromkeys(int(p) for p in parts))
    return list(dict.fromkeys(int(c) for c in text))


def reads_input(model: Model, conv: Layer) -> bool:
    """Whether a convolution sees the model's input directly (through elementwise ops only)."""
    inputs = {t.name for t in model.inputs}
    by_output = {ly.output: ly for ly in model.layers}
    name = conv.inputs[0] if conv.inputs else ""
    for _ in range(8):
        if name in inputs:
            return True
        ly = by_output.get(name)
        if ly is None or ly.op_type not in ELEMENTWISE_OPS or not ly.inputs:
            return False
        name = ly.inputs[0]
    return False


def first_layers(model: Model) -> set[int]:
    """Indices of the layers whose units are first-layer filters: a convolution of the input, up to its activation."""
    return {ly.index for c in default_layers(model) if c.conv is not None and reads_input(model, c.conv)
            for ly in chain(model, c)}


def unit_specs(model: Model, chosen: list[Layer], n_units: int, class_ids: list[int]) -> list[UnitSpec]:
    """The first `n_units` channels of each chosen layer (first-layer filters as neurons, module docstring), then the
    chosen class logits (range-checked)."""
    first = first_layers(model) if chosen else set()
    specs = [UnitSpec("neuron" if layer.index in first else "channel", layer, c)
             for layer in chosen for c in range(min(n_units, layer.channels or 0))]
    if class_ids:
        logits = model.logits_layer()
        n = logits.channels
        bad = [c for c in class_ids if n is None or c >= n]
        if bad:
            raise OptionError(f"class {bad[0]} is out of range: the model has {n} classes",
                              f"use class indices 0..{(n or 1) - 1}")
        specs += [UnitSpec("class", logits, c) for c in class_ids]
    return specs
