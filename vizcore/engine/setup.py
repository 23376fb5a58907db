"""Everything a render needs before its first step, in one `Render`: units, the cut network at the render size,
transforms, penalties, the seeded generator, the chunk plan (`chunk_plan`, shared with `vizcore.executors`) and the
settings the manifest records."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import InputTooSmallError, OptionError, VizcoreError, oneline
from ..inputspace import InputSpace
from ..inputspace import resolve as resolve_preprocess
from ..lifecycle import Hooks, RenderRun, StepState
from ..model import Model
from ..objectives import Objective
from ..result import Unit
from . import accent
from .accent import wants_context
from .budget import bytes_per_image, default_budget, plan, refuse_result, refuse_size, refuse_slow
from .fusion import fuse_conv_clamps
from .net import Net, memory_format
from .options import RenderOptions
from .relu import Switch, redirect_relus
from .seeding import accepts_generator, call_factory, declares, inspect_params, options_of


class VizcoreWarning(UserWarning):
    """A setting vizcore had to guess or change (value range, batch fallback, ...)."""


@dataclass(frozen=True)
class Factories:
    """The parameterization, transforms and regularizers of one render, already looked up by name.

    `providers` names the plugin behind a factory that is not vizcore's own ("param", and "objective:NAME"), so
    that its failures are reported as that plugin's.
    """

    param: Callable[..., nn.Module]
    transforms: Sequence[Callable[..., Any]] = ()
    regularizers: dict[str, Callable[[float], Callable[[torch.Tensor], torch.Tensor]]] = field(default_factory=dict)
    providers: Mapping[str, str] = field(default_factory=dict)


class Notes:
    """The render's warnings: kept for the result and passed on (to `on_warning`, else as a VizcoreWarning)."""

    def __init__(self, on_warning: Callable[[str], None] | None) -> None:
        self.messages: list[str] = []
        self.warn = on_warning or (lambda m: warnings.warn(m, VizcoreWarning, stacklevel=4))

    def __call__(self, msg: str) -> None:
        self.messages.append(msg)
        self.warn(msg)


@dataclass
class Render:
    """One render, ready to run chunk by chunk (`vizcore.engine.loop.run_chunk`)."""

    model: Model
    objectives: list[Objective]
    names: list[str]
    units: list[Unit]
    options: RenderOptions
    factories: Factories
    dev: torch.device
    notes: Notes
    hooks: Hooks
    exporters: tuple[str, ...]
    on_step: Callable[[RenderRun, StepState], None] | None
    ran_at: tuple[int, ...] | None = None  # the input shape the whole graph already ran at (the load's probe)
    size: int = 0
    shape: tuple[int, ...] = ()
    amp: bool = False
    pre: InputSpace | None = None
    cut: Any = None
    net: Any = None
    switch: Switch = field(default_factory=Switch)
    n_redirected: int = 0
    n_fused: int = 0
    transforms: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    regularizers: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    context_regs: list[tuple[Callable[..., Any], float]] = field(default_factory=list)  # built per chunk (accent)
    accent: Any = None  # `vizcore.engine.accent.Accent` when the render starts from a picture
    generator: torch.Generator = field(default_factory=torch.Generator)
    legacy_rng: bool = False
    want_steps: bool = False  # whether anyone looks at each step (an on_step, a vizcore_render_step hook)
    settings: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # RenderRun.state: one dict for every chunk of this render

    @property
    def providers(self) -> Mapping[str, str]:
        return self.factories.providers


    @property
    def indices(self) -> list[int]:
        return sorted({i for o in self.objectives for i in o.targets})


def units(r: Render) -> list[Unit]:
    """One `Unit` record per image (`images_per_unit` per objective): made after `chunk_plan`, which refuses a
    result that would not fit in memory before a million records are built."""
    return [unit(obj, n) for obj, n in zip(r.objectives, r.names) for _ in range(r.options.images_per_unit)]


def unit(obj: Objective, target: str) -> Unit:
    """The `Unit` record of one objective labelled `target`."""
    layer = obj.layer
    return Unit(target=target, kind=obj.kind, layer=layer.name if layer else None,
                layer_index=layer.index if layer else None, channel=obj.channel, label=obj.label)


