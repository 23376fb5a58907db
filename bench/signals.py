"""1-D renders that a person can read (issue 13): how many samples end at the ends of the value range.

Builds the small trained-ish 1-D models of tests/signal_zoo.py (audio tones/chirp, 4-channel EEG with an LSTM,
a VAD front end; a few hundred seeded training steps each, so filters are frequency-selective), renders some
channels and classes with the old defaults (`--param fft`, no penalty: "before") and with today's defaults for
1-D inputs ("after"), interleaved model by model, and prints for every unit:

- saturated: the fraction of samples within 1 % of the ends of the value range the model declares
  (`vizcore.range`); on the uint8 result that is a value <= 2 or >= 253 of 255. Goal: <= 10 % after.
- value: the objective on the final signal; goal: after >= GOAL_VALUE x before for the median unit (a signal
  kept off the rails gives up some of the objective that a square wave at the rails reaches).
- dc: the share of the signal's power (around mid-range) in its mean, no goal: 100 % is a constant level. Shown
  because a unit that prefers a constant offset gets one; "nodc" (`param_options={"dc": False}`) holds the mean
  at mid-range and shows how much of the objective that costs.

    nice -n 10 .venv/bin/python bench/signals.py [--steps N] [--out DIR]   # DIR: PNG + .npy of every render

"plain" is the 1-D default until 2026-12-07 (Adam, 256 steps), "after" today's (NAdam, 128 steps): issue 27 asks
that the 1-D renders do not regress (value, saturated fraction).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

GOAL_SATURATED = 0.10  # after: at most this fraction of samples within 1 % of the range ends
GOAL_VALUE = 0.5  # after: median objective at least this fraction of before's
# ReLU outputs (a pre-activation conv channel's mean is linear in the input's mean: its best input is a constant
# level, whatever the parameterization), plus classes.
TARGETS = {
    "audio": ["/Relu:0-3", "/Relu_2:0-3", "class:1", "class:2", "class:3"],
    "eeg": ["/Relu_1:0-3", "class:0", "class:2"],
    "vad": ["/Relu_1:0-3", "class:1"],
}
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"param": "fft", "quality": "plain"},  # the old default for every input: fft + sigmoid, no penalty
    "plain": {"quality": "plain"},  # the 1-D defaults until 2026-12-07: signal + ends, Adam, 256 steps
    "after": {},  # today's defaults (for a 1-D input: see README "Defaults, and why")
    "nodc": {"param_options": {"dc": False}},  # the defaults with the signal's mean held at mid-range
}


def saturated(signal: np.ndarray) -> float:
    """Fraction of the uint8 samples (L, C) within 1 % of 0 or 255 (<= 2.55 from an end)."""
    s = np.asarray(signal)
    return float(((s <= 2) | (s >= 253)).mean())


def dc_share(signal: np.ndarray) -> float:
    """The share of the signal's power around mid-range that is in its per-channel mean (1.0: a constant)."""
    d = np.asarray(signal, dtype=np.float64) / 255 - 0.5
    return float((d.mean(0) ** 2).sum() / max((d ** 2).mean(0).sum(), 1e-12))


def render(model: Any, targets: list[str], steps: int | None, variant: str) -> Any:
    """`steps` None: each variant's preset's own (plain 256, default 128)."""
    import vizcore

    given = {} if steps is None else {"steps": steps}
    return vizcore.render(model, targets, device="cpu", seed=0, on_warning=lambda m: None, **given,
                          **VARIANTS[variant])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="default: each variant's preset's own")
    ap.add_argument("--out", type=Path, default=None, help="write each render (PNG, .npy) into DIR/KIND-VARIANT")
    ap.add_argument("--variants", default="before,plain,after,nodc")
    args = ap.parse_args()
    import signal_zoo

    import vizcore

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows: list[tuple[str, str, dict[str, tuple[float, float, float]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, targets in TARGETS.items():
            net, acc = signal_zoo.train(kind)
            model = vizcore.load(signal_zoo.export(kind, Path(tmp), net))
            per: dict[str, Any] = {}
            for v in variants:  # interleaved: both variants of one model back to back
                t0 = time.perf_counter()
                per[v] = render(model, targets, args.steps, v)
                print(f"{kind} (train acc {acc:.2f}) {v}: {len(per[v])} units in {time.perf_counter() - t0:.1f} s "
                      f"(param {per[v].settings['param']}, penalties {per[v].settings['regularizers']})")
                if args.out:
                    per[v].save(args.out / f"{kind}-{v}", force=True)
            for i, u in enumerate(per[variants[0]].units):
                rows.append((kind, u.target, {v: (saturated(r.images[i]), float(r.values[i]), dc_share(r.images[i]))
                                                for v, r in per.items()}))
    report(rows, variants)
    return 0


def report(rows: list[tuple[str, str, dict[str, tuple[float, float, float]]]], variants: list[str]) -> None:
    head = " ".join(f"{v + ' sat':>10} {v + ' value':>12} {v + ' dc':>8}" for v in variants)
    print(f"\n{'model':6} {'unit':14} {head}")
    for kind, target, cells in rows:
        print(f"{kind:6} {target:14} " + " ".join(f"{cells[v][0]:>10.1%} {cells[v][1]:>12.4g} {cells[v][2]:>8.0%}"
                                                   for v in variants))
    for v in variants:
        sats, dcs = [c[v][0] for _, _, c in rows], [c[v][2] for _, _, c in rows]
        line = f"{v}: saturated median {statistics.median(sats):.1%}, max {max(sats):.1%}, mean {np.mean(sats):.1%}; " \
               f"dc share median {statistics.median(dcs):.0%}"
        for ref in ("before", "plain"):
            if v not in ("before", ref) and ref in variants:
                ratios = [c[v][1] / c[ref][1] for _, _, c in rows if c[ref][1] > 0]
                line += f"; value / {ref}'s: median {statistics.median(ratios):.0%} (min {min(ratios):.0%}, " \
                        f"max {max(ratios):.0%}, {len(ratios)} units with a positive value {ref})"
        print(line)
    if {"before", "after"} <= set(variants):
        worst = max(c["after"][0] for _, _, c in rows)
        med = statistics.median([c["after"][1] / c["before"][1] for _, _, c in rows if c["before"][1] > 0])
        print(f"goal after: saturated <= {GOAL_SATURATED:.0%} on every unit: max {worst:.1%}  "
              f"{'MET' if worst <= GOAL_SATURATED else 'NOT MET'}")
        print(f"goal after: value >= {GOAL_VALUE:.0%} of before's (median): {med:.0%}  "
              f"{'MET' if med >= GOAL_VALUE else 'NOT MET'}")


if __name__ == "__main__":
    raise SystemExit(main())
