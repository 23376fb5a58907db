"""The executor protocol and what travels between the driver and the workers: a Chunk and its ChunkResult."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from ..engine.options import RenderOptions
    from ..model import Model
    from ..objectives import Objective

INSTALL_HINT = 'install it with: pip install "vizcore[ray]"'


@dataclass
class Chunk:
    """Units rendered together in one batch: their objectives, the render's options, and the driver's tags."""

    objectives: list[Objective]
    options: RenderOptions  # the render's, with batch_size (the chunk's length) and max_memory fixed by the plan
    tags: list[Any] = field(default_factory=list)  # one per objective: what the driver needs to file the result
    encode: Callable[[Any], bytes] | None = None  # image -> file bytes, run on the worker (the driver only writes)
    exporters: tuple[str, ...] = ()  # the names the driver exports with (plugins that record for one record)

    def __len__(self) -> int:
        return len(self.objectives)

    def split(self) -> list[Chunk]:
        """Two halves (the engine's out-of-memory rule): the first `len // 2` units, then the rest."""
        half = max(1, len(self) // 2)
        return [Chunk(self.objectives[a:b], self.options.replace(batch_size=b - a), self.tags[a:b], self.encode,
                      self.exporters) for a, b in ((0, half), (half, len(self))) if b > a]


@dataclass
class ChunkResult:
    """A rendered chunk: images (n, H, W, C) uint8, values, best values and traces per image, as `Result` has them."""

    images: np.ndarray
    values: np.ndarray
    best_values: np.ndarray
    traces: list[list[float]]
    trace_steps: list[int]
    settings: dict[str, Any]
    warnings: list[str]
    seconds: float
    worker: str = ""
    pngs: list[bytes] = field(default_factory=list)  # when the chunk asked for them
    extras: dict[str, dict[int, Any]] = field(default_factory=dict)  # per-image extras, by the chunk's image index


@runtime_checkable
class Executor(Protocol):
    """Runs chunks. `start` once per job, then `submit`/`wait` until nothing is pending, then `close`."""

    name: str

    def start(self, model: Model, size: int | None, device: str, plugins: Any = None) -> None:
        """Get workers ready for `model` (loaded once per worker); `plugins`: the manager for in-process work."""

    @property
    def workers(self) -> int:
        """How many chunks run at the same time."""

    def plan(self, objectives: list[Objective], options: RenderOptions) -> tuple[int, int]:
        """(units per chunk, memory budget): the engine's plan on the workers' device."""

    def submit(self, chunk: Chunk) -> None:
        """Queue one chunk."""

    def pending(self) -> int:
        """Chunks submitted and not yet returned by `wait`."""

    def wait(self) -> list[tuple[Chunk, ChunkResult | BaseException]]:
        """Block until at least one chunk finished; each with its result or the exception it ended with."""

    def close(self) -> None:
        """Release the workers (and a Ray instance this executor started)."""
