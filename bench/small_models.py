"""The default render on a small model whose units answer saturated colour (issue 27's default, measured where it is
weakest): tests/tiny.py's TinyCNN trained to tell the dominant colour of smooth 32 px images, and MobileNetV2 at
small sizes for comparison.

- tiny: 16 channels of its last conv and its 3 colour logits, rendered at 32 px with each variant, then
  `vizcore.trust` against the 160 smooth images it was trained on: the activation ratio (the picture's activation
  over the unit's max on the data; >= 1: the picture drives the unit as hard as the data's strongest input) and the
  verdicts.
- mobilenet (`--sizes 32 64 112`): 6 classes and 8 middle-layer channels, the default's objective over `plain`'s
  per unit.

    nice -n 10 .venv/bin/python bench/small_models.py [--sizes 32 64 112]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
STD = {"decay_power": 1.5, "standardize": True, "contrast": 2.0, "sd": 1.0}
VARIANTS = {"default (144 steps)": {}, "default at 64 steps": {"steps": 64},
            "default, contrast 4": {"param_options": {**STD, "contrast": 4.0}, "lr": 0.3},
            "default, 1/f^1.0": {"param_options": {**STD, "decay_power": 1.0}, "lr": 0.3},
            "default, no transforms": {"transforms": "none"},
            "plain at 144 steps": {"quality": "plain", "steps": 144},
            "plain with NAdam, 144 steps": {"quality": "plain", "optimizer": "nadam", "steps": 144},
            "plain (256 steps)": {"quality": "plain"}}
MID = "/features/features.11/conv/conv.1/conv.1.0/Conv"


def tiny() -> None:
    from tiny import export, save_images, smooth_images, trained_cnn

    import vizcore

    tmp = Path(tempfile.mkdtemp())
    images = smooth_images(160)
    folder = save_images(images, tmp / "smooth")
    net = vizcore.load(export(trained_cnn(images), tmp / "trained.onnx", (1, 3, 32, 32),
                              metadata={"vizcore.range": "0,1"}), size=32)
    print("| variant | activation ratio to the data's max: median (min) | verdicts | s |\n|---|---|---|---|")
    for name, kw in VARIANTS.items():
        t0 = time.perf_counter()
        r = vizcore.render(net, ["3:0-15", "class:0", "class:1", "class:2"], size=32, **kw)
        seconds = time.perf_counter() - t0
        judged = vizcore.trust(r, net, folder, size=32, cache_dir=False)
        ratios = [t.scores["activation_ratio"]["max"] for t in judged if t.scores.get("activation_ratio")]
        verdicts = [t.verdict for t in judged]
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts), key=str))
        print(f"| {name} | {np.median(ratios):.2f} ({min(ratios):.2f}) | {counts} | {seconds:.1f} |", flush=True)


def mobilenet(sizes: list[int]) -> None:
    import vizcore

    m = vizcore.load(ROOT / "models" / "mobilenet_v2.onnx")
    mid = m.layer(MID).index
    targets = [f"class:{c}" for c in (1, 130, 309, 980, 417, 948)] + [f"{mid}:{c}" for c in range(8)]
    print("| size | default ÷ plain, 6 classes: median (min, max) | 8 channels: median (min, max) |\n|---|---|---|")
    for size in sizes:
        q = vizcore.render(m, targets, size=size).values / vizcore.render(m, targets, size=size,
                                                                           quality="plain").values
        print(f"| {size} | {np.median(q[:6]):.2f} ({q[:6].min():.2f}, {q[:6].max():.2f}) | "
              f"{np.median(q[6:]):.2f} ({q[6:].min():.2f}, {q[6:].max():.2f}) |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 112])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tiny()
    if args.sizes:
        mobilenet(args.sizes)


if __name__ == "__main__":
    main()
