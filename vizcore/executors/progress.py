"""Progress over all units of a job, whatever runs them: done / running / failed, units per second, ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobProgress:
    """Counts of units; `rate` and `eta` from the units finished since the job started (cached ones excluded)."""

    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    finished: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def rate(self) -> float:
        """Units per second so far."""
        dt = time.perf_counter() - self.started
        return self.done / dt if dt > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None before the first unit finished."""
        left = self.total - self.done - self.failed
        return left / self.rate if self.rate > 0 else None


class UnitBar:
    """A rich progress bar driven by JobProgress updates; starts at the first update, stops when the job ends."""

    def __init__(self, console: Any, disable: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("[bold]units[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[state]}"), console=console, disable=disable,
                                 transient=False)
        self.task: Any = None

    def __call__(self, p: JobProgress) -> None:
        if self.task is None:
            if p.finished:
                return
            self.progress.start()
            self.task = self.progress.add_task("units", total=p.total, state="")
        eta = "-" if p.eta is None else _clock(p.eta)
        state = f"running {p.running}  failed {p.failed}  {p.rate:.2f} units/s  ETA {eta}"
        self.progress.update(self.task, total=p.total, completed=p.done + p.failed, state=state)
        if p.finished:
            self.progress.stop()
            self.task = None


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
