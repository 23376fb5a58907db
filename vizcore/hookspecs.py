"""The plugin contract: every hook vizcore calls. Built-ins are registered through exactly these hooks.

A plugin is a module or object with functions marked `@vizcore.hookimpl`, published under the entry-point group
`vizcore` (or registered with `Manager.register(obj)` on the manager you pass as `plugins=`). Reading this file
is enough to write one.

Contribution hooks take no arguments and return a dict name -> factory (converters and pre-passes: a list).
Names are global per kind: two plugins giving the same name is an error that names both (`PluginError`), unless
one marks its factory with `vizcore.plugins.override` (at most one per name). Factories are called lazily, when
a render or a model load needs them.

Lifecycle hooks are called by the engine during `vizcore.render`: start, every step, end. An implementation may
take fewer arguments than its spec. A plugin that raises in any hook is reported in one line and skipped for the
rest of the process (fatal with `--strict`). Hook wrappers are not supported. A how-to: docs/plugins.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from .lifecycle import RenderRun, StepState
    from .onnx_compat import Converter, Prepass
    from .result import Result

hookspec = pluggy.HookspecMarker("vizcore")
hookimpl = pluggy.HookimplMarker("vizcore")


@hookspec
def vizcore_add_objectives() -> dict[str, Callable[..., Any]]:
    """Objective factories: name -> callable(layer, *args, **kwargs) -> `vizcore.objectives.Objective`.

    The first argument is a layer key (name or index, as `vizcore inspect` prints); the rest are the objective's
    own parameters (e.g. channel index). An Objective knows its `targets` (layer keys it reads) and maps a dict
    {layer key: activation tensor of shape (k, C, ...)} to a tensor of shape (k,): one value per image.
    The names become usable in target strings as `NAME:LAYER:ARGS` (see `vizcore.targets`).
    """


@hookspec
def vizcore_add_params() -> dict[str, Callable[..., Any]]:
    """Parameterization factories: name -> callable(shape, units=1, generator=None, **options) -> torch.nn.Module.

    `shape` is the image batch shape (N, C, H, W) or (N, C, L); the N images belong to `units` units, N/units
    each (draw the initial state for one unit and tile it, so a batched render equals one unit at a time).
    `options` are the user's `param_options`. `generator` is the render's seeded CPU `torch.Generator`: draw every
    random number from it (`torch.randn(..., generator=generator)`), never from torch's global RNG, which belongs
    to the caller. A factory without a `generator` parameter still works: the engine then runs its chunk inside
    `torch.random.fork_rng` with the global RNG seeded, and restores the caller's state afterwards. The engine
    moves the module to the device afterwards. The module has trainable parameters and `forward() -> Tensor` of that
    shape with values in 0..1 (vizcore maps 0..1 to the model's range afterwards). A factory that takes `init`
    can start from a picture (feature accentuation, `--init`): `init` is (1, C, ...) in 0..1 at the render shape,
    and its first `forward()` should give that picture back; a factory without it refuses `--init`.
    """


@hookspec
def vizcore_add_transforms() -> dict[str, Callable[..., Any]]:
    """Transform factories: name -> callable(size: int, generator=None, **options) -> list of callables.

    Each callable (Tensor -> Tensor; the built-ins are `torch.nn.Module`s, as Captum's) is a random,
    differentiable augmentation applied to the image batch every step, drawing its randomness from `generator`
    (the render's seeded CPU `torch.Generator`, re-seeded for every chunk); `size` is the image side in pixels,
    so a factory can scale its strength with it. A factory without a `generator` parameter still works (its
    chunks run inside `torch.random.fork_rng` with the global RNG seeded). A preset (e.g. `standard`) is a
    factory that returns several callables; `none` returns an empty list.
    """


@hookspec
def vizcore_add_regularizers() -> dict[str, Callable[..., Any]]:
    """Regularizer factories: name -> callable(weight: float) -> callable(images: Tensor) -> Tensor (N,).

    The per-image penalty is subtracted from each image's objective (images in 0..1, before transforms). A factory
    that names `init` and/or `features` is built per chunk with them (`vizcore.engine.accent`): `init` the start
    picture (1, C, ...) in 0..1 on the device, `features(images)` a list, per image, of the flattened activations of
    the layer below its unit's target (as `init_pixel` and `init_feature` do); without `--init` it is refused.
    """


@hookspec
def vizcore_add_exporters() -> dict[str, Callable[..., Any]]:
    """Exporter factories: name -> callable(result: Result, out_dir: pathlib.Path, **options) -> list[Path].

    Called after a render, by `vizcore render --export NAME` and `vizcore.export`. Writes files inside out_dir
    only (use `vizcore.files.atomic_write_bytes`), and returns the paths written.
    """


@hookspec
def vizcore_add_onnx_converters() -> list[Converter]:
    """Extra ONNX -> torch converters (`vizcore.onnx_compat.Converter`): op type, opset version, domain, function.

    The function has onnx2torch's converter signature `(OnnxNode, OnnxGraph) -> OperationConverterResult`.
    `override=True` replaces a converter onnx2torch already has for that (domain, op, version).
    Installed before every conversion. The decorator `vizcore.onnx_compat.converter(op, *versions, domain=...)`
    collects functions into a module-level `CONVERTERS` list to return here. `version` is the op's since-version
    in the ai.onnx domain; for a custom domain it must equal the model's opset for that domain (onnx2torch matches
    custom domains exactly).
    """


@hookspec
def vizcore_add_prepasses() -> list[Prepass]:
    """Graph rewrites (`vizcore.onnx_compat.Prepass`) applied to the ModelProto before conversion.

    Each has a name, an `order` (lower runs first; built-ins use multiples of 10) and a function
    `(onnx.ModelProto) -> int` that rewrites in place and returns how many changes it made (0 = did not apply).
    """


@hookspec
def vizcore_render_start(run: RenderRun) -> None:
    """Called once per chunk of units before its first step.

    `run` (`vizcore.lifecycle.RenderRun`): model, units (this chunk's), settings (dict, shared by every chunk of
    the render), device, steps, chunk (0-based), n_chunks, unit_offset (global index of the chunk's first image),
    total_units (images in the whole render), exporters (the names the caller will export with, e.g. ("png",
    "manifest", "gif"): record only what an exporter of yours will write), state (a dict shared by every chunk of
    this render: keep per-render data there under your plugin's name, never in a module global). Set
    `run.image_grads = True` to receive `state.image_grad()` in `vizcore_render_step` (and the summed |gradient|
    in `run.state["image_grad_sum"]`, which the `alpha` exporter reads).
    """


@hookspec
def vizcore_render_step(run: RenderRun, state: StepState) -> None:
    """Called after every optimization step.

    `state.step` (1-based), `state.values` (per-image objective values, a detached tensor, on the run's device),
    `state.images()` (the chunk's current images in 0..1, (k, C, ...), detached; computed on each call, so call
    it only on the steps you need), `state.image_grad()` (the gradient on the images, when `run.image_grads` was
    set at the start; else None). Set `state.stop = True` to end the chunk early (early stopping). Keep it
    cheap: it runs on the hot path.
    """


@hookspec
def vizcore_render_end(run: RenderRun, result: Result) -> None:
    """Called once per render, after all chunks, with the finished result (`run` is the last chunk's).

    Plugins may add their data to `result.extras` (a dict) for their exporters to read. Data per image is a dict
    keyed by the image's index, `{i: value}`: a render on an executor puts each chunk's back at the render's index.
    """
