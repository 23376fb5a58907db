"""Per-channel statistics of one tensor over many inputs: the one accumulator `check` (torch activations) and
`prune` (onnxruntime outputs) share, in numpy.

Per position it keeps the largest and smallest value seen (the peak, and how much the output changes from one
input to another), per channel the count of values <= 0 (APoZ), and on request the moments (std) and a sketch of
random projections that finds exact copies of a channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKETCHES = 4


@dataclass
class LayerStats:
    """Per channel of one layer, over all inputs: `peak` (largest value anywhere), `spread` (largest change of the
    output at one position from one input to another), `nonfinite` (NaN/Inf seen) and `scale` (the layer's
    largest finite |value|)."""

    peak: np.ndarray
    spread: np.ndarray
    nonfinite: np.ndarray
    scale: float
    apoz: np.ndarray | None = None  # fraction of outputs <= 0 per channel (Hu et al. 2016), over every position
    count: int = 0  # inputs seen


class ChannelStats:
    """Running statistics of a tensor (N, C, ...) batch after batch. `moments`: also sums for the mean and std;
    `sketch_seed`: also the random-projection sketch (the same seed gives comparable sketches)."""

    def __init__(self, *, moments: bool = False, sketch_seed: int | None = None) -> None:
        self.moments, self.sketch_seed = moments, sketch_seed
        self.hi_at: np.ndarray | None = None  # (C, ...) largest value per position
        self.lo_at: np.ndarray | None = None
        self.zeros: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.sumsq: np.ndarray | None = None
        self.sketch: np.ndarray | None = None  # (C, SKETCHES) float64
        self.count = 0  # values per channel seen (samples x positions)
        self._cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.samples = 0

    def add(self, x: np.ndarray, start: int = 0) -> None:
        """Fold in a batch `x` (N, C, ...) whose first sample is input number `start` (for the sketch)."""
        x = np.asarray(x)
        self._cached = None
        if x.ndim < 2:
            x = x.reshape(x.shape[0], 1)
        n, c = x.shape[:2]
        hi, lo = x.max(0), x.min(0)
        self.hi_at = hi if self.hi_at is None else np.maximum(self.hi_at, hi)
        self.lo_at = lo if self.lo_at is None else np.minimum(self.lo_at, lo)
        flat = x.reshape(n, c, -1)
        z = (flat <= 0).sum((0, 2)).astype(np.float64)
        self.zeros = z if self.zeros is None else self.zeros + z
        if self.moments or self.sketch_seed is not None:
            self._more(flat.astype(np.float64), start)
        self.count += n * flat.shape[2]
        self.samples += n

    def _more(self, flat: np.ndarray, start: int) -> None:
        c = flat.shape[1]
        if self.moments:
            if self.total is None:
                self.total, self.sumsq = np.zeros(c), np.zeros(c)
            self.total += flat.sum((0, 2))
            self.sumsq += np.square(flat).sum((0, 2))
        if self.sketch_seed is not None:
            proj = np.random.default_rng(self.sketch_seed).standard_normal((flat.shape[2], SKETCHES))
            weights = np.random.default_rng([self.sketch_seed, start]).standard_normal(flat.shape[0])
            part = np.einsum("ncs,sk,n->ck", flat, proj, weights)
            self.sketch = part if self.sketch is None else self.sketch + part

    def _per_channel(self, a: np.ndarray | None) -> np.ndarray:
        assert a is not None, "no batch added"
        return a.reshape(a.shape[0], -1)

    @property
    def hi(self) -> np.ndarray:
        """Largest value per channel (float64)."""
        return self._extremes()[0]

    @property
    def lo(self) -> np.ndarray:
        """Smallest value per channel (float64)."""
        return self._extremes()[1]

    @property
    def maxabs(self) -> np.ndarray:
        """Largest |value| per channel."""
        return self._extremes()[2]

    def _extremes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hi, lo, maxabs) per channel, reduced once after the last `add` (prune reads them channel by channel)."""
        if self._cached is None:
            hi = self._per_channel(self.hi_at).max(1).astype(np.float64)
            lo = self._per_channel(self.lo_at).min(1).astype(np.float64)
            self._cached = hi, lo, np.maximum(np.abs(hi), np.abs(lo))
        return self._cached

    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean over every sample and position (needs `moments`)."""
        assert self.total is not None, "made without moments"
        return self.total / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        """Per-channel standard deviation over every sample and position (needs `moments`)."""
        assert self.total is not None and self.sumsq is not None, "made without moments"
        n = max(self.count, 1)
        return np.sqrt(np.maximum(self.sumsq / n - (self.total / n) ** 2, 0.0))

    def summary(self) -> LayerStats:
        """The check's view: peak, spread, non-finite channels, scale, APoZ."""
        hi, lo = self._per_channel(self.hi_at).astype(np.float64), self._per_channel(self.lo_at).astype(np.float64)
        bad = ~(np.isfinite(hi).all(1) & np.isfinite(lo).all(1))
        fin_hi = np.where(np.isfinite(hi), np.abs(hi), 0.0)
        fin_lo = np.where(np.isfinite(lo), np.abs(lo), 0.0)
        scale = float(max(fin_hi.max(initial=0.0), fin_lo.max(initial=0.0)))
        apoz = self.zeros / max(self.count, 1) if self.zeros is not None else None
        return LayerStats(hi.max(1), (hi - lo).max(1), bad, scale, apoz, self.samples)
