"""Objectives: what gradient ascent maximizes, composable with arithmetic as in Lucid (`a + 0.5 * b`, `-c`).

An Objective names the layers it reads (`targets`) and maps their activations, a dict {layer index: tensor of
shape (k, C, ...)}, to one value per image (k,). Bind it to a model (`bind`) to resolve names and check ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from .errors import OtherInputError, TargetError
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .model import Layer, Model

Acts = dict[int, torch.Tensor]
LayerKey = "str | int"


def _spatial_mean(a: torch.Tensor) -> torch.Tensor:
    """Mean over every dim after the first (the batch): (k, ...) -> (k,)."""
    return a.flatten(1).mean(1) if a.dim() > 1 else a


class Objective:
    """Base class: subclasses set `keys` (layer keys before binding) and implement `value`."""

    kind = "custom"
    keys: tuple[Any, ...] = ()

    def __init__(self) -> None:
        self.layers: tuple[Layer, ...] = ()

    # -- binding ------------------------------------------------------------------------------------------------
    def bind(self, model: Model) -> Objective:
        """Resolve layer keys against `model` and validate parameters; returns self."""
        self.layers = tuple(model.layer(k) for k in self.keys)
        for l in self.layers:  # refused up front: no gradient could ever reach the input
            if hasattr(model, "depends_on_input") and not model.depends_on_input(l):
                other = [n for n in model.inputs_reaching(l) if any(t.name == n and t.is_float for t in model.inputs)]
                error = partial(OtherInputError, input=other[0], layer=l.name) if other else TargetError
                raise error(f"layer {l.name!r} does not depend on the input {model.input.name!r}" + (
                    f" (it depends on input {other[0]!r})" if other else "") + ": gradient ascent cannot change it",
                    f"optimize that input: --input-node {other[0]} (load(path, input={other[0]!r}))" if other else
                    "pick a layer downstream of the input (vizcore inspect)")
        self._check(model)
        return self

    def _check(self, model: Model) -> None:
        """Validate parameters against the bound layers (channel ranges, ...)."""

    @property
    def targets(self) -> tuple[int, ...]:
        """Indices of the layers this objective reads (after `bind`)."""
        return tuple(l.index for l in self.layers)

    @property
    def layer(self) -> Layer | None:
        """The single layer this objective reads, if there is exactly one."""
        return self.layers[0] if len(self.layers) == 1 else None

    channel: int | None = None

    def value(self, acts: Acts) -> torch.Tensor:
        """One value per image: (k,)."""
        raise NotImplementedError

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.value(acts)

    @property
    def label(self) -> str:
        """A short human-readable description."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<Objective {self.label}>"

    # -- algebra ------------------------------------------------------------------------------------------------
    def __add__(self, other: Objective | float) -> Objective:
        return Sum([self, as_objective(other)])

    def __radd__(self, other: Objective | float) -> Objective:
        return self if isinstance(other, (int, float)) and other == 0 else Sum([as_objective(other), self])

    def __sub__(self, other: Objective | float) -> Objective:
        return Sum([self, Scaled(as_objective(other), -1.0)])

    def __rsub__(self, other: Objective | float) -> Objective:
        return Sum([as_objective(other), Scaled(self, -1.0)])

    def __neg__(self) -> Objective:
        return Scaled(self, -1.0)

    def __mul__(self, w: float) -> Objective:
        if not isinstance(w, (int, float)):
            return NotImplemented
        return Scaled(self, float(w))

    __rmul__ = __mul__

    def __truediv__(self, w: float) -> Objective:
        if not isinstance(w, (int, float)):
            return NotImplemented
        return Scaled(self, 1.0 / float(w))


