"""The budget of a lossy prune: how closely the smaller model must agree with the original on the user's data,
without labels; and the agreement metrics, measured on the outputs of both models.

    top1=0.99   the argmax agrees on at least 99 % of the inputs (classifier outputs, (N, K))
    rel=0.02    max |original - pruned| <= 2 % of the output's largest |value| (every output)
    cos=0.995   mean cosine similarity per sample >= 0.995 (every output)
    kl=0.01     mean KL(softmax(original) || softmax(pruned)) <= 0.01 (classifier outputs; rows that are already
                distributions are taken as they are)

One metric, optionally with a MACs target: `top1=0.99,macs=0.75` also requires at most 75 % of the original MACs
(the search stops there; a target it cannot reach fails the prune).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError

#: metric -> (higher is better, what it is, the bound's valid range)
METRICS = {"top1": (True, "top-1 agreement", (0.0, 1.0)), "cos": (True, "mean cosine", (-1.0, 1.0)),
           "rel": (False, "max relative error", (0.0, math.inf)), "kl": (False, "mean KL", (0.0, math.inf))}
CLASSIFIER_ONLY = ("top1", "kl")
HINT = "e.g. --budget top1=0.99, rel=0.02, cos=0.995 or kl=0.01 (optionally ,macs=0.75)"


@dataclass(frozen=True)
class Budget:
    """One agreement metric and its bound; `macs`: the largest fraction of the original MACs to reach (optional)."""

    metric: str
    bound: float
    macs: float | None = None

    @property
    def higher(self) -> bool:
        return METRICS[self.metric][0]

    def met(self, value: float) -> bool:
        """Whether a measured value of the metric is within the budget (NaN never is)."""
        return bool(value >= self.bound) if self.higher else bool(value <= self.bound)

    def missed_by(self, value: float) -> float:
        """How far a value is on the wrong side of the bound (0 when met, inf for NaN)."""
        if math.isnan(value):
            return math.inf
        return max(0.0, self.bound - value) if self.higher else max(0.0, value - self.bound)

    def to_json(self) -> dict:
        return {"metric": self.metric, "bound": self.bound, "macs": self.macs, "means": METRICS[self.metric][1]}

    def __str__(self) -> str:
        return f"{self.metric}={self.bound:g}" + (f",macs={self.macs:g}" if self.macs is not None else "")


def parse_budget(text: str | Budget) -> Budget:
    """`top1=0.99` (or `rel=0.02`, `cos=…`, `kl=…`, with `,macs=F` optionally) as a Budget; one-line errors."""
    if isinstance(text, Budget):
        return text
    if not isinstance(text, str) or not text.strip():
        raise OptionError(f"--budget {text!r}: empty", HINT)
    metric, bound, macs = None, None, None
    for part in text.replace(" ", "").split(","):
        key, sep, val = part.partition("=")
        try:
            num = float(val)
        except ValueError:
            num = math.nan
        if not sep or not math.isfinite(num):
            raise OptionError(f"--budget {text!r}: {part!r} is not NAME=NUMBER", HINT)
        if key == "macs":
            if not 0 < num <= 1:
                raise OptionError(f"--budget {text!r}: macs={val} must be a fraction in (0, 1]", HINT)
            macs = num
        elif key in METRICS:
            if metric is not None:
                raise OptionError(f"--budget {text!r}: one agreement metric at a time", HINT)
            lo, hi = METRICS[key][2]
            if not lo <= num <= hi or (key == "top1" and num == 0):
                raise OptionError(f"--budget {text!r}: {key}={val} is outside [{lo:g}, {hi:g}]", HINT)
            metric, bound = key, num
        else:
            raise OptionError(f"--budget {text!r}: unknown metric {key!r}", HINT)
    if metric is None or bound is None:
        raise OptionError(f"--budget {text!r}: no agreement metric", HINT)
    return Budget(metric, bound, macs)


def is_classifier(y: np.ndarray) -> bool:
    """An (N, K) output with K > 1: top-1 and KL apply."""
    return y.ndim == 2 and y.shape[1] > 1


def _probs(y: np.ndarray) -> np.ndarray:
    y = y.astype(np.float64)
    if np.all(y >= 0) and np.allclose(y.sum(1), 1.0, atol=1e-4):
        return np.clip(y, 1e-12, None)
    e = np.exp(y - y.max(1, keepdims=True))
    return np.clip(e / e.sum(1, keepdims=True), 1e-12, None)


def agreement(ref: Sequence[np.ndarray], new: Sequence[np.ndarray]) -> dict[str, float]:
    """Every metric that applies, worst over the outputs: top1 and kl over classifier outputs, rel and cos over all.
    A pruned output of another shape, or a sample with a non-finite value in either output, counts as total
    disagreement."""
    out: dict[str, float] = {"rel": 0.0, "cos": 1.0}
    for a, b in zip(ref, new):
        a64 = np.asarray(a, np.float64)
        b64 = np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            return {"top1": 0.0, "kl": math.inf, "rel": math.inf, "cos": -1.0}
        fa, fb = a64.reshape(len(a64), -1), b64.reshape(len(b64), -1)
        bad = ~(np.isfinite(fa).all(1) & np.isfinite(fb).all(1))
        fa, fb = np.where(bad[:, None], 0.0, fa), np.where(bad[:, None], 0.0, fb)
        scale = float(np.max(np.abs(fa))) if fa.size else 0.0
        diff = float(np.max(np.abs(fa - fb))) if fa.size else 0.0
        out["rel"] = math.inf if bad.any() else max(out["rel"], diff / scale if scale > 0 else diff)
        na, nb = np.linalg.norm(fa, axis=1), np.linalg.norm(fb, axis=1)
        both = (na > 0) & (nb > 0)
        cos = np.where(both, (fa * fb).sum(1) / np.where(both, na * nb, 1.0), np.where(na == nb, 1.0, 0.0))
        out["cos"] = min(out["cos"], float(np.where(bad, -1.0, cos).mean()) if len(cos) else 1.0)
        if is_classifier(a64):
            top = float(np.mean((fa.argmax(1) == fb.argmax(1)) & ~bad))
            pa, pb = _probs(fa), _probs(fb)
            kl = math.inf if bad.any() else float(np.mean(np.sum(pa * (np.log(pa) - np.log(pb)), axis=1)))
            out["top1"] = min(out.get("top1", 1.0), top)
            out["kl"] = max(out.get("kl", 0.0), kl)
    return out


def check_applies(budget: Budget, outputs: Sequence[np.ndarray]) -> None:
    """Refuse a classifier metric for a model without an (N, K) output."""
    if budget.metric in CLASSIFIER_ONLY and not any(is_classifier(np.asarray(y)) for y in outputs):
        shapes = ", ".join(str(list(np.shape(y))) for y in outputs)
        raise OptionError(f"--budget {budget}: {budget.metric} needs a classifier output (N, K); this model's outputs "
                          f"are {shapes}", "use rel=… or cos=… for other outputs")
