"""What the channels did on the probes: per sink tensor and channel, the largest |value|, min, max and a sketch
(random projections) that finds exact copies; and the check's verdicts, taken from its report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..health.results import CheckReport

SKETCHES = 4


@dataclass
class TensorStats:
    """Per-channel statistics of one tensor over every probe it saw."""

    maxabs: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sketch: np.ndarray  # (C, SKETCHES) float64
    total: np.ndarray
    sumsq: np.ndarray
    count: int = 0
    samples: int = 0

    @classmethod
    def empty(cls, c: int) -> TensorStats:
        return cls(np.zeros(c), np.full(c, np.inf), np.full(c, -np.inf), np.zeros((c, SKETCHES)), np.zeros(c),
                   np.zeros(c))

    @property
    def std(self) -> np.ndarray:
        """Per-channel standard deviation over every sample and position."""
        n = max(self.count, 1)
        return np.sqrt(np.maximum(self.sumsq / n - (self.total / n) ** 2, 0.0))

    def add(self, x: np.ndarray, start: int, seed: int) -> None:
        """Fold in a batch `x` (N, C, ...) whose first sample is probe number `start`."""
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1).astype(np.float64)
        self.maxabs = np.maximum(self.maxabs, np.abs(flat).max(axis=(0, 2)))
        self.lo = np.minimum(self.lo, flat.min(axis=(0, 2)))
        self.hi = np.maximum(self.hi, flat.max(axis=(0, 2)))
        rng = np.random.default_rng(seed)
        proj = rng.standard_normal((flat.shape[2], SKETCHES))
        weights = np.random.default_rng([seed, start]).standard_normal(n)
        self.sketch += np.einsum("ncs,sk,n->ck", flat, proj, weights)
        self.total += flat.sum(axis=(0, 2))
        self.sumsq += np.square(flat).sum(axis=(0, 2))
        self.count += n * flat.shape[2]
        self.samples += n


@dataclass
class Evidence:
    """Statistics per sink tensor, the sources they came from, and the check's verdicts if one was given."""

    stats: dict[str, TensorStats] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    check: CheckVerdicts | None = None

    def collect(self, outputs: dict[str, np.ndarray], start: int) -> None:
        for i, (name, x) in enumerate(sorted(outputs.items())):
            if name not in self.stats:
                self.stats[name] = TensorStats.empty(x.shape[1])
            self.stats[name].add(x, start, seed=1000 + i)


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
