"""What the lifecycle hooks receive: one chunk of a render (`RenderRun`) and the state after a step (`StepState`).

Plain data, so that the hook contract (`hookspecs`) and plugins can name these types without importing the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class RenderRun:
    """One chunk of a render as plugins see it (vizcore_render_start/step).

    `model` is the `vizcore.model.Model`, `units` this chunk's `vizcore.result.Unit`s, `settings` the render's
    settings (shared by every chunk; the manifest's "settings"), `device` a `torch.device`. `exporters` names what
    the caller will export the result with (a plugin that records for one exporter checks it is there).
    """

    model: Any
    units: list[Any]
    settings: dict[str, Any]
    device: Any
    steps: int
    chunk: int
    n_chunks: int
    unit_offset: int
    total_units: int
    exporters: tuple[str, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)  # per-render scratch space for plugins, keyed by plugin
    image_grads: bool = False  # set True in vizcore_render_start to get `StepState.image_grad()` in the steps


@dataclass
class StepState:
    """The state after one step: `values` per image (detached), `images()` on demand; set `stop` to end early."""

    step: int
    values: Any
    _images: Callable[[], Any] = field(repr=False)
    stop: bool = False
    _grad: Any = field(default=None, repr=False)

    def images(self) -> Any:
        """The current images in 0..1, (k, C, ...), detached."""
        return self._images()

    def image_grad(self) -> Any:
        """The step's gradient of the ascended value (the objective minus the penalties, negated: what the
        optimizer descends) with respect to the images (k, C, ...), through the transforms; None unless a
        `vizcore_render_start` hook set `run.image_grads`."""
        return self._grad


class Hooks(Protocol):
    """What the engine needs of a plugin manager: call a lifecycle hook, and know whether anyone implements it."""

    def call(self, hook_name: str, **kwargs: Any) -> None: ...

    def has_impls(self, hook_name: str) -> bool: ...


class _NoHooks:
    def call(self, hook_name: str, **kwargs: Any) -> None:
        pass

    def has_impls(self, hook_name: str) -> bool:
        return False


#: No lifecycle hooks at all (a render that no plugin may observe).
NO_HOOKS: Hooks = _NoHooks()
