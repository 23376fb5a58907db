"""What do trust verdicts cost, and what do they say on MobileNetV2? (issue 22, part 2)

    python bench/trust.py [--images 256] [--size 128] [--steps 64] [--rounds 2] [--json FILE]

- overhead: renders of MobileNetV2 units with and without `vizcore.trust` (mode auto, exemplars already found:
  the data pass is its own cost, `bench/evidence.py`), interleaved (plain, trusted, plain, trusted, ...); the
  figure is median(trusted) / median(plain) - 1, next to the trust step's own seconds over its render's;
- verdicts: the verdict distribution and the scores (quantiles) on 10 class units and 12 channels of a middle
  layer, with data built from scikit-image's photos as `bench/evidence.py` builds it, at the render size;
- planted: the same scores on the planted fooling unit and the ordinary units of `tests/tiny.py` (the thresholds in
  `vizcore.analysis.trust.TrustThresholds` sit between the two: README "Trust scores").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]
MODEL = ROOT / "models" / "mobilenet_v2.onnx"
CLASSES = (1, 9, 130, 207, 279, 309, 417, 530, 817, 948)


def summary(found: list, units: list) -> dict:
    """Verdict counts and score quantiles (min, median, max) of a set of units."""
    out: dict = {"verdicts": {}, "units": []}
    for u, t in zip(units, found):
        out["verdicts"][t.verdict] = out["verdicts"].get(t.verdict, 0) + 1
        s = t.scores
        out["units"].append({"target": u.target, "verdict": t.verdict,
                             "ratio_max": (s["activation_ratio"] or {}).get("max"),
                             "ratio_p99": (s["activation_ratio"] or {}).get("p99"),
                             "path": (s["path_similarity"] or {}).get("score"),
                             "robustness": s["transform_robustness"], "reasons": t.reasons})
    for key in ("ratio_max", "ratio_p99", "path", "robustness"):
        v = [u[key] for u in out["units"] if u[key] is not None]
        out[key] = [float(np.min(v)), float(np.median(v)), float(np.max(v))] if v else None
    return out


def mobilenet(a: argparse.Namespace, folder: Path) -> dict:
    import vizcore
    from vizcore.analysis.layers import default_layers

    model = vizcore.load(MODEL, size=a.size)
    checked = default_layers(model)
    middle = checked[len(checked) // 2].conv
    groups = {"classes": [f"class:{c}" for c in CLASSES], "middle": [f"{middle.index}:0-11"]}
    ex = vizcore.exemplars(model, folder, [model.logits_layer(), middle], size=a.size, cache_dir=False)
    out: dict = {"middle_layer": middle.name, "exemplar_s": ex.timings}
    if a.overhead_only:
        groups = {"middle": groups["middle"]}
    for name, targets in groups.items():
        plain, trusted, own = [], [], []
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            vizcore.render(model, targets, steps=a.steps, size=a.size)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = vizcore.render(model, targets, steps=a.steps, size=a.size)
            found = vizcore.trust(r, model, exemplars=ex)
            trusted.append(time.perf_counter() - t0)
            own.append(r.timings["trust"] / r.timings["seconds"])
        out[name] = {"plain_s": plain, "trusted_s": trusted, "overhead": statistics.median(trusted) /
                     statistics.median(plain) - 1, "trust_over_render": statistics.median(own),
                     **summary(found, r.units)}
    if a.overhead_only:
        return out
    twice = vizcore.render(model, groups["middle"], steps=a.steps, size=a.size, images_per_unit=2)
    out["middle"]["seed_stability"] = [t.scores["seed_stability"] for t in vizcore.trust(twice, model)][::2]
    r = vizcore.render(model, groups["classes"], steps=a.steps, size=a.size)
    other = ROOT / "models" / "efficientnet_lite0.onnx"
    out["classes"]["transfer"] = [t.scores["transfer"] for t in vizcore.trust(r, model, transfer=other)]
    return out


def planted(tmp: Path) -> dict:
    from tiny import FoolingNet, export, save_images, smooth_images, trained_cnn

    import vizcore

    images = smooth_images(160)
    folder = save_images(images, tmp / "smooth")
    meta = {"vizcore.range": "0,1"}
    fool = vizcore.load(export(FoolingNet(), tmp / "fool.onnx", (1, 3, 32, 32), metadata=meta), size=32)
    r = vizcore.render(fool, ["3:0-5"], steps=64, size=32)
    out = {"fooling": summary(vizcore.trust(r, fool, folder, size=32, cache_dir=False), r.units)}
    twice = vizcore.render(fool, ["3:0-5"], steps=64, size=32, images_per_unit=2)
    out["fooling"]["seed_stability"] = [t.scores["seed_stability"] for t in vizcore.trust(twice, fool)][::2]
    net = vizcore.load(export(trained_cnn(images), tmp / "trained.onnx", (1, 3, 32, 32), metadata=meta), size=32)
    r = vizcore.render(net, ["3:0-15", "class:0", "class:1", "class:2"], steps=64, size=32)
    out["trained"] = summary(vizcore.trust(r, net, folder, size=32, cache_dir=False), r.units)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: its default; 1 on a loaded machine)")
    p.add_argument("--overhead-only", action="store_true",
                   help="only the interleaved renders of the middle layer (e.g. with --steps 256)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)  # the benchmark's own process
    from evidence import build_images, uptime

    out: dict = {"args": vars(a), "uptime_before": uptime()}
    with tempfile.TemporaryDirectory(prefix="vizcore-trust-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        build_images(folder, a.images, side=a.size)
        out["planted"] = {} if a.overhead_only else planted(Path(tmp))
        out["mobilenet_v2"] = mobilenet(a, folder)
    out["uptime_after"] = uptime()
    for name in ("classes", "middle"):
        if name not in out["mobilenet_v2"]:
            continue
        g = out["mobilenet_v2"][name]
        print(f"{name}: verdicts {g['verdicts']}; overhead {g['overhead']:+.1%} (trust {g['trust_over_render']:.1%} "
              f"of its render); ratio_max {g['ratio_max']}, path {g['path']}, robustness {g['robustness']}")
    g = out["mobilenet_v2"]
    if a.overhead_only:
        print(f"load before: {out['uptime_before']}\nload after:  {out['uptime_after']}")
        return 0
    print(f"middle seed stability {[round(v, 2) for v in g['middle']['seed_stability']]}")
    print(f"classes transfer to EfficientNet-Lite0 {[round(t['probability'], 3) for t in g['classes']['transfer']]}")
    print(f"fooling model seed stability {[round(v, 2) for v in out['planted']['fooling']['seed_stability']]}")
    for name, g in out["planted"].items():
        print(f"planted {name}: {g['verdicts']}; ratio_max {g['ratio_max']}, path {g['path']}")
        for u in g["units"][:1]:
            print(f"  {u['target']}: {u['verdict']} ratio_max {u['ratio_max']} path {u['path']}")
    print(f"load before: {out['uptime_before']}\nload after:  {out['uptime_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
