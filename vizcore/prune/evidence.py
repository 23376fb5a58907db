"""What the channels did on the probes: per sink tensor, the check's own accumulator (`ChannelStats`: per channel
the largest |value|, min, max, std and a sketch that finds exact copies); and the check's verdicts, from its report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..channelstats import ChannelStats
from . import runtime

if TYPE_CHECKING:
    from ..health.results import CheckReport
    from .graph import Channels

@dataclass
class Evidence:
    """Statistics per sink tensor, the sources they came from, and the check's verdicts if one was given."""

    stats: dict[str, ChannelStats] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    check: CheckVerdicts | None = None
    sketch: bool = True  # the random-projection sketch that finds exact copies (the lossy mode needs only moments)

    def collect(self, outputs: dict[str, np.ndarray], start: int) -> None:
        for i, (name, x) in enumerate(sorted(outputs.items())):
            if name not in self.stats:
                self.stats[name] = ChannelStats(moments=True, sketch_seed=1000 + i if self.sketch else None)
            self.stats[name].add(x, start)


@dataclass
class CheckVerdicts:
    """What `vizcore check` said: per layer name (the measured node's name), its dead and constant channels."""

    path: str
    dead: dict[str, set[int]]
    constant: dict[str, set[int]]


def verdicts(report: CheckReport, path: str) -> CheckVerdicts:
    """The dead and constant channels of a check report (read by `vizcore.health.read_report`, the one reader of
    that format), per measured layer name."""
    dead = {lay.name: {int(c) for c in lay.dead} for lay in report.layers}
    const = {lay.name: {int(c) for c in lay.constant} for lay in report.layers}
    return CheckVerdicts(path, dead, const)


def gather_evidence(model, ch: Channels, sets: dict, check: CheckVerdicts | None, batch: int,
                    sketch: bool = True) -> Evidence:
    """Sink-tensor statistics over every evidence input."""
    ev = Evidence(check=check, sketch=sketch)
    tensors = sorted({s.tensor for s in ch.sinks} | {t for gate in ch.gates for t in gate[:2]})
    if not tensors:
        return ev
    sess = runtime.session(model, tensors)
    start = 0
    for name, feed in sets.items():
        n = len(next(iter(feed.values())))
        ev.sources[name] = n
        for out in runtime.run_all(sess, runtime.chunks(feed, batch)):
            ev.collect({t: out[t] for t in tensors}, start)
            start += len(out[tensors[0]])
    return ev
