"""The public API's facade: the one place where names (of plugins, objectives, exporters) meet objects.

Each function takes `plugins=` (a `vizcore.plugins.Manager`; default: the process's default manager) and hands the
tables it needs down to the layers below: converters and pre-passes to `model.load`, objective factories to
`targets`, factories and lifecycle hooks to `engine.run`, the exporter table to the `Result`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import engine
from . import model as model_mod
from . import targets as targets_mod
from .lifecycle import RenderRun, StepState
from .model import Model
from .objectives import Objective
from .plugins import Manager, default_manager
from .result import Result


def _manager(plugins: Manager | None) -> Manager:
    return plugins if plugins is not None else default_manager()


def _table(pm: Manager, kind: str) -> dict[str, Any]:
    return {name: factory for name, (factory, _) in pm.registry(kind).items()}


def load(path: str | os.PathLike[str], *, size: int | None = None, plugins: Manager | None = None,
         layout: str | None = None, input_shapes: dict[str, Sequence[int]] | None = None,
         input: str | None = None, feeds: dict[str, Any] | None = None) -> Model:  # noqa: A002
    """Load, validate, pre-pass and convert an ONNX file with the manager's pre-passes and converters.

    Raises `ModelLoadError` (one line) for a file it cannot use. onnx2torch's converter table is restored after the
    conversion, so a plugin's converters are seen only by loads that pass its manager.
    """
    pm = _manager(plugins)
    prepasses = [p for p, _ in pm.registry("prepasses").values()]
    converters = [c for c, _ in pm.registry("converters").values()]
    return model_mod.load(path, size=size, prepasses=prepasses, converters=converters, layout=layout,
                          input_shapes=input_shapes, input=input, feeds=feeds)


def _split_names(transforms: str | Sequence[str]) -> list[str]:
    items = [transforms] if isinstance(transforms, str) else list(transforms)
    return [n.strip() for t in items for n in t.split(",") if n.strip()]


def render(
    model: Model | str | os.PathLike[str],
    targets: str | Objective | Sequence[str | Objective],
    *,
    plugins: Manager | None = None,
    steps: int = 256,
    size: int | None = None,
    param: str = "fft",
    param_options: dict[str, Any] | None = None,
    transforms: str | Sequence[str] = "standard",
    l1: float = 0.0,
    l2: float = 0.0,
    tv: float = 0.0,
    regularizers: dict[str, float] | None = None,
    lr: float = 0.05,
    seed: int = 0,
    device: str = "auto",
    amp: bool = False,
    max_memory: str | int | None = None,
    batch_size: int | None = None,
    relu_override: float = 0.25,
    preprocess: str | None = None,
    value_range: str | None = None,
    record_every: int = 8,
    images_per_unit: int = 1,
    exporters: Sequence[str] = ("png", "manifest"),
    on_warning: Callable[[str], None] | None = None,
    on_step: Callable[[RenderRun, StepState], None] | None = None,
) -> Result:
    """Synthesize, for every target, the input that maximizes it; returns images, values and traces.

    `targets` are target strings (see `vizcore.targets`) and/or Objective objects, one image per unit
    (`images_per_unit` for several, e.g. with a diversity term). `param`, `transforms` and the regularizers are
    names looked up in `plugins` (default: the process's manager); `exporters` are the names the result will be
    saved with (plugins that record for an exporter, such as vizcore-gif, record only when it is listed).
    `on_step(run, state)` is called after every step of this render only (progress bars, early stopping by
    setting `state.stop`). The other options and their defaults: README.md ("Defaults, and why").
    """
    pm = _manager(plugins)
    if not isinstance(model, Model):
        model = load(model, plugins=pm)
    tnames = _split_names(transforms)
    weights = {"l1": l1, "l2": l2, "tv": tv, **(regularizers or {})}
    factories = engine.Factories(
        param=pm.get("params", param),
        transforms=[pm.get("transforms", n) for n in tnames],
        regularizers={n: pm.get("regularizers", n) for n, w in weights.items() if w})
    for name in exporters:
        pm.get("exporters", name)  # an unknown exporter fails before the render, not after it
    objectives, names = targets_mod.labelled(model, targets, _table(pm, "objectives"))
    result = engine.run(
        model, objectives, names, factories, hooks=pm, exporters=tuple(exporters), steps=steps, size=size,
        param=param, param_options=param_options, transforms=tnames,
        regularizers={k: v for k, v in weights.items() if v}, lr=lr, seed=seed, device=device, amp=amp,
        max_memory=max_memory, batch_size=batch_size, relu_override=relu_override, preprocess=preprocess,
        value_range=value_range, record_every=record_every, images_per_unit=images_per_unit, on_warning=on_warning,
        on_step=on_step)
    result.exporter_table = _table(pm, "exporters")
    return result


def save(result: Result, out_dir: str | os.PathLike[str], exporters: Sequence[str] = ("png", "manifest"), *,
         force: bool = False, plugins: Manager | None = None, **options: Any) -> list[Path]:
    """Write a result with the named exporters of `plugins` (default: the manager that rendered it, else the
    process's); returns the paths written."""
    if plugins is not None or not result.exporter_table:
        result.exporter_table = _table(_manager(plugins), "exporters")
    return result.save(out_dir, exporters=tuple(exporters), force=force, **options)
