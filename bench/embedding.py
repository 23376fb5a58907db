"""Optimized embeddings (a text model's input node): what the default render (NAdam on horama's standardized Fourier
image, 144 steps, issue 27) does to them against the `plain` preset (Adam on Lucid's image, 256 steps, the default
until 2026-12-07).

The model is tests/tiny.py's TextEncoder (Embedding(50, 8) -> Linear -> ReLU -> masked mean -> 3 logits, seeded
weights), rendered from its embedding lookup's output (`input=`, the mask fed as ones) at 12 positions, without
transforms (a fed mask fixes the length). Per variant, over seeds 0-2, for 3 class logits and 6 ReLU channels:

- objective: the final value per unit (mean over seeds);
- saturated: the fraction of embedding values within 1 % of the ends of the range the table gives
  (uint8 <= 2 or >= 253): a render that pins values to the ends reads as no token;
- cosine: the mean cosine of each position's embedding to its nearest row of the table (`nearest_tokens`):
  how token-like the optimized embedding is.

    nice -n 10 .venv/bin/python bench/embedding.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

VARIANTS = {"default": {}, "plain": {"quality": "plain"}, "default lr 0.05": {"lr": 0.05},
            "plain at 144 steps": {"quality": "plain", "steps": 144}}
LENGTH = 12


def main() -> None:
    from tiny import export_text, gather_output

    import vizcore

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_text(Path(tmp) / "text.onnx")
        model = vizcore.load(path, input=gather_output(path), size=LENGTH,
                             feeds={"attention_mask": np.ones((1, LENGTH), np.int64)})
    relu = next(ly for ly in model.layers if ly.op_type == "Relu")
    targets = [f"class:{c}" for c in range(3)] + [f"{relu.index}:{c}" for c in range(6)]
    print("| variant | objective: classes 0-2 | objective: ReLU 0-5 | saturated | cosine to nearest token | s |")
    print("|---|---|---|---|---|---|")
    for name, kw in VARIANTS.items():
        values, cosine, saturated, t0 = [], [], [], time.perf_counter()
        for seed in range(3):
            r = vizcore.render(model, targets, seed=seed, size=LENGTH, transforms="none", **kw)
            values.append(r.values)
            saturated.append(float(((r.images <= 2) | (r.images >= 253)).mean()))
            cosine.append(np.mean([[pos[0][1] for pos in u] for u in r.extras["nearest_tokens"]]))
        v = np.mean(values, 0)
        print(f"| {name} | {' '.join(f'{x:.2f}' for x in v[:3])} | {' '.join(f'{x:.2f}' for x in v[3:])} | "
              f"{np.mean(saturated):.3f} | {np.mean(cosine):.3f} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
