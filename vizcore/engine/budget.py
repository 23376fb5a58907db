"""How many units fit in one chunk: the memory budget, the per-image estimate, chunking and out-of-memory retries."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from ..errors import DeviceError, OptionError

if TYPE_CHECKING:
    from ..model import Model

T = TypeVar("T")


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
        value = float(t[:-1] if t[-1:] in "KMGT" else t) * mult
    except ValueError as exc:
        raise OptionError(f"cannot read memory size {text!r}", "write e.g. 512M or 4G") from exc
    if not math.isfinite(value):
        raise OptionError(f"memory size {text!r} is not a finite size", "write e.g. 512M or 4G")
    return int(value)


def bytes_per_image(model: Model, deepest: int, shape: Sequence[int], amp: bool) -> int:
    """Rough peak memory of one image's forward+backward up to the deepest layer (activations kept for backward)."""
    probe = model.input_shape(1)
    scale = float(np.prod(shape[2:])) / float(np.prod(probe[2:]))
    numel = sum(int(np.prod(l.shape)) for l in model.layers[: deepest + 1] if l.shape)
    bytes_per = 2 if amp else 4
    return int(numel * scale * bytes_per * 3 + np.prod(shape[1:]) * 4 * 16)


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


#: Bytes a step moves per second, for the up-front estimate of a render's time: kept high (a fast machine), so
#: that only renders that would take far too long even there are refused.
THROUGHPUT = {"cpu": 8e9, "cuda": 4e11}
MAX_SECONDS = 24 * 3600


def input_bytes(size: int | Sequence[int], channels: int = 3, spatial: int = 2) -> int:
    """Memory one image's parameterization, gradients, optimizer state and transformed copies need at least
    (`size`: one side for every spatial dim, or one value per dim)."""
    dims = [float(size)] * spatial if isinstance(size, int) else [float(d) for d in size]
    return int(channels * math.prod(dims) * 4 * 16)


def refuse_size(size: int | Sequence[int] | None, budget: int, channels: int = 3, spatial: int = 2) -> None:
    """A DeviceError, before any work, for a size whose images alone exceed the memory budget."""
    if size is None:
        return
    need = input_bytes(size, channels, spatial)
    if need > budget:
        shown = size if isinstance(size, int) else "x".join(map(str, size))
        raise DeviceError(f"a {shown}-pixel image needs at least {_human(need)} but the memory budget is "
                          f"{_human(budget)}", "lower --size (e.g. 224) or raise --max-memory")


#: Largest result a render may hold in memory at the end (its images as float32): 8 GiB.
MAX_RESULT_BYTES = 8 * 2**30


def refuse_result(shape: Sequence[int], n_images: int) -> None:
    """An OptionError, before any work, when the rendered images alone (uint8, one per unit and image) would not
    fit in memory, whatever the chunking: e.g. `--images-per-unit 100000000` (part of `engine.setup.chunk_plan`)."""
    need = n_images * math.prod(int(d) for d in shape[1:])
    if need > MAX_RESULT_BYTES:
        raise OptionError(f"{n_images:,} images of {'x'.join(map(str, shape[1:]))} would hold {_human(need)} "
                          f"(at most {_human(MAX_RESULT_BYTES)})", "render fewer units or --images-per-unit")


def refuse_slow(per_image: int, steps: int, n_images: int, dev: torch.device) -> float:
    """The estimated seconds of a render; an OptionError, before any work, when it would take over a day."""
    seconds = per_image * float(steps) * n_images / THROUGHPUT.get(dev.type, THROUGHPUT["cpu"])
    if seconds > MAX_SECONDS:
        raise OptionError(f"{n_images} image(s) x {steps} steps would take about {seconds / 3600:.0f} hours or more "
                          f"on {dev}", "lower --steps or --size, or render fewer targets at a time")
    return seconds


def plan(per_image: int, budget: int, n_units: int, images_per_unit: int, batch_size: int | None,
         batch_ok: bool, note: Callable[[str], None]) -> int:
    """Units per chunk: as many as the budget holds, at most `batch_size`, 1 for batch-1 models; equal chunks."""
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
    return math.ceil(n_units / n_chunks)  # equal chunks: no small tail chunk with its own shapes


def run_chunks(n_units: int, chunk: int, run_chunk: Callable[[int, int, int, int], T], dev: torch.device,
               size: int, on_retry: Callable[[int, int], None]) -> list[T]:
    """`run_chunk(ci, a, b, n_chunks)` for every chunk of units; out of memory retries the rest in half-size chunks
    (`on_retry(old, new)` is told), down to one unit."""
    pending = list(chunks(n_units, chunk))
    out: list[T] = []
    while len(out) < len(pending):
        a, b = pending[len(out)]
        try:
            out.append(run_chunk(len(out), a, b, len(pending)))
            continue
        except Exception as exc:  # noqa: BLE001  out of memory is retried below; anything else propagates
            if not is_oom(exc):
                raise
        release_memory(dev)  # the exception and its frames are gone here
        if b - a == 1:
            raise DeviceError(f"out of memory on {dev} with a single unit at {size} px",
                              "lower --size, give a smaller --max-memory, or use --device cpu")
        half = max(1, (b - a) // 2)
        pending = pending[:len(out)] + list(chunks(n_units, half, first=a))
        on_retry(b - a, half)
    return out


def _human(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB"
