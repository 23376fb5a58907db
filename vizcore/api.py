"""The public API's facade: the one place where names (of plugins, objectives, exporters) meet objects.

Each function takes `plugins=` (a `vizcore.plugins.Manager`; default: the process's default manager) and hands the
tables it needs down to the layers below: converters and pre-passes to `loading.load`, objective factories to
`targets`, factories and lifecycle hooks to `engine.run`, the checked exporters to the `Result`. A render's options
are one `RenderOptions`, built and validated once (by the caller, or here from keywords) and handed down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import engine, loading
from . import targets as targets_mod
from .engine.options import for_input, with_keywords
from .errors import OptionError, PluginError, VizcoreError
from .lifecycle import RenderRun, StepState
from .model import Model
from .objectives import Objective
from .plugins import Manager, default_manager
from .result import DEFAULT_EXPORTERS, Exporters, Result


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
    return loading.load(path, size=size, prepasses=prepasses, converters=converters, layout=layout,
                        input_shapes=input_shapes, input=input, feeds=feeds)


#: Names that vizcore's own optional plugins provide, for the hint of an "unknown ..." error.
KNOWN_PLUGINS = {("exporters", "gif"): "vizcore-gif", ("params", "maco"): "vizcore-maco"}


def lookup(pm: Manager, kind: str, name: str) -> Any:
    """`pm.get(kind, name)`; an unknown name says which plugin would provide it (or lists the valid names)."""
    table = pm.registry(kind)
    if name in table:
        return table[name][0]
    dist = KNOWN_PLUGINS.get((kind, name))
    if dist is None:
        return pm.get(kind, name)  # raises the OptionError listing the valid names
    raise OptionError(f"unknown {kind[:-1]} {name!r}: the {dist} plugin provides it, and it is not installed "
                      "(or is disabled)", f"pip install plugins/{dist}  (valid now: {', '.join(sorted(table))})")


def _plugin(pm: Manager, kind: str, name: str) -> str | None:
    """The plugin behind a name, or None for vizcore's own."""
    entry = pm.registry(kind).get(name)
    return None if entry is None or entry[1].startswith("vizcore.") else entry[1]


def _objective_table(pm: Manager) -> dict[str, Callable[..., Any]]:
    """The objective factories; a plugin's is wrapped so that its objects know their plugin and its errors name it."""
    return {name: f if plugin.startswith("vizcore.") else _from_plugin(f, name, plugin)
            for name, (f, plugin) in pm.registry("objectives").items()}


def _from_plugin(factory: Callable[..., Any], name: str, plugin: str) -> Callable[..., Any]:
    def build(*args: Any, **kwargs: Any) -> Any:
        try:
            obj = factory(*args, **kwargs)
        except VizcoreError:
            raise
        except Exception as exc:  # noqa: BLE001  a broken plugin: one line that names it
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise PluginError(f"objective {name!r} of plugin {plugin!r} raised {type(exc).__name__}: {first}",
                              "fix or uninstall the plugin, or render other targets") from exc
        if isinstance(obj, Objective):
            obj.provider = plugin  # type: ignore[attr-defined]  read by the engine to name a failing plugin
        return obj

    return build


def factories(pm: Manager, options: engine.RenderOptions) -> engine.Factories:
    """The engine's factories for `options`, looked up in `pm`."""
    providers = {"param": p} if (p := _plugin(pm, "params", options.param)) else {}
    return engine.Factories(
        param=lookup(pm, "params", options.param),
        transforms=[lookup(pm, "transforms", n) for n in options.transforms],
        regularizers={n: lookup(pm, "regularizers", n) for n, w in options.regularizers.items() if w},
        providers=providers)


def select_exporters(names: Sequence[str] | Exporters = DEFAULT_EXPORTERS,
                     plugins: Manager | None = None) -> Exporters:
    """The named exporters of `plugins` (default: the process's manager), checked once: an unknown name is a
    one-line OptionError (naming the plugin that provides it, or the valid names). png and manifest are always
    among them. Checked `Exporters` are returned as they are."""
    if isinstance(names, Exporters):
        return names
    pm = _manager(plugins)
    table = _table(pm, "exporters")
    chosen = tuple(dict.fromkeys([*DEFAULT_EXPORTERS, *names]))
    for name in chosen:
        if name not in table:
            lookup(pm, "exporters", name)  # raises, with the plugin that would provide it
    return Exporters(names=chosen, table=table)


