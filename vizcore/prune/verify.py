"""Original vs pruned in onnxruntime on every input set: max |difference| per output relative to the output's
scale, top-1 agreement for classifiers; and the bisection that names the class whose removal breaks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import runtime


@dataclass
class Comparison:
    """One input set: per output, max abs difference, the output's scale (max |original|), relative, top-1."""

    inputs: str
    samples: int
    batch: int
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max((o["relative"] for o in self.outputs.values()), default=0.0)

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "samples": self.samples, "batch": self.batch, "outputs": self.outputs}


def compare(sess_a, sess_b, name: str, feed: dict[str, np.ndarray], batch: int) -> Comparison:
    """Run both sessions on `feed` in batches of `batch` and compare every output."""
    outs = [o.name for o in sess_a.get_outputs()]
    diff = {o: 0.0 for o in outs}
    scale = {o: 0.0 for o in outs}
    agree = {o: [0, 0] for o in outs}
    n = 0
    for b in runtime.chunks(feed, batch):
        ya, yb = sess_a.run(outs, b), sess_b.run(outs, b)
        n += len(next(iter(b.values())))
        for o, a, p in zip(outs, ya, yb):
            a64, p64 = np.asarray(a, np.float64), np.asarray(p, np.float64)
            if a64.shape != p64.shape:
                diff[o], scale[o] = float("inf"), 1.0
                continue
            diff[o] = max(diff[o], _max_diff(a64, p64))
            finite = np.abs(a64[np.isfinite(a64)])
            scale[o] = max(scale[o], float(finite.max()) if finite.size else 0.0)
            if a64.ndim == 2 and a64.shape[1] > 1:
                agree[o][0] += int(np.sum(a64.argmax(1) == p64.argmax(1)))
                agree[o][1] += a64.shape[0]
    c = Comparison(name, n, batch)
    for o in outs:
        rel = diff[o] / scale[o] if scale[o] > 0 else diff[o]
        entry = {"max_abs_diff": diff[o], "scale": scale[o], "relative": rel}
        if agree[o][1]:
            entry["top1_agreement"] = agree[o][0] / agree[o][1]
        c.outputs[o] = entry
    return c


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|, where equal values (NaN where the original is NaN too, the same infinity) differ by 0 and a
    NaN or infinity that only one side has differs by infinity: NaN never hides a difference."""
    if not a.size:
        return 0.0
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where(same, 0.0, np.abs(a - b))
    return float(np.nan_to_num(d, nan=np.inf).max())


def bisect(actions: list, fails: Callable[[list], bool]) -> tuple[object, bool]:
    """The action that first makes `fails(prefix)` true (binary search over prefixes) and whether it fails alone."""
    lo, hi = 1, len(actions)
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(actions[:mid]):
            hi = mid
        else:
            lo = mid + 1
    culprit = actions[lo - 1]
    return culprit, fails([culprit])
