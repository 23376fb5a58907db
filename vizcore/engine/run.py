"""The optimisation loop: gradient ascent on the input, many units at once, with the graph cut at the targets.

One batch element per image; units are chunked by a memory budget; the forward stops at the deepest layer the
objectives read. The engine receives objects, never names (`vizcore.api.render` resolves those through a plugin
manager), and knows nothing of files: it returns a `Result`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import DeviceError, InputTooSmallError, OptionError, VizcoreError
from ..lifecycle import NO_HOOKS, Hooks, RenderRun, StepState
from ..model import Model
from ..objectives import Objective, batch_values
from ..preprocess import resolve as resolve_preprocess
from ..result import Result, Unit
from .budget import chunk_plan, chunks, is_oom, release_memory
from .device import cpu_heap, cudnn_autotune, resolve_device
from .fusion import fuse_conv_clamps
from .net import Net, memory_format
from .relu import Switch, redirect_relus


@dataclass(frozen=True)
class Factories:
    """The parameterization, transforms and regularizers of one render, already looked up by name."""

    param: Callable[..., nn.Module]
    transforms: Sequence[Callable[..., Any]] = ()
    regularizers: dict[str, Callable[[float], Callable[[torch.Tensor], torch.Tensor]]] = field(default_factory=dict)


def device_settings(dev: torch.device) -> contextlib.AbstractContextManager[None]:
    """The process settings a render on `dev` runs under: the CPU heap on the CPU, cuDNN autotuning on CUDA."""
    return cpu_heap() if dev.type == "cpu" else cudnn_autotune() if dev.type == "cuda" else contextlib.nullcontext()


class VizcoreWarning(UserWarning):
    """A setting vizcore had to guess or change (value range, batch fallback, ...)."""


def _no_grad_call(p: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return p()


def _unit(obj: Objective, target: str) -> Unit:
    layer = obj.layer
    return Unit(target=target, kind=obj.kind, layer=layer.name if layer else None,
                layer_index=layer.index if layer else None, channel=obj.channel, label=obj.label)


def _run(
    model: Model,
    objectives: Sequence[Objective],
    names: Sequence[str],
    factories: Factories,
    *,
    hooks: Hooks = NO_HOOKS,
    exporters: Sequence[str] = (),
    steps: int = 256,
    size: int | None = None,
    param: str = "fft",
    param_options: dict[str, Any] | None = None,
    transforms: Sequence[str] = (),
    regularizers: dict[str, float] | None = None,
    lr: float = 0.05,
    seed: int = 0,
    device: str | torch.device = "auto",
    amp: bool = False,
    max_memory: str | int | None = None,
    batch_size: int | None = None,
    relu_override: float = 0.25,
    preprocess: str | None = None,
    value_range: str | None = None,
    record_every: int = 8,
    images_per_unit: int = 1,
    on_warning: Callable[[str], None] | None = None,
    on_step: Callable[[RenderRun, StepState], None] | None = None,
) -> Result:
    """Synthesize, for every bound objective, the input that maximizes it; returns images, values and traces.

    `names` label the objectives (one each), `factories` hold the looked-up parameterization, transforms and
    regularizers (`regularizers` gives their weights), `hooks` the lifecycle hooks to call (a plugin manager).
    One image per objective (`images_per_unit` for several, e.g. with a diversity term). `relu_override` is the
    fraction of steps that use Lucid's ReLU gradient override, so units blocked by a ReLU still get a gradient at first.
    `on_step(run, state)` is called after every step of this render only (progress bars, early stopping by
    setting `state.stop`), as the `vizcore_render_step` hook is for every render (reading `state.values` on a GPU
    waits for the step to finish).
    """
    t0 = time.perf_counter()
    warn = on_warning or (lambda m: warnings.warn(m, VizcoreWarning, stacklevel=3))
    messages: list[str] = []

    def note(msg: str) -> None:
        messages.append(msg)
        warn(msg)

    if not isinstance(steps, int) or steps <= 0:
        raise OptionError(f"steps must be a positive integer, got {steps!r}", "e.g. --steps 256")
    if lr <= 0:
        raise OptionError(f"learning rate must be positive, got {lr}", "e.g. --lr 0.05")
    if images_per_unit < 1:
        raise OptionError("images_per_unit must be >= 1", "e.g. 4 with a diversity term")
    if not 0.0 <= float(relu_override) <= 1.0:
        raise OptionError(f"relu_override is a fraction of the steps, got {relu_override}", "use 0..1, e.g. 0.25")
    model.input  # noqa: B018  raises for integer-typed inputs
    dev = resolve_device(device)
    if amp and dev.type != "cuda":
        note("--amp needs CUDA; running in float32 on the CPU")
        amp = False
    param_factory = factories.param
    tnames, tfactories = list(transforms), list(factories.transforms)
    regs_w = dict(regularizers or {})
    regs = [factories.regularizers[n](float(w)) for n, w in regs_w.items() if w]
    pre = resolve_preprocess(model, preprocess, value_range)
    for w in pre.warnings:
        note(w)

    objectives, names = list(objectives), list(names)
    units = [_unit(o, n) for o, n in zip(objectives, names) for _ in range(images_per_unit)]
    indices = sorted({i for o in objectives for i in o.targets})
    if not indices:
        raise OptionError("the objectives read no layer", "give a target such as LAYER:CH or class:IDX")

    fixed = model.fixed_size
    full_shape = model.input_shape(1, size)
    if size is None:
        size = full_shape[-1]
    if size < 8:
        raise OptionError(f"size {size} is too small", "use --size 64 or more")
    shape = (1, full_shape[1], *([size] * (len(full_shape) - 2)))
    channels = shape[1]

    cut = model.cut_at(indices)
    switch = Switch()
    n_redirected = redirect_relus(cut, switch) if relu_override > 0 else 0
    net = Net(model, cut, indices, pre.module(channels), fixed)
    batch_ok = model.batch_ok  # decided where the weights are now (CPU after load), before they move
    home = model.device
    try:  # from here on, the caller's model goes back to its device whatever happens
        model.module.to(dev)
        net.to(dev)
        net.memory_format = memory_format(cut, shape)
        if net.memory_format == torch.channels_last:
            cut.to(memory_format=torch.channels_last)  # the conv weights, shared with model.module (same values)
        n_fused = fuse_conv_clamps(cut, switch) if dev.type == "cpu" else 0  # after redirect: keeps the override
        tlist = [t for f in tfactories for t in f(size)]

        # Can the network take this size at all? (one cheap no-grad forward on the un-transformed image)
        try:
            with torch.no_grad():
                net(torch.full(shape, 0.5, device=dev))
        except Exception as exc:
            if isinstance(exc, VizcoreError):
                raise
            raise InputTooSmallError(f"the model cannot run on a {size}-pixel input: {str(exc).splitlines()[0][:160]}",
                              "use a larger --size (see the input shape in `vizcore inspect`)") from exc

        n_units = len(objectives)
        chunk, budget = chunk_plan(model, indices, shape, amp, n_units, images_per_unit, max_memory, batch_size,
                                   dev, batch_ok, note)  # vizcore.executors plans with the same function

        settings = {
            "targets": names, "steps": steps, "size": size, "param": param, "param_options": param_options or {},
            "transforms": tnames, "regularizers": {k: v for k, v in regs_w.items() if v}, "lr": lr, "seed": seed,
            "device": str(dev), "amp": amp, "relu_override": relu_override, "relu_redirected_modules": n_redirected,
            "fused_conv_clamps": n_fused,
            "preprocess": pre.to_json(), "record_every": record_every, "images_per_unit": images_per_unit,
            "chunk_units": chunk, "max_memory": budget, "network_input": list(fixed) if fixed else None,
            "vizcore_version": __version__,
        }
        shared: dict[str, Any] = {}  # RenderRun.state: one dict for every chunk of this render
        want_steps = hooks.has_impls("vizcore_render_step") or on_step is not None
        all_images: list[np.ndarray] = []
        all_values: list[np.ndarray] = []
        all_best: list[np.ndarray] = []
        all_traces: list[list[float]] = []
        trace_steps: list[int] = []
        override_steps = int(round(relu_override * steps))
        k = images_per_unit

        def run_chunk(ci: int, a: int, b: int, n_chunks: int) -> tuple[RenderRun, list[int]]:
            """Units a..b-1 in one batch: appends their images, values, best values and traces."""
            objs = objectives[a:b]
            n_img = (b - a) * k
            run = RenderRun(model=model, units=units[a * k:b * k], settings=settings, device=dev, steps=steps,
                            chunk=ci, n_chunks=n_chunks, unit_offset=a * k, total_units=n_units * k,
                            exporters=tuple(exporters), state=shared)
            torch.manual_seed(seed)
            p = param_factory((n_img, *shape[1:]), units=b - a, **(param_options or {})).to(dev)
            opt = torch.optim.Adam(p.parameters(), lr=lr)
            hooks.call("vizcore_render_start", run=run)
            trace: list[torch.Tensor] = []
            steps_seen: list[int] = []
            best: torch.Tensor | None = None  # each image's best value during the ascent (on its transformed input)
            for step in range(1, steps + 1):
                switch.on = step <= override_steps
                img = p()
                x = img
                for t in tlist:
                    x = t(x)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    acts = net(x)
                vals = batch_values(objs, {i: v.float() for i, v in acts.items()}, k)
                gain = vals
                for r in regs:
                    gain = gain - r(img)
                opt.zero_grad(set_to_none=True)
                (-gain.sum()).backward()
                opt.step()
                best = vals.detach() if best is None else torch.fmax(best, vals.detach())  # NaN-skipping, no sync
                if step % record_every == 0 or step == steps:
                    trace.append(vals.detach())
                    steps_seen.append(step)
                if want_steps:
                    state = StepState(step=step, values=vals.detach(), _images=lambda p=p: _no_grad_call(p))
                    hooks.call("vizcore_render_step", run=run, state=state)
                    if on_step is not None:
                        on_step(run, state)
                    if state.stop:
                        if not steps_seen or steps_seen[-1] != step:
                            trace.append(vals.detach())
                            steps_seen.append(step)
                        break
            switch.on = False
            with torch.no_grad():
                img = p()
                final = batch_values(objs, {i: v.float() for i, v in net(img).items()}, k)
            all_images.append((img.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
            all_values.append(final.float().cpu().numpy())
            all_best.append(torch.fmax(best, final).float().cpu().numpy() if best is not None else
                            final.float().cpu().numpy())
            all_traces.extend(torch.stack(trace, 1).float().cpu().numpy().tolist())
            return run, steps_seen

        pending = list(chunks(n_units, chunk))
        done = 0
        run: RenderRun | None = None
        while done < len(pending):
            a, b = pending[done]
            try:
                run, trace_steps = run_chunk(done, a, b, len(pending))
                done += 1
                continue
            except Exception as exc:  # noqa: BLE001  out of memory is retried below; anything else propagates
                if not is_oom(exc):
                    raise
            # out of memory (the exception and its frames are gone here): retry the rest in half-size chunks
            release_memory(dev)
            if b - a == 1:
                raise DeviceError(f"out of memory on {dev} with a single unit at {size} px",
                                  "lower --size, give a smaller --max-memory, or use --device cpu")
            half = max(1, (b - a) // 2)
            pending = pending[:done] + list(chunks(n_units, half, first=a))
            settings["chunk_units"] = half
            note(f"out of memory on {dev} with {b - a} units at once: continuing with {half} at a time "
                 f"(set --max-memory lower to start there)")
    finally:
        switch.on = False
        model.module.to(home)  # the caller's model stays where it was, also after an error

    images = np.concatenate(all_images)
    images = np.moveaxis(images, 1, -1)  # (N, H, W, C) or (N, L, C)
    result = Result(images=images, values=np.concatenate(all_values).astype(np.float32),
                    traces=all_traces, units=units, settings=settings,
                    model=model.summary(), timings={"seconds": time.perf_counter() - t0}, warnings=messages,
                    trace_steps=trace_steps, best_values=np.concatenate(all_best).astype(np.float32))
    hooks.call("vizcore_render_end", run=run, result=result)
    return result


def run(model: Model, objectives: Sequence[Objective], names: Sequence[str], factories: Factories,
        **options: Any) -> Result:
    """`_run` inside the device's process settings (`device_settings`), which are restored when it returns."""
    with device_settings(resolve_device(options.get("device", "auto"))):
        return _run(model, objectives, names, factories, **options)
