"""Progress for the long commands (check, diff, render): rich on a terminal; without one (a CI log, a pipe) plain
lines, at most one every few seconds and one whenever the stage changes, each with the time spent and an ETA:

    check: probes 120/256 images, 35 s, ETA 40 s

The library reports its stages through the `progress` callbacks it is given (`check(progress=...)`,
`render(on_step=...)`); only this module turns them into lines.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any

#: Seconds between two plain lines of one stage.
EVERY = 5.0

_FRACTION = re.compile(r"(\d+)/(\d+)")


class PlainLines:
    """A `progress(message)` callback that prints `COMMAND: message, 12 s, ETA 30 s` lines to `write`."""

    def __init__(self, command: str, write: Callable[[str], None] | None = None, every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.command, self.every, self.clock = command, every, clock
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.stage, self.since, self.last = "", clock(), -float("inf")

    def __call__(self, message: str, done: float | None = None, total: float | None = None) -> None:
        now = self.clock()
        stage = re.split(r"[\d:]", message, maxsplit=1)[0].strip()
        if stage != self.stage:
            self.stage, self.since, self.last = stage, now, -float("inf")
        if done is None and (m := _FRACTION.search(message)):
            done, total = float(m.group(1)), float(m.group(2))
        finished = done is not None and total is not None and done >= total
        if now - self.last < self.every and not finished:
            return
        self.last = now
        head, eta, tail = message.partition(", ETA")  # the library's own ETA goes after the time spent
        self.write(f"{self.command}: {head}, {now - self.since:.0f} s{eta}{tail}{self._eta(message, done, total, now)}")

    def _eta(self, message: str, done: float | None, total: float | None, now: float) -> str:
        if "ETA" in message:
            return ""
        spent = now - self.since
        if not done or not total or done >= total or spent < 1:
            return ""
        return f", ETA {spent * (total - done) / done:.0f} s"


class RenderLines:
    """A render's `on_step(run, state)` that reports through `PlainLines`: units and steps done, with an ETA."""

    def __init__(self, lines: PlainLines) -> None:
        self.lines = lines

    def __call__(self, run: Any, state: Any) -> None:  # every optimisation step: nothing is formatted until due
        total = run.steps * run.n_chunks
        done = run.chunk * run.steps + state.step
        if done < total and self.lines.clock() - self.lines.last < self.lines.every:
            return
        self.lines(f"units {run.unit_offset + len(run.units)}/{run.total_units}, steps {done}/{total}", done, total)
