"""The optimisation loop: gradient ascent on the input, many units at once, with the graph cut at the targets.

One batch element per image; units are chunked by a memory budget; the forward stops at the deepest layer the
objectives read. The engine knows nothing of files: it returns a `Result`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import math
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .clamps import Switch, fuse_conv_clamps, redirect_relus
from .errors import DeviceError, OptionError, VizcoreError
from .model import Model, load
from .objectives import Objective, batch_values
from .plugins import get_manager
from .preprocess import resolve as resolve_preprocess
from .result import Result, Unit
from .targets import resolve as resolve_targets


class VizcoreWarning(UserWarning):
    """A setting vizcore had to guess or change (value range, batch fallback, ...)."""


# -- lifecycle objects handed to plugins ------------------------------------------------------------------------
@dataclass
class RenderRun:
    """One chunk of a render as plugins see it (vizcore_render_start/step)."""

    model: Model
    units: list[Unit]
    settings: dict[str, Any]
    device: torch.device
    steps: int
    chunk: int
    n_chunks: int
    unit_offset: int
    total_units: int


@dataclass
class StepState:
    """The state after one step: `values` per image (detached), `images()` on demand; set `stop` to end early."""

    step: int
    values: torch.Tensor
    _images: Callable[[], torch.Tensor] = field(repr=False)
    stop: bool = False

    def images(self) -> torch.Tensor:
        """The current images in 0..1, (k, C, ...), detached."""
        return self._images()


def _no_grad_call(p: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return p()


# -- the network as the loop sees it ------------------------------------------------------------------------------
class _Net(nn.Module):
    """0..1 images -> (resize to a fixed input size) -> normalize -> cut graph -> {layer index: activation}."""

    def __init__(self, model: Model, cut: nn.Module, indices: Sequence[int], normalize: nn.Module,
                 fixed: tuple[int, ...] | None) -> None:
        super().__init__()
        self.cut, self.normalize, self.indices, self.fixed = cut, normalize, list(indices), fixed
        self.extra = [t for t in model.inputs if t is not model.input]
        self.model = [model]
        self.memory_format = torch.contiguous_format

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.fixed is not None and tuple(x.shape[2:]) != self.fixed:
            x = F.interpolate(x, size=self.fixed, mode="bilinear" if x.dim() == 4 else "linear",
                              align_corners=False)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        x = self.normalize(x)
        feeds = self.model[0]._feeds(x) if self.extra else [x]
        outs = self.cut(*[f.to(x.device) for f in feeds])
        return dict(zip(self.indices, outs))


def memory_format(cut: nn.Module, shape: Sequence[int]) -> torch.memory_format:
    """channels_last for image models with 2-D convolutions, else contiguous; VIZCORE_CHANNELS_LAST=0/1 forces it.

    Measured on MobileNetV2 (bench/RESULTS.md): forward+backward 25-35 % faster on CPU; cuDNN prefers it on CUDA.
    """
    force = os.environ.get("VIZCORE_CHANNELS_LAST", "").strip()
    if len(shape) != 4 or force == "0":
        return torch.contiguous_format
    if force == "1" or any(isinstance(m, nn.Conv2d) for m in cut.modules()):
        return torch.channels_last
    return torch.contiguous_format


# -- the CPU heap ---------------------------------------------------------------------------------------------------
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc mallopt parameters
_heap_lock = threading.Lock()
_heap_depth = 0


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextlib.contextmanager
def cpu_heap() -> Any:
    """Keep large tensors in glibc's heap while rendering on the CPU; give the memory back to the OS afterwards.

    glibc serves every allocation over its mmap threshold with a fresh mmap, so each step page-faults its big
    activations in again: 28 % of a MobileNetV2 step on 2 cores (bench/RESULTS.md). VIZCORE_CPU_HEAP=0 turns it off.
    Afterwards glibc keeps the thresholds its own dynamic tuning ends at in a busy torch process (mmap above 32 MiB,
    trim above 64 MiB): any mallopt call freezes that tuning, so vizcore sets its end state rather than the defaults.
    """
    global _heap_depth
    libc = _glibc() if os.environ.get("VIZCORE_CPU_HEAP", "1") != "0" else None
    if libc is None:
        yield
        return
    with _heap_lock:
        _heap_depth += 1
        if _heap_depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_depth -= 1
            if _heap_depth == 0:
                libc.mallopt(_M_MMAP_MAX, 65536)  # glibc's default
                libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the most glibc's dynamic threshold reaches
                libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # twice that, as the dynamic tuning keeps it
                libc.malloc_trim(0)  # give the render's memory back to the OS


@contextlib.contextmanager
def cudnn_autotune() -> Any:
    """Let cuDNN time its convolution algorithms once per shape and keep the fastest: a render repeats the same
    shapes for hundreds of steps. The previous setting is restored afterwards; VIZCORE_CUDNN_BENCHMARK=0 turns it off.
    """
    if os.environ.get("VIZCORE_CUDNN_BENCHMARK", "1") == "0":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def _device_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn` (render) inside cpu_heap() on the CPU, inside cudnn_autotune() on CUDA."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kind = resolve_device(kwargs.get("device", "auto")).type
        with cpu_heap() if kind == "cpu" else cudnn_autotune() if kind == "cuda" else contextlib.nullcontext():
            return fn(*args, **kwargs)

    return wrapper


# -- settings -----------------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; asking for CUDA without one is a DeviceError."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {text!r}", "use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but no CUDA GPU is available", "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{text} does not exist: {torch.cuda.device_count()} GPU(s) found",
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type != "cpu":
        raise DeviceError(f"device {text!r} is not supported", "use auto, cpu, cuda or cuda:N")
    return dev


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(min(total * 0.25, 6 << 30))


def parse_memory(text: str | int | None) -> int | None:
    """'2GB', '512M', '1.5g' or a byte count -> bytes."""
    if text is None or isinstance(text, int):
        return text
    t = str(text).strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if t[-1:] in "KMGT" else t) * mult)
    except ValueError as exc:
        raise OptionError(f"cannot read memory size {text!r}", "write e.g. 512M or 4G") from exc


def _bytes_per_image(model: Model, deepest: int, shape: Sequence[int], amp: bool) -> int:
    """Rough peak memory of one image's forward+backward up to the deepest layer (activations kept for backward)."""
    probe = model.input_shape(1)
    scale = float(np.prod(shape[2:])) / float(np.prod(probe[2:]))
    numel = sum(int(np.prod(l.shape)) for l in model.layers[: deepest + 1] if l.shape)
    bytes_per = 2 if amp else 4
    return int(numel * scale * bytes_per * 3 + np.prod(shape[1:]) * 4 * 16)


