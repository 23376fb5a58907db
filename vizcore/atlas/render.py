"""Rendering the units an atlas lacks: one call of a `Renderer` (by default `vizcore.render`) per layer, each unit
stored in the cache as soon as its layer is done, so an interrupted run keeps what it finished."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .. import api
from ..errors import VizcoreError
from ..exporters.alpha import NAME as ALPHA
from ..exporters.alpha import pictures
from ..images import png_bytes, unit_image
from ..model import Model
from ..plugins import Manager
from .cache import UnitCache, UnitSpec, finite

#: Render settings that describe how a render was scheduled, not what it made (left out of the records).
SCHEDULING = ("targets", "chunk_units", "max_memory", "on_warning", "on_step")


class Rendered(Protocol):
    """What a renderer returns (a `vizcore.Result` is one): per unit an image, a final value and a trace."""

    images: np.ndarray
    values: np.ndarray
    traces: list[list[float]]
    trace_steps: list[int]
    settings: dict[str, Any]


class Renderer(Protocol):
    """Renders objectives of a model: called as `vizcore.render` is, always with `on_warning` (and with
    `exporters=("alpha",)` when the atlas shows alpha maps: then it returns them in `extras["alpha"]`, as the
    render does)."""

    def __call__(self, model: Model, targets: list[Any], *, steps: int, size: int | None, seed: int,
                 on_warning: Callable[[str], None], **options: Any) -> Rendered: ...


def default_renderer(plugins: Manager | None) -> Renderer:
    """`vizcore.render` with the given plugin manager."""
    return functools.partial(api.render, plugins=plugins)


def _groups(missing: Sequence[tuple[UnitSpec, str]]) -> list[list[tuple[UnitSpec, str]]]:
    """The missing units by layer (classes together), in the order they come."""
    groups: dict[tuple[str, int], list[tuple[UnitSpec, str]]] = {}
    for spec, key in missing:
        groups.setdefault((spec.kind, spec.layer.index), []).append((spec, key))
    return list(groups.values())


def alpha_pictures(result: Any, shown: Sequence[Any]) -> list[tuple[bytes, bytes]]:
    """Per unit, the picture with its alpha map (`result.extras["alpha"]`, the `alpha` exporter's) and the heat map,
    as PNG bytes; `shown` are the units' pictures as the atlas stores them."""
    maps = (getattr(result, "extras", None) or {}).get(ALPHA) or {}
    if sorted(maps) != list(range(len(shown))):
        raise VizcoreError(f"the renderer returned alpha maps for {len(maps)} of {len(shown)} units",
                           "report this: vizcore.render with exporters=['alpha'] returns one map per image")
    return [pictures(picture, maps[i]) for i, picture in enumerate(shown)]


def _store(model: Model, group: list[tuple[UnitSpec, str]], result: Rendered, settings: dict[str, Any],
           seconds: float, cache: UnitCache, alpha: bool) -> None:
    n = len(result.values)
    if n != len(group) or len(result.images) != len(group):
        raise VizcoreError(f"the renderer returned {n} units for {len(group)} targets",
                           "report this: vizcore.render must return one image per unit")
    shown = [unit_image(img, value_range=getattr(result, "value_range", None),
                        sample_rate=getattr(result, "sample_rate", None))  # a signal's axes (images: unused)
             for img in result.images]
    extra = alpha_pictures(result, shown) if alpha else [None] * n
    traces = list(getattr(result, "traces", None) or [])
    trace_steps = [int(s) for s in (getattr(result, "trace_steps", None) or [])]
    used = {k: v for k, v in (getattr(result, "settings", None) or settings).items() if k not in SCHEDULING}
    for i, (spec, key) in enumerate(group):
        rec = {**spec.ident, "model_sha256": model.sha256, "value": finite(result.values[i]),
               "trace": [finite(v) for v in traces[i]] if i < len(traces) else [], "trace_steps": trace_steps,
               "settings": used, "seconds": seconds / len(group)}
        cache.put(key, png_bytes(shown[i], optimize=True), rec, alpha=extra[i])


def render_missing(model: Model, missing: Sequence[tuple[UnitSpec, str]], settings: dict[str, Any],
                   cache: UnitCache, renderer: Renderer, say: Callable[[str], None], alpha: bool = False) -> float:
    """Render the units not in the cache, one call per layer (so each cut stops at that layer), storing each layer's
    units as soon as it is done (with `alpha`, each with its alpha map); returns the seconds spent. Ctrl-C keeps
    every layer finished before it."""
    warned: set[str] = set()

    def warn(msg: str) -> None:
        if msg not in warned:
            warned.add(msg)
            say(f"warning: {msg}")

    total, done = 0.0, 0
    asked = {"exporters": (ALPHA,)} if alpha else {}
    try:
        for group in _groups(missing):
            spec = group[0][0]
            say(f"rendering {len(group)} unit{'s' if len(group) != 1 else ''} of "
                f"{'the classes' if spec.kind == 'class' else f'layer {spec.layer.index}'} ...")
            t0 = time.perf_counter()
            result = renderer(model, [s.objective() for s, _ in group], on_warning=warn, **asked, **settings)
            seconds = time.perf_counter() - t0
            total += seconds
            _store(model, group, result, settings, seconds, cache, alpha)
            done += len(group)
    except KeyboardInterrupt:
        say(f"interrupted: {done} of {len(missing)} units are in the cache; run the same command again to resume")
        raise
    return total