def render_shape(model: Model, size: int | Sequence[int] | None) -> tuple[int, tuple[int, ...]]:
    """(longest side, batch-1 input shape) a render optimizes at; the engine and `vizcore.executors` both plan with
    it. No size: the model's own (a fixed [1, 3, 60, 160] input renders at 60x160). An int: every free dim at that
    size (a dim the model fixes keeps its own), and a fixed input scaled so that its longest side is that size
    (aspect kept). (H, W): exactly that."""
    full = model.input_shape(1, size)
    if len(full) not in (3, 4):  # params and transforms draw signals and images; volumes (Conv3d) are not built yet
        raise OptionError(f"vizcore renders signals (N, C, L) and images (N, C, H, W); this model's input is "
                          f"{tuple(full)} ({len(full) - 2}-D)", "render a layer of a 1-D or 2-D model")
    spatial = tuple(full[2:])
    if isinstance(size, int) and model.fixed_size:
        spatial = tuple(max(1, round(d * size / max(spatial))) for d in spatial)
    elif size is not None and not isinstance(size, int):
        spatial = tuple(int(v) for v in size)  # input_shape checked the count
    own = model.fixed_dims or (None,) * len(spatial)
    if any(d < 8 and d != f for d, f in zip(spatial, own)):  # the model's own small dims (a 5-feature MLP) are fine
        raise OptionError(f"size {'x'.join(map(str, spatial))} is too small: each side must be at least 8",
                          "give larger values to --size H,W" if isinstance(size, Sequence) else
                          "use --size 64 or more")
    return max(spatial), (1, full[1], *spatial)


def prepare(r: Render) -> None:
    """Units, size, preprocessing, the cut graph and penalties (nothing moves to the device yet)."""
    o = r.options
    r.model.input  # noqa: B018  raises for integer-typed inputs
    r.amp = o.amp
    if o.amp and r.dev.type != "cuda":
        r.notes("--amp needs CUDA; running in float32 on the CPU")
        r.amp = False
    r.pre = resolve_preprocess(r.model, o.preprocess, o.value_range)
    for w in r.pre.warnings:
        r.notes(w)
    r.size, r.shape = render_shape(r.model, o.size)
    if not r.indices:
        raise OptionError("the objectives read no layer", "give a target such as LAYER:CH or class:IDX")
    r.cut = r.model.cut_at(r.indices)
    r.n_redirected = redirect_relus(r.cut, r.switch) if o.relu_override > 0 else 0
    r.net = Net(r.model, r.cut, r.indices, r.pre.module(r.shape[1]), _network_dims(r))
    regs = [(r.factories.regularizers[n], float(w)) for n, w in o.regularizers.items() if w]
    r.regularizers = [f(w) for f, w in regs if not wants_context(f)]
    r.context_regs = [(f, w) for f, w in regs if wants_context(f)]
    r.want_steps = r.on_step is not None or r.hooks.has_impls("vizcore_render_step")
    f = r.factories
    _check_param_options(f.param, o.param_options, o.param)
    if o.init is not None and "init" not in (inspect_params(f.param) or {"init": None}):
        raise OptionError(f"the {o.param} parameterization cannot start from a picture (--init)",
                          "use --param fft (the default for images) or pixel")
    if o.crops > 1 and not any(_copies(t, o.crops) for t in f.transforms):
        raise OptionError(f"crops {o.crops} needs a transform that makes copies of each image",
                          "add the crops transform, e.g. --transforms crops")
    r.legacy_rng = not accepts_generator(f.param) or not all(accepts_generator(t) for t in f.transforms)


def _network_dims(r: Render) -> tuple[int | None, ...] | None:
    """The sizes the network is fed at: the model's fixed ones, or none (the rendered size) with `free_size` when
    the graph up to the targets works at any size."""
    fixed = r.model.fixed_dims
    if fixed is None or not r.options.free_size:
        return fixed
    if not r.model.size_free(r.indices):
        r.notes(f"the layers up to the targets need the model's input size (an op other than convolutions, pools "
                f"and activations): the network runs at {'x'.join(str(d) for d in fixed)}")
        return fixed
    if tuple(r.shape[2:]) != tuple(d or s for d, s in zip(fixed, r.shape[2:])):
        r.notes(f"the layers up to the targets work at any size: the network runs at "
                f"{'x'.join(map(str, r.shape[2:]))}, not the model's {'x'.join(str(d) for d in fixed)}")
    return None