# -- chunk plan (shared with vizcore.executors: moves to engine/budget.py) -------------------------------------------
def chunk_plan(model: Model, indices: Sequence[int], shape: Sequence[int], amp: bool, n_units: int,
               images_per_unit: int, max_memory: str | int | None, batch_size: int | None, dev: torch.device,
               batch_ok: bool, note: Callable[[str], None]) -> tuple[int, int]:
    """(units per chunk, memory budget in bytes): equal chunks that fit the budget; `_chunks` gives the bounds."""
    per_image = _bytes_per_image(model, max(indices), shape, amp)
    budget = parse_memory(max_memory) or _default_budget(dev)
    per_unit = per_image * images_per_unit
    if per_unit > budget:
        raise DeviceError(f"one unit needs about {per_unit / 2**20:.0f} MiB but the memory budget is "
                          f"{budget / 2**20:.0f} MiB", "raise --max-memory or lower --size")
    chunk = max(1, budget // per_unit)
    if batch_size:
        chunk = min(chunk, max(1, batch_size))
    if not batch_ok and chunk * images_per_unit > 1:
        if images_per_unit > 1:
            raise OptionError("this model only runs at batch 1, so it cannot render several images per unit",
                              "use images_per_unit=1")
        note("the model's graph only works at batch 1: rendering one unit at a time (slower)")
        chunk = 1
    chunk = min(chunk, n_units)
    n_chunks = math.ceil(n_units / chunk)
    return math.ceil(n_units / n_chunks), budget  # equal chunks: no small tail chunk with its own shapes


# -- the loop -----------------------------------------------------------------------------------------------------
def _chunks(n: int, size: int, first: int = 0) -> Iterable[tuple[int, int]]:
    """(start, end) of consecutive chunks of `size` units from `first` to `n`."""
    for start in range(first, n, size):
        yield start, min(n, start + size)


def _is_oom(exc: BaseException) -> bool:
    """An allocation failure of the device (CUDA) or of torch's CPU allocator."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower())


def _release_memory(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _unit(obj: Objective, target: str) -> Unit:
    layer = obj.layer
    return Unit(target=target, kind=obj.kind, layer=layer.name if layer else None,
                layer_index=layer.index if layer else None, channel=obj.channel, label=obj.label)


def _targets_with_strings(model: Model, targets: Any) -> tuple[list[Objective], list[str]]:
    items = [targets] if isinstance(targets, (str, Objective)) else list(targets)
    objs, names = [], []
    for t in items:
        bound = resolve_targets(model, t)
        objs.extend(bound)
        if isinstance(t, str) and len(bound) == 1:
            names.append(t)
        else:
            names.extend(o.label if not isinstance(t, str) else f"{t.rpartition(':')[0]}:{o.channel}"
                         for o in bound)
    return objs, names


@_device_settings
def render(
    model: Model | str | os.PathLike[str],
    targets: str | Objective | Sequence[str | Objective],
    *,
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
    executor: Any = None,
) -> Result:
    """Synthesize, for every target, the input that maximizes it; returns images, values and traces.

    `targets` are target strings (see `vizcore.targets`) and/or Objective objects, one image per unit
    (`images_per_unit` for several, e.g. with a diversity term). `relu_override` is the fraction of steps that
    use Lucid's ReLU gradient override, so units blocked by a ReLU still get a gradient at first.
    `on_step(run, state)` is called after every step of this render only (progress bars, early stopping by
    setting `state.stop`), as the `vizcore_render_step` hook is for every render (reading `state.values` on a GPU
    waits for the step to finish). `executor` ("ray", "ray://HOST:PORT", an Executor) renders the chunks there.
    """
    if executor is not None and executor != "local":  # vizcore.executors: the same chunks, on other processes
        args = {k: v for k, v in locals().items() if k != "executor"}
        from .executors import render as render_on
        return render_on(**args, executor=executor)
    t0 = time.perf_counter()
    warn = on_warning or (lambda m: warnings.warn(m, VizcoreWarning, stacklevel=3))
    messages: list[str] = []

    def note(msg: str) -> None:
        messages.append(msg)
        warn(msg)

    if not isinstance(model, Model):
        model = load(model)
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
    pm = get_manager()
    param_factory = pm.get("params", param)
    tnames = [transforms] if isinstance(transforms, str) else list(transforms)
    tnames = [n.strip() for t in tnames for n in t.split(",") if n.strip()]
    tfactories = [pm.get("transforms", n) for n in tnames]
    regs_w = {"l1": l1, "l2": l2, "tv": tv, **(regularizers or {})}
    regs = [pm.get("regularizers", n)(float(w)) for n, w in regs_w.items() if w]
    pre = resolve_preprocess(model, preprocess, value_range)
    for w in pre.warnings:
        note(w)

    objectives, names = _targets_with_strings(model, targets)
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
    net = _Net(model, cut, indices, pre.module(channels), fixed)
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
            raise OptionError(f"the model cannot run on a {size}-pixel input: {str(exc).splitlines()[0][:160]}",
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
        want_steps = pm.has_impls("vizcore_render_step") or on_step is not None
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
                            chunk=ci, n_chunks=n_chunks, unit_offset=a * k, total_units=n_units * k)
            torch.manual_seed(seed)
            p = param_factory((n_img, *shape[1:]), units=b - a, **(param_options or {})).to(dev)
            opt = torch.optim.Adam(p.parameters(), lr=lr)
            pm.call("vizcore_render_start", run=run)
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
                    pm.call("vizcore_render_step", run=run, state=state)
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

        pending = list(_chunks(n_units, chunk))
        done = 0
        run: RenderRun | None = None
        while done < len(pending):
            a, b = pending[done]
            try:
                run, trace_steps = run_chunk(done, a, b, len(pending))
                done += 1
                continue
            except Exception as exc:  # noqa: BLE001  out of memory is retried below; anything else propagates
                if not _is_oom(exc):
                    raise
            # out of memory (the exception and its frames are gone here): retry the rest in half-size chunks
            _release_memory(dev)
            if b - a == 1:
                raise DeviceError(f"out of memory on {dev} with a single unit at {size} px",
                                  "lower --size, give a smaller --max-memory, or use --device cpu")
            half = max(1, (b - a) // 2)
            pending = pending[:done] + list(_chunks(n_units, half, first=a))
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
    pm.call("vizcore_render_end", run=run, result=result)
    return result
