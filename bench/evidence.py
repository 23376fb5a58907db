"""What does an exemplar pass cost next to plain inference? (issue 22, part 1)

Goal: exemplars for every default layer of MobileNetV2 (`models/mobilenet_v2.onnx`: every layer `vizcore check`
measures) over >= 500 natural images cost <= 2x one plain onnxruntime inference pass over the same images.

    python bench/evidence.py [--images 512] [--rounds 3] [--batch 16] [--quick] [--json FILE]

The images are built from the photos scikit-image ships (`skimage.data`): seeded random crops (40-100 % of the
short side) and horizontal flips, saved as 224x224 PNGs in a temporary folder. Both sides read them with the same
reader and preprocessing (`vizcore.samples.open_data`, the model's `InputSpace`), batch 16, at 224:

- (a) onnxruntime: one `session.run` per batch (the model's own bytes, `vizcore.onnxfile.session`);
- (b) `vizcore.exemplars(model, folder)` with no cache (`cache_dir=False`): the pass over every default layer (in
  onnxruntime on the CPU since issue 22's second round: the layers' maxima and arg-max inside the graph; before, the
  torch graph cut at the layers), the top-9 merge, the distribution, and the receptive-field derivation.

The model is loaded once before the timings (not counted in either). The runs alternate (a, b, a, b, ...); the
figure is median(b) / median(a), with the machine's load (`uptime`) before and after. `--quick`: 64 images, one
round (a smoke run, not the goal's figure). `--threads N`: both sides with N threads (on a shared machine under
load, torch's default of one thread per core collapses when the cores are busy; 1 thread is the fair comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "models" / "mobilenet_v2.onnx"
GOAL = 2.0


def build_images(folder: Path, count: int, side: int = 224, seed: int = 0) -> int:
    """`count` natural images from scikit-image's photos: seeded crops and flips, `side` x `side` PNGs."""
    import skimage.data
    from PIL import Image

    from vizcore.samples import SKIMAGE_PHOTOS

    base = Path(os.path.dirname(skimage.data.__file__))
    photos = [Image.open(base / n).convert("RGB") for n in SKIMAGE_PHOTOS if (base / n).is_file()]
    rng = np.random.default_rng(seed)
    for i in range(count):
        im = photos[i % len(photos)]
        w, h = im.size
        s = int(min(w, h) * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        crop = im.crop((x, y, x + s, y + s)).resize((side, side), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:05d}.png")
    return len(photos)


def plain_pass(sess, folder: Path, space, batch: int) -> float:
    """Seconds for one onnxruntime pass over the folder (read, preprocess, run), batch by batch."""
    from vizcore.samples import open_data

    t0 = time.perf_counter()
    ds = open_data(folder, (1, 3, 224, 224), stream=True)
    name = sess.get_inputs()[0].name
    for b in ds.batches(batch):
        sess.run(None, {name: space.to_model(b.x)})
    return time.perf_counter() - t0


def exemplar_pass(model, folder: Path, batch: int) -> tuple[float, int, dict[str, float]]:
    """Seconds for `vizcore.exemplars` over the folder with no cache; the units it covered; its own timings
    (receptive-field probe, pass)."""
    import vizcore

    t0 = time.perf_counter()
    ex = vizcore.exemplars(model, folder, size=224, batch=batch, cache_dir=False)
    return time.perf_counter() - t0, sum(int(lay.channels or 0) for lay in ex.layers), {**ex.timings,
                                                                                        "engine": ex.engine}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="64 images, one round")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for both torch and onnxruntime (0: their defaults); 1 on a shared, loaded machine")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    if a.quick:
        a.images, a.rounds = 64, 1
    import torch

    import vizcore
    from vizcore.inputspace import resolve
    from vizcore.onnxfile import session

    if a.threads:
        torch.set_num_threads(a.threads)  # a benchmark script's own process: both sides get the same threads
    model = vizcore.load(MODEL, size=224)
    space = resolve(model)
    sess = session(model.reference, threads=a.threads)
    load0 = uptime()
    with tempfile.TemporaryDirectory(prefix="vizcore-evidence-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        n_photos = build_images(folder, a.images)
        build_s = time.perf_counter() - t0
        plain_pass(sess, folder, space, a.batch)  # warm-up: file cache, onnxruntime's first run
        plain, ex, units, parts = [], [], 0, []
        for _ in range(a.rounds):
            plain.append(plain_pass(sess, folder, space, a.batch))
            s, units, part = exemplar_pass(model, folder, a.batch)
            ex.append(s)
            parts.append(part)
    ratio = statistics.median(ex) / statistics.median(plain)
    out = {"images": a.images, "photos": n_photos, "rounds": a.rounds, "batch": a.batch, "build_s": build_s,
           "onnxruntime_s": plain, "exemplars_s": ex, "ratio": ratio, "goal": GOAL, "layers_units": units,
           "exemplar_parts": parts,
           "torch_threads": torch.get_num_threads(), "uptime_before": load0, "uptime_after": uptime()}
    print(f"{a.images} images (from {n_photos} skimage photos, built in {build_s:.1f} s), batch {a.batch}, "
          f"{a.rounds} round(s), torch threads {out['torch_threads']}, onnxruntime threads {a.threads or 'default'}")
    print(f"(a) onnxruntime pass : median {statistics.median(plain):.2f} s  {[round(v, 2) for v in plain]}")
    print(f"(b) vizcore.exemplars: median {statistics.median(ex):.2f} s  {[round(v, 2) for v in ex]} "
          f"({units} units, the pass in {parts[0]['engine']})")
    fields, passes = (statistics.median(pt[k] for pt in parts) for k in ("fields", "pass"))
    print(f"    of which: receptive-field probe {fields:.2f} s (once per pass), the pass over the images "
          f"{passes:.2f} s = {passes / statistics.median(plain):.2f}x the onnxruntime pass")
    print(f"ratio b/a = {ratio:.2f}  (goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'NOT met'})")
    print(f"load before: {load0}\nload after:  {out['uptime_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