def _check_param_options(factory: Callable[..., Any], given: Mapping[str, Any], name: str) -> None:
    """An OptionError, before any work, for an option the parameterization does not take (its valid ones named)
    or a value of the wrong kind for its default (a yes/no option takes true or false, a number a number)."""
    valid = options_of(factory)
    for key, value in given.items():
        if valid is not None and key not in valid:
            raise OptionError(f"the {name} parameterization has no option {key!r}",
                              f"its options: {', '.join(valid) or 'none'}")
        default = valid.get(key) if valid is not None else None
        if isinstance(default, bool) and not isinstance(value, bool):
            raise OptionError(f"the {name} option {key}={value!r} is not true or false", f"write {key}=false")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise OptionError(f"the {name} option {key}={value!r} is not a number", f"e.g. {key}={default}")


def chunk_plan(model: Model, indices: Sequence[int], shape: Sequence[int], options: RenderOptions, units: int,
               dev: torch.device, note: Callable[[str], None]) -> tuple[int, int]:
    """(units per chunk, memory budget in bytes) for `units` objectives reading layers `indices` at input `shape`:
    the one plan of a render, made by `engine.run` and by `vizcore.executors` (so a chunk sent to another process
    holds exactly the units it would hold here). A size whose images alone exceed the budget, and a render that
    would take over a day, are refused here, before any work."""
    budget = options.budget_bytes or default_budget(dev)
    refuse_size(shape[2:], budget, shape[1], len(shape) - 2)
    refuse_result(shape, units * options.images_per_unit)
    # each image's `crops` copies run through the network together
    per_image = bytes_per_image(model, max(indices), shape, options.amp and dev.type == "cuda") * options.crops
    refuse_slow(per_image, options.steps, units * options.images_per_unit, dev)
    chunk = plan(per_image, budget, units, options.images_per_unit, options.batch_size, model.batch_ok, note)
    return chunk, budget


def place(r: Render) -> None:
    """On the device: memory format, conv+clamp fusion (CPU), the transforms, and a check that the model runs at
    the size (a model that cannot take it is an InputTooSmallError)."""
    o = r.options
    r.net.to(r.dev)
    r.net.memory_format = memory_format(r.cut, r.shape, o.channels_last)
    if r.net.memory_format == torch.channels_last:
        r.cut.to(memory_format=torch.channels_last)  # the conv weights, shared with model.module (restored after)
    r.n_fused = fuse_conv_clamps(r.cut, r.switch, o.fuse) if r.dev.type == "cpu" else 0  # after redirect
    r.transforms = [t for f in r.factories.transforms
                    for t in call_factory(f, r.size, generator=r.generator, **_copies(f, o.crops))]
    if r.ran_at != tuple(r.shape):
        probe_size(r)
    r.accent = accent.build(r)


def _copies(factory: Callable[..., Any], crops: int) -> dict[str, int]:
    """`{"copies": crops}` for a transform factory that declares `copies` (the multi-crop transforms), else {}."""
    return {"copies": crops} if declares(factory, "copies") else {}


def probe_size(r: Render) -> None:
    """One no-grad forward of the cut network at the render's shape: a model that cannot run at that size is an
    InputTooSmallError before any step. Not needed when the whole graph already ran at that shape (`ran_at`)."""
    try:
        with torch.no_grad():
            r.net(torch.full(r.shape, 0.5, device=r.dev))
    except Exception as exc:
        if isinstance(exc, VizcoreError):
            raise
        shown = "x".join(map(str, r.shape[2:]))
        raise InputTooSmallError(f"the model cannot run on a {shown} input: {oneline(exc, 160, typed=False)}",
                                 "use a larger --size (see the input shape in `vizcore inspect`)") from exc


def settings(r: Render, chunk: int, budget: int) -> dict[str, Any]:
    """The manifest's settings: the options (`RenderOptions.to_json`) and what this render resolved them to."""
    fixed = r.model.fixed_size if r.net.fixed is not None else None  # None: the network ran at the rendered size
    out = r.options.to_json()
    out.update({
        "targets": list(r.names), "size": r.size, "input_size": list(r.shape[2:]), "device": str(r.dev), "amp": r.amp,
        "channels_last": r.net.memory_format == torch.channels_last, "relu_redirected_modules": r.n_redirected,
        "fused_conv_clamps": r.n_fused, "preprocess": r.pre.to_json() if r.pre else None, "chunk_units": chunk,
        "max_memory": budget, "network_input": list(fixed) if fixed else None, "vizcore_version": __version__,
    })
    return out
