"""How many units fit in one chunk: the memory budget, the per-image estimate, chunking and out-of-memory retries."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DeviceError, OptionError

if TYPE_CHECKING:
    from ..model import Model


def default_budget(device: torch.device) -> int:
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


def bytes_per_image(model: Model, deepest: int, shape: Sequence[int], amp: bool) -> int:
    """Rough peak memory of one image's forward+backward up to the deepest layer (activations kept for backward)."""
    probe = model.input_shape(1)
    scale = float(np.prod(shape[2:])) / float(np.prod(probe[2:]))
    numel = sum(int(np.prod(l.shape)) for l in model.layers[: deepest + 1] if l.shape)
    bytes_per = 2 if amp else 4
    return int(numel * scale * bytes_per * 3 + np.prod(shape[1:]) * 4 * 16)


def chunk_plan(model: Model, indices: Sequence[int], shape: Sequence[int], amp: bool, n_units: int,
               images_per_unit: int, max_memory: str | int | None, batch_size: int | None, dev: torch.device,
               batch_ok: bool, note: Callable[[str], None]) -> tuple[int, int]:
    """(units per chunk, memory budget in bytes): equal chunks that fit the budget; `chunks` gives the bounds.

    The engine and vizcore.executors both plan with it, so a chunk sent elsewhere holds the units it would hold here.
    """
    per_image = bytes_per_image(model, max(indices), shape, amp)
    budget = parse_memory(max_memory) or default_budget(dev)
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


def chunks(n: int, size: int, first: int = 0) -> Iterable[tuple[int, int]]:
    """(start, end) of consecutive chunks of `size` units from `first` to `n`."""
    for start in range(first, n, size):
        yield start, min(n, start + size)


def is_oom(exc: BaseException) -> bool:
    """An allocation failure of the device (CUDA) or of torch's CPU allocator."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower())


def release_memory(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