def bind(model: Model, targets: str | Objective | Sequence[str | Objective],
         plugins: Manager | None = None) -> tuple[list[Objective], list[str]]:
    """The objectives of `targets` bound to `model`, with their labels, as `render` makes them (target strings
    read with the objectives of `plugins`; a plugin's failing objective is reported as that plugin's)."""
    return targets_mod.labelled(model, targets, _objective_table(_manager(plugins)))


def render(
    model: Model | str | os.PathLike[str],
    targets: str | Objective | Sequence[str | Objective],
    options: engine.RenderOptions | None = None,
    *,
    plugins: Manager | None = None,
    exporters: Sequence[str] | Exporters = DEFAULT_EXPORTERS,
    on_warning: Callable[[str], None] | None = None,
    on_step: Callable[[RenderRun, StepState], None] | None = None,
    chunks: engine.ChunkStore | None = None,
    **overrides: Any,
) -> Result:
    """Synthesize, for every target, the input that maximizes it; returns images, values and traces.

    `targets` are target strings (see `vizcore.targets`) and/or Objective objects, one image per unit
    (`images_per_unit` for several, e.g. with a diversity term). `options` is a `RenderOptions` (default: README
    "Defaults, and why", device settings from the environment); `overrides` are its field names (`steps=`,
    `size=`, `lr=`, `seed=`, `device=`, `param=`, ...) plus `l1=`, `l2=`, `tv=` (penalty weights) and
    `transforms="standard"` (a preset or comma list), applied once (an unknown keyword: a one-line OptionError
    naming the closest). `param`, `transforms` and the regularizers are names looked up in `plugins` (default: the
    process's manager; `param` "auto": `engine.options.for_input`). `exporters` are the names the result will be
    saved with (checked here, before any work; plugins that record for one record only if listed).
    `on_step(run, state)` runs after every step of this render only (progress bars; `state.stop` stops early).
    `chunks` (e.g. `vizcore.chunkcache.ChunkCache(folder)`) stores each finished chunk and gives back those this
    very render stored before: a stopped render resumes with the same images."""
    options = with_keywords(options, overrides)
    pm = _manager(plugins)
    chosen = select_exporters(exporters, pm)  # an unknown exporter fails before the render, not after it
    if not isinstance(model, Model):
        model = load(model, plugins=pm)
    objectives, names = bind(model, targets, pm)
    options = for_input(options, len(model.input_shape(1, options.size)), embedding=model.embedding is not None)
    result = engine.run(model, objectives, names, factories(pm, options), options=options, hooks=pm,
                        exporters=chosen.names, on_warning=on_warning, on_step=on_step,
                        ran_at=model.probe_shape, chunks=chunks)
    result.exporter_table = dict(chosen.table)
    _annotate(model, result)
    return result


def _annotate(model: Model, result: Result) -> None:
    """What a render of an optimized embedding reads as: its nearest tokens (`result.extras["nearest_tokens"]`)."""
    if model.embedding is not None and result.is_signal:
        from .analysis.tokens import result_tokens

        result.extras["nearest_tokens"] = result_tokens(result, model.embedding)


def save(result: Result, out_dir: str | os.PathLike[str], exporters: Sequence[str] = DEFAULT_EXPORTERS, *,
         force: bool = False, plugins: Manager | None = None, **options: Any) -> list[Path]:
    """Write a result with the named exporters of `plugins` (default: the manager that rendered it, else the
    process's), always with png and manifest; returns the paths written (see `Result.save`)."""
    if plugins is not None or not result.exporter_table:
        result.exporter_table = _table(_manager(plugins), "exporters")
    for name in exporters:
        if name not in result.exporter_table:
            lookup(_manager(plugins), "exporters", name)
    return result.save(out_dir, exporters=tuple(exporters), force=force, **options)
