"""What the channels did on the probes: per sink tensor and channel, the largest |value|, min, max and a sketch
(random projections) that finds exact copies; plus the one adapter that reads `vizcore check --json` files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OptionError

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


def read_check(path: str | Path) -> CheckVerdicts:
    """The one adapter for the check JSON schema ({"layers": [{"name", "dead", "constant"}]})."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        layers = data["layers"]
        dead = {str(d["name"]): {int(c) for c in d.get("dead", [])} for d in layers}
        const = {str(d["name"]): {int(c) for c in d.get("constant", [])} for d in layers}
    except OSError as exc:
        raise OptionError(f"--from-check {p}: cannot read it: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise OptionError(f"--from-check {p}: not a `vizcore check --json` report ({exc})",
                          "write one with `vizcore check MODEL --json check.json`") from exc
    return CheckVerdicts(str(p), dead, const)
