"""Target strings -> objectives: the shorthand shared by the CLI and the Python API.

    LAYER:CH        channel CH of LAYER (mean activation)
    LAYER:CH@X,Y    one neuron: channel CH at position (X, Y) of the layer's output
    LAYER:A-B       channels A..B, one image each;  LAYER:all  every channel
    LAYER           DeepDream on the whole layer
    class:IDX       logit IDX of the single output (pre-softmax);  OUTPUT:IDX  of a named output
    NAME:LAYER[:ARGS]  a plugin objective NAME (see `vizcore plugins`), ARGS comma-separated numbers
LAYER is a layer name, output tensor name or index, as `vizcore inspect` prints them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import LayerNotFoundError, TargetError
from .objectives import Channel, ClassLogit, DeepDream, Neuron, Objective

if TYPE_CHECKING:
    from .model import Model

GRAMMAR = "targets look like LAYER:CH, LAYER:CH@X,Y, LAYER:A-B, LAYER:all, LAYER, class:IDX or OUTPUT:IDX"
_CH = re.compile(r"^(\d+)$")
_RANGE = re.compile(r"^(\d+)-(\d+)$")
_NEURON = re.compile(r"^(\d+)@(\d+)(?:,(\d+))?$")
_BUILTIN_NAMES = {"channel", "neuron", "deepdream", "layer", "class", "direction", "diversity"}


def _number(s: str) -> int | float:
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError as exc:
            raise TargetError(f"{s!r} is not a number", GRAMMAR) from exc


def _is_layer(model: Model, key: str) -> bool:
    try:
        model.layer(key)
        return True
    except LayerNotFoundError:
        return False


#: Objective factories by name (a plugin manager's "objectives" registry): name -> callable(layer, *args).
Factories = Mapping[str, Callable[..., Any]]


def _plugin_objective(model: Model, factory: Callable[..., Any], name: str, rest: str) -> Objective:
    layer, _, args = rest.partition(":") if not _is_layer(model, rest) else (rest, "", "")
    params = [_number(a) for a in args.split(",") if a.strip()] if args else []
    obj = factory(layer, *params)
    if not isinstance(obj, Objective):
        raise TargetError(f"objective {name!r} returned {type(obj).__name__}, not an Objective",
                          "the plugin that provides it is broken")
    return obj


def parse(model: Model, spec: str, objectives: Factories | None = None) -> list[Objective]:
    """Objectives (unbound) for one target string; `LAYER:all` and ranges give several.

    `objectives` are the named objective factories a `NAME:LAYER[:ARGS]` target may use (plugins' included)."""
    spec = spec.strip()
    if not spec:
        raise TargetError("empty target", GRAMMAR)
    if _is_layer(model, spec):
        return [DeepDream(spec)]
    if ":" not in spec:
        model.layer(spec)  # raises LayerNotFoundError with the closest names
    first, _, after = spec.partition(":")
    head, _, tail = spec.rpartition(":")
    if not first.strip() or not tail.strip():
        raise TargetError(f"malformed target {spec!r}", GRAMMAR)
    if head == "class":
        if not _CH.match(tail):
            raise TargetError(f"malformed class target {spec!r}", "use class:IDX, e.g. class:1")
        return [ClassLogit(int(tail))]
    if head in {o.name for o in model.outputs} and _CH.match(tail):
        return [ClassLogit(int(tail), output=head)]
    if not _is_layer(model, head):
        if objectives and first in objectives and first not in _BUILTIN_NAMES:
            return [_plugin_objective(model, objectives[first], first, after)]
        model.layer(head)  # raises with suggestions
    layer = model.layer(head)
    key = head
    if tail == "all":
        n = layer.channels
        if n is None:
            raise TargetError(f"layer {layer.name!r} has no channel dimension", "use LAYER for DeepDream instead")
        return [Channel(key, c) for c in range(n)]
    if m := _RANGE.match(tail):
        a, b = int(m.group(1)), int(m.group(2))
        if b < a:
            raise TargetError(f"empty channel range {tail!r} in {spec!r}", "write LOW-HIGH with LOW <= HIGH")
        n = layer.channels
        if n is not None and b >= n:  # checked before building one objective per channel
            raise TargetError(f"channel range {tail!r} of {spec!r} is out of range: layer {layer.name!r} has {n} "
                              "channels", f"use channels 0..{n - 1}")
        return [Channel(key, c) for c in range(a, b + 1)]
    if m := _NEURON.match(tail):
        x = int(m.group(2))
        y = int(m.group(3)) if m.group(3) is not None else None
        return [Neuron(key, int(m.group(1)), x, y if y is not None else x)]
    if _CH.match(tail):
        return [Channel(key, int(tail))]
    raise TargetError(f"malformed target {spec!r}", GRAMMAR)


def resolve(model: Model, targets: str | Objective | Iterable[str | Objective],
            objectives: Factories | None = None) -> list[Objective]:
    """Bound objectives, one per unit, from strings and/or Objective objects (`objectives`: see `parse`)."""
    items: Sequence[str | Objective] = [targets] if isinstance(targets, (str, Objective)) else list(targets)
    if not items:
        raise TargetError("no targets given", GRAMMAR)
    out: list[Objective] = []
    for t in items:
        objs = parse(model, t, objectives) if isinstance(t, str) else [t]
        for o in objs:
            o.bind(model)
        out.extend(objs)
    return out


def labelled(model: Model, targets: str | Objective | Iterable[str | Objective],
             objectives: Factories | None = None) -> tuple[list[Objective], list[str]]:
    """`resolve`, plus one label per objective: the target string itself, `LAYER:CH` for each channel of a range or
    `LAYER:all`, and an Objective's own label."""
    if not isinstance(targets, (str, Objective, Iterable)) or isinstance(targets, bytes):
        raise TargetError(f"targets must be a target string, an Objective or a list of them, got {targets!r}"[:200],
                          "e.g. vizcore.render(model, ['class:1', '40:0-7'])")
    items = [targets] if isinstance(targets, (str, Objective)) else list(targets)
    objs: list[Objective] = []
    names: list[str] = []
    for t in items:
        bound = resolve(model, [t], objectives)
        objs.extend(bound)
        if isinstance(t, str) and len(bound) == 1:
            names.append(t)
        else:
            names.extend(o.label if not isinstance(t, str) else f"{t.rpartition(':')[0]}:{o.channel}" for o in bound)
    return objs, names