class Constant(Objective):
    """A constant (so `obj + 1` works); reads no layer."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = float(c)

    def value(self, acts: Acts) -> torch.Tensor:
        k = next(iter(acts.values())).shape[0] if acts else 1
        ref = next(iter(acts.values())) if acts else torch.zeros(1)
        return torch.full((k,), self.c, dtype=ref.dtype, device=ref.device)

    @property
    def label(self) -> str:
        return f"{self.c:g}"


class Sum(Objective):
    """The sum of several objectives."""

    def __init__(self, parts: Sequence[Objective]) -> None:
        super().__init__()
        flat: list[Objective] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Sum) else [p])
        self.parts = flat

    def bind(self, model: Model) -> Objective:
        for p in self.parts:
            p.bind(model)
        seen: dict[int, Layer] = {}
        for p in self.parts:
            for l in p.layers:
                seen.setdefault(l.index, l)
        self.layers = tuple(seen.values())
        return self

    def value(self, acts: Acts) -> torch.Tensor:
        return sum(p.value(acts) for p in self.parts)  # type: ignore[return-value]

    @property
    def label(self) -> str:
        return " + ".join(p.label for p in self.parts).replace("+ -", "- ")


class Scaled(Objective):
    """An objective times a constant weight."""

    def __init__(self, inner: Objective, w: float) -> None:
        super().__init__()
        self.inner, self.w = (inner.inner, inner.w * w) if isinstance(inner, Scaled) else (inner, w)

    def bind(self, model: Model) -> Objective:
        self.inner.bind(model)
        self.layers = self.inner.layers
        return self

    def value(self, acts: Acts) -> torch.Tensor:
        return self.w * self.inner.value(acts)

    @property
    def label(self) -> str:
        if self.w == -1:
            return f"-{self.inner.label}"
        return f"{self.w:g}*{self.inner.label}"


def as_objective(x: Objective | float) -> Objective:
    """An Objective from an Objective or a number."""
    if isinstance(x, Objective):
        return x
    if isinstance(x, (int, float)):
        return Constant(x)
    raise TypeError(f"cannot combine an objective with {type(x).__name__}")


def _check_channel(layer: Layer, ch: int) -> None:
    n = layer.channels
    if n is None:
        raise TargetError(f"layer {layer.name!r} has no channel dimension (shape {layer.shape})",
                          "pick a layer with a channel axis (see `vizcore inspect`)")
    if not 0 <= ch < n:
        raise TargetError(f"channel {ch} is out of range for layer {layer.name!r}: it has {n} channels (0..{n - 1})",
                          f"use a channel between 0 and {n - 1}")


class Channel(Objective):
    """Mean activation of one channel over all positions (Olah 2017's channel objective)."""

    kind = "channel"

    def __init__(self, layer: LayerKey, channel: int) -> None:
        super().__init__()
        self.keys = (layer,)
        self.channel = int(channel)

    def _check(self, model: Model) -> None:
        _check_channel(self.layers[0], self.channel)

    def value(self, acts: Acts) -> torch.Tensor:
        return _spatial_mean(acts[self.layers[0].index][:, self.channel])

    @property
    def label(self) -> str:
        return f"{self.layers[0].index if self.layers else self.keys[0]}:{self.channel}"


class Neuron(Objective):
    """One channel at one spatial position (default: the centre)."""

    kind = "neuron"

    def __init__(self, layer: LayerKey, channel: int, x: int | None = None, y: int | None = None) -> None:
        super().__init__()
        self.keys = (layer,)
        self.channel, self.x, self.y = int(channel), x, y

    def _check(self, model: Model) -> None:
        layer = self.layers[0]
        _check_channel(layer, self.channel)
        spatial = layer.shape[2:] if layer.shape else ()
        if not spatial:
            if self.x is not None:
                raise TargetError(f"layer {layer.name!r} has no spatial positions", "drop the @X,Y part")
            return
        for v, n, axis in ((self.x, spatial[-1], "x"), (self.y, spatial[0] if len(spatial) > 1 else None, "y")):
            if v is not None and n is not None and not 0 <= v < n:
                raise TargetError(f"position {axis}={v} is outside layer {layer.name!r} ({n} positions at the "
                                  "default input size)", f"use 0..{n - 1}")

    def value(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layers[0].index][:, self.channel]
        if a.dim() == 1:
            return a
        if a.dim() == 2:  # (k, L)
            return a[:, a.shape[1] // 2 if self.x is None else min(self.x, a.shape[1] - 1)]
        h, w = a.shape[-2], a.shape[-1]
        x = w // 2 if self.x is None else min(self.x, w - 1)
        y = h // 2 if self.y is None else min(self.y, h - 1)
        return a[..., y, x].flatten(1).mean(1) if a.dim() > 3 else a[:, y, x]

    @property
    def label(self) -> str:
        pos = "" if self.x is None else f"@{self.x},{self.y if self.y is not None else self.x}"
        return f"{self.layers[0].index if self.layers else self.keys[0]}:{self.channel}{pos}"


class DeepDream(Objective):
    """Mean squared activation of a whole layer (Mordvintsev 2015): amplify whatever the layer sees."""

    kind = "layer"

    def __init__(self, layer: LayerKey) -> None:
        super().__init__()
        self.keys = (layer,)

    def value(self, acts: Acts) -> torch.Tensor:
        return _spatial_mean(acts[self.layers[0].index] ** 2)

    @property
    def label(self) -> str:
        return f"deepdream({self.layers[0].index if self.layers else self.keys[0]})"


class ClassLogit(Objective):
    """One logit of a graph output; if the output is a Softmax, the pre-softmax value (Lucid's class_logit)."""

    kind = "class"

    def __init__(self, index: int, output: str | None = None) -> None:
        super().__init__()
        self.channel, self.output = int(index), output

    def bind(self, model: Model) -> Objective:
        self.layers = (model.logits_layer(self.output),)
        self.keys = (self.layers[0].index,)
        _check_channel(self.layers[0], self.channel)
        return self

    def value(self, acts: Acts) -> torch.Tensor:
        return _spatial_mean(acts[self.layers[0].index][:, self.channel])

    @property
    def label(self) -> str:
        return f"class:{self.channel}" if self.output is None else f"{self.output}:{self.channel}"


class Direction(Objective):
    """Activation along a direction in channel space (dot product with a unit vector), averaged over positions."""

    kind = "direction"

    def __init__(self, layer: LayerKey, vector: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        self.keys = (layer,)
        v = torch.as_tensor(vector, dtype=torch.float32).flatten()
        self.vector = v / v.norm().clamp_min(1e-12)

    def _check(self, model: Model) -> None:
        n = self.layers[0].channels
        if n != self.vector.numel():
            raise TargetError(f"direction has {self.vector.numel()} components but layer {self.layers[0].name!r} "
                              f"has {n} channels", "give one component per channel")

    def value(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layers[0].index]
        v = self.vector.to(a.device, a.dtype).view(1, -1, *([1] * (a.dim() - 2)))
        return _spatial_mean((a * v).sum(1, keepdim=True))

    @property
    def label(self) -> str:
        return f"direction({self.layers[0].index if self.layers else self.keys[0]})"


class Diversity(Objective):
    """Pushes the images rendered for one unit apart (Olah 2017): minus their mean pairwise Gram-matrix similarity."""

    kind = "custom"

    def __init__(self, layer: LayerKey) -> None:
        super().__init__()
        self.keys = (layer,)

    def value(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layers[0].index]
        k = a.shape[0]
        if k < 2:
            return torch.zeros(k, dtype=a.dtype, device=a.device)
        f = a.flatten(2)
        gram = torch.nn.functional.normalize((f @ f.transpose(1, 2)).flatten(1), dim=1)
        sim = gram @ gram.T
        return -(sim.sum(1) - sim.diagonal()) / (k - 1)

    @property
    def label(self) -> str:
        return f"diversity({self.layers[0].index if self.layers else self.keys[0]})"


def batch_values(objectives: Sequence[Objective], acts: Acts, per_unit: int) -> torch.Tensor:
    """Values for a batch where unit i owns images [i*per_unit, (i+1)*per_unit): shape (len(objectives)*per_unit,).

    Plain channel objectives on one layer (the common `LAYER:all` case) are computed in one gather, with no
    Python loop over units; anything else falls back to one call per unit.
    """
    first = objectives[0]
    if type(first) is Channel and all(type(o) is Channel and o.layers == first.layers for o in objectives):
        a = acts[first.layers[0].index]
        # built on the host and copied without blocking: no device sync on the step path
        idx = torch.tensor([o.channel for o in objectives]).repeat_interleave(per_unit).to(a.device, non_blocking=True)
        picked = a[torch.arange(a.shape[0], device=a.device), idx]
        return _spatial_mean(picked)
    return torch.cat([o.value({k: v[i * per_unit:(i + 1) * per_unit] for k, v in acts.items()})
                      for i, o in enumerate(objectives)])


BUILTIN: dict[str, Callable[..., Objective]] = {
    "channel": Channel,
    "neuron": Neuron,
    "deepdream": DeepDream,
    "layer": DeepDream,
    "class": ClassLogit,
    "direction": Direction,
    "diversity": Diversity,
}


@hookimpl
def vizcore_add_objectives() -> dict[str, Callable[..., Objective]]:
    return dict(BUILTIN)


# Lucid-style lower-case constructors for the Python API.
channel = Channel
neuron = Neuron
deepdream = DeepDream
class_logit = ClassLogit
direction = Direction
diversity = Diversity
