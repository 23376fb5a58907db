"""The local executor: chunks one after another in this process, on the caller's model (the engine's own path)."""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

from .base import Chunk, ChunkResult
from .worker import plan_chunks, render_chunk

if TYPE_CHECKING:
    from ..engine.options import RenderOptions
    from ..model import Model
    from ..objectives import Objective


class LocalExecutor:
    """Runs each chunk in this process when `wait` is called; an exception is handed back, not raised."""

    name = "local"

    def __init__(self, progress: Any = None) -> None:
        self.progress = progress  # called with a JobProgress as units finish
        self.plugins: Any = None
        self.model: Model | None = None
        self._queue: deque[Chunk] = deque()
        self._heap: contextlib.ExitStack | None = None

    def start(self, model: Model, size: int | None = None, device: str = "auto", plugins: Any = None) -> None:
        """Use the caller's model and plugin manager; on the CPU keep the render heap for the whole job."""
        from ..engine.device import cpu_heap, resolve_device

        self.model, self.plugins = model, plugins
        if self._heap is None and resolve_device(device).type == "cpu":
            self._heap = contextlib.ExitStack()
            self._heap.enter_context(cpu_heap())

    @property
    def workers(self) -> int:
        return 1

    def plan(self, objectives: list[Objective], options: RenderOptions) -> tuple[int, int]:
        assert self.model is not None, "start() first"
        return plan_chunks(self.model, objectives, options, self.plugins)

    def submit(self, chunk: Chunk) -> None:
        self._queue.append(chunk)

    def pending(self) -> int:
        return len(self._queue)

    def running(self) -> int:
        """Units rendering now (the next chunk, once `wait` runs it)."""
        return len(self._queue[0]) if self._queue else 0

    def wait(self) -> list[tuple[Chunk, ChunkResult | BaseException]]:
        assert self.model is not None, "start() first"
        chunk = self._queue.popleft()
        try:
            return [(chunk, render_chunk(self.model, chunk, worker="local", plugins=self.plugins))]
        except Exception as exc:  # noqa: BLE001  the driver decides: split, report, or raise
            return [(chunk, exc)]

    def close(self) -> None:
        if self._heap is not None:
            self._heap.close()
            self._heap = None
        self._queue.clear()
