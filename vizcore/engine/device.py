"""Where a render runs and the process settings it may switch while it runs (each restored afterwards).

`resolve_device` turns "auto" / "cpu" / "cuda:N" into a torch.device; `cpu_heap()` and `cudnn_autotune()` are the
two process-wide switches a render uses for speed, entered visibly by the engine (`device_settings`) as its
`RenderOptions` say (`cpu_heap`, `cudnn_benchmark`) and recorded in its settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import threading
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import DeviceError

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
def cpu_heap(enabled: bool = True) -> Iterator[None]:
    """Keep large tensors in glibc's heap while rendering on the CPU; give the memory back to the OS afterwards.

    glibc serves every allocation over its mmap threshold with a fresh mmap, so each step page-faults its big
    activations in again: 28 % of a MobileNetV2 step on 2 cores (bench/RESULTS.md). `enabled=False` (the render
    option `cpu_heap`, VIZCORE_CPU_HEAP=0) turns it off.
    Afterwards glibc keeps the thresholds its own dynamic tuning ends at in a busy torch process (mmap above 32 MiB,
    trim above 64 MiB): any mallopt call freezes that tuning, so vizcore sets its end state rather than the defaults.
    """
    global _heap_depth
    libc = _glibc() if enabled else None
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
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """Let cuDNN time its convolution algorithms once per shape and keep the fastest: a render repeats the same
    shapes for hundreds of steps. The previous setting is restored afterwards; `enabled=False` (the render option
    `cudnn_benchmark`, VIZCORE_CUDNN_BENCHMARK=0) turns it off.
    """
    if not enabled:
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def device_settings(dev: torch.device, cpu: bool = True, cuda: bool = True) -> contextlib.AbstractContextManager[None]:
    """The process settings a render on `dev` runs under: the CPU heap on the CPU (`cpu`), cuDNN autotuning on
    CUDA (`cuda`); each restored when the block ends."""
    if dev.type == "cpu":
        return cpu_heap(cpu)
    return cudnn_autotune(cuda) if dev.type == "cuda" else contextlib.nullcontext()


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
