"""Feature accentuation's default penalty weights (issue 27): how far a unit's value rises from a photo, and how
far the picture moves from it, for a grid of `init_pixel` x `init_feature` weights, against a render from noise.

    python bench/accent.py [--size 128] [--steps 64] [--photo chelsea.jpg] [--grid 0,1,4,16 0,1,4]

Per weight pair: the mean over the units of (value - value(photo)) / (value(noise render) - value(photo)) ("rise":
1 = as far up as the free render from noise; the photo's value is the render's own forward of the photo: 1 step, no
transforms, lr 1e-9), the mean pixel RMS to the photo (0..1) and the
mean relative feature distance (manifest.json's `init`). The noise row is the plain render with the same steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import vizcore
from vizcore.samples import SHIPPED_PHOTOS

MODEL = Path(__file__).resolve().parents[1] / "models" / "mobilenet_v2.onnx"
TARGETS = ["20:3", "40:5", "60:10", "class:1"]


def _pixel_rms(images: np.ndarray, start: np.ndarray) -> float:
    return float(np.sqrt(((images / 255.0 - start) ** 2).mean(axis=(1, 2, 3))).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--photo", default="chelsea.jpg")
    ap.add_argument("--out", type=Path, default=None, help="save each grid here as PIXEL_FEATURE.png")
    ap.add_argument("--grid", nargs=2, default=["0,1,4,16", "0,1,4"], metavar=("PIXEL", "FEATURE"))
    args = ap.parse_args()
    photo = str(SHIPPED_PHOTOS / args.photo)
    model = vizcore.load(MODEL, size=args.size)
    base = dict(size=args.size, seed=0)
    start = vizcore.render(model, TARGETS, steps=1, lr=1e-9, transforms="none", init=photo, init_pixel=0,
                           init_feature=0, **base)
    photo_img = start.images.astype(np.float64) / 255.0  # the photo as the render sees it (resized, clamped)
    v0 = start.values
    print(f"photo values: {np.round(v0, 3).tolist()}")
    t = time.perf_counter()
    noise = vizcore.render(model, TARGETS, steps=args.steps, **base)
    up = noise.values - v0
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        start.grid(cell=args.size).save(args.out / "photo.png")
        noise.grid(cell=args.size).save(args.out / "noise.png")
    print(f"noise values: {np.round(noise.values, 3).tolist()}")
    print(f"noise         rise {1.0:6.2f}  pixel RMS {_pixel_rms(noise.images, photo_img):.3f}"
          f"  ({time.perf_counter() - t:.0f} s)")
    for wp in map(float, args.grid[0].split(",")):
        for wf in map(float, args.grid[1].split(",")):
            t = time.perf_counter()
            r = vizcore.render(model, TARGETS, steps=args.steps, init=photo, init_pixel=wp, init_feature=wf, **base)
            d = r.extras["init"]
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                r.grid(cell=args.size).save(args.out / f"{wp:g}_{wf:g}.png")
            print(f"pixel {wp:4g} feature {wf:4g}  rise {np.mean((r.values - v0) / up):6.2f}  values "
                  f"{np.round(r.values, 2).tolist()}  pixel RMS {np.mean(d['pixel_rms']):.3f}  feature "
                  f"{np.mean(d['feature_distance']):.3f}  ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
