"""Issue 23 evidence: `vizcore prune --budget` on trained models, recorded in bench/RESULTS.md.

1. The embedded MobileNetV2 (`models/mobilenet_v2.onnx`, ImageNet-trained; its metadata gives the preprocessing).
   Natural images from the photos scikit-image ships (`skimage.data`, no download): every photo is split at 60 %
   of its width; **calibration** crops come from the left part only and **held-out** crops from the right part only
   (disjoint pixels of the same photos, random square crops of 45-100 % of the part's short side, half of them
   flipped), resized to 224 px PNGs. Runs: lossless (the default mode, as the baseline), `--budget top1=0.99`
   without recovery, and with `--recover`.
2. A residual network trained here (seeded, about a minute on CPU): two stages of two basic blocks (16 and 32
   channels) on a synthetic shapes task (circle, square, triangle, cross, ring, bar; 32 px), exported to ONNX and
   pruned under the same budget; does a whole residual block go?

    python bench/compress.py [--quick] [--record] [--plot docs/compress_curve.png]

Goals (issue 23): >= 25 % fewer MACs at >= 99 % held-out top-1 agreement with recovery, >= 10 % without; at least
one whole residual block removed from the ResNet within the budget; latency measured (onnxruntime, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vizcore.prune import prune  # noqa: E402

COLOUR = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel", "logo"]
GREY = ["camera", "brick", "clock", "coins", "grass", "gravel", "moon", "page", "text", "cell", "horse"]


def photos() -> list[tuple[str, np.ndarray]]:
    """The scikit-image sample photos that ship with the package, as RGB uint8 (grey ones repeated to 3 channels)."""
    import skimage.data as data

    out = []
    for name in COLOUR + GREY + ["stereo_motorcycle"]:
        try:
            a = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a photo this install lacks (it would need a download)
            continue
        a = a[0] if isinstance(a, tuple) else a
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        a = np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a[..., :3]
        out.append((name, a.astype(np.uint8)))
    return out


def image_sets(root: Path, n_cal: int, n_held: int, seed: int = 0, size: int = 224) -> tuple[Path, Path]:
    """Calibration crops from the left 60 % of every photo, held-out crops from the right 40 %: disjoint pixels."""
    rng = np.random.default_rng(seed)
    pics = photos()
    cal, held = root / "calibration", root / "held_out"
    for d, n, part in ((cal, n_cal, "left"), (held, n_held, "right")):
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name, a = pics[i % len(pics)]
            h, w = a.shape[:2]
            x0, x1 = (0, int(0.6 * w)) if part == "left" else (int(0.6 * w), w)
            side = int(min(h, x1 - x0) * rng.uniform(0.45, 1.0))
            x = int(rng.integers(x0, x1 - side + 1))
            y = int(rng.integers(0, h - side + 1))
            img = Image.fromarray(a[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            img.save(d / f"{i:03d}_{name}.png")
    return cal, held


def run(label: str, model: Path, out: Path, **kw) -> dict:
    """One prune through the public API; the JSON report with the wall time added."""
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"  [{label} {time.monotonic() - t0:5.0f}s] {msg}", flush=True)

    rep = prune(model, out, force=True, progress=say, **kw)
    j = rep.to_json()
    j["wall_s"] = time.monotonic() - t0
    print(f"{label}: verified={rep.verified} MACs {j['cost']['macs'][0]:,} -> {j['cost']['macs'][1]:,} in "
          f"{j['wall_s']:.0f} s", flush=True)
    return j


# -- a trained residual network ------------------------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


def shapes_data(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`n` seeded 32 px pictures of one of six shapes (random place, size, grey levels, noise) in 0..1, and labels."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    xs, ys = np.zeros((n, 3, size, size), np.float32), rng.integers(0, len(SHAPES), n)
    for i, k in enumerate(ys):
        bg, fg = rng.uniform(0, 0.5), rng.uniform(0.6, 1.0)
        img = Image.new("L", (size, size), int(bg * 255))
        d = ImageDraw.Draw(img)
        r = rng.uniform(5, 11)
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        box = [cx - r, cy - r, cx + r, cy + r]
        f = int(fg * 255)
        if SHAPES[k] == "circle":
            d.ellipse(box, fill=f)
        elif SHAPES[k] == "square":
            d.rectangle(box, fill=f)
        elif SHAPES[k] == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=f)
        elif SHAPES[k] == "cross":
            d.rectangle([cx - r, cy - r / 4, cx + r, cy + r / 4], fill=f)
            d.rectangle([cx - r / 4, cy - r, cx + r / 4, cy + r], fill=f)
        elif SHAPES[k] == "ring":
            d.ellipse(box, outline=f, width=max(2, int(r / 3)))
        else:
            d.rectangle([cx - r, cy - r / 5, cx + r, cy + r / 5], fill=f)
        a = np.asarray(img, np.float32) / 255 + rng.normal(0, 0.05, (size, size))
        xs[i] = np.clip(a, 0, 1)[None] * rng.uniform(0.8, 1.0, (3, 1, 1))
    return xs, ys


def tiny_resnet():
    """Two stages of two basic blocks (16 and 32 channels), about 45k parameters."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         Block(16, 16, 1), Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(SHAPES)))


def train_resnet(path: Path, epochs: int, seed: int = 0) -> dict:
    """Train the tiny ResNet on the shapes task (seeded, Adam with a cosine schedule; the caller's RNG state is
    restored) and export it to ONNX (opset 17, free batch); its test accuracy."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = tiny_resnet()
    x, y = shapes_data(4000, seed + 10)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(xt) + 63) // 64))
    t0 = time.monotonic()
    for _ in range(epochs):
        net.train()
        for i in torch.randperm(len(xt)).split(64):
            loss = torch.nn.functional.cross_entropy(net(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    xs, ys = shapes_data(1000, seed + 20)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(xs)).argmax(1).numpy() == ys).mean())
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"},
                                                                                "logits": {0: "batch"}})
    torch.random.set_rng_state(state)
    return {"epochs": epochs, "train_s": time.monotonic() - t0, "test_accuracy": acc,
            "params": sum(p.numel() for p in net.parameters())}


# -- the record ----------------------------------------------------------------------------------------------------
def summary(j: dict) -> dict:
    """The figures of one report that the record shows."""
    b, c = j.get("budget") or {}, j["cost"]
    lat = c.get("latency") or {}
    blocks = [u["unit"] for s in j.get("steps", []) for u in s["units"] if u["kind"] in ("block", "identity")]
    held = (b.get("held_out") or {}) if b else next((v["outputs"] for v in j["verification"]
                                                      if v["inputs"].startswith("verify-data")), {})
    return {"verified": j["verified"], "written": j["written"], "macs": c["macs"], "params": c["params"],
            "macs_removed": 1 - c["macs"][1] / c["macs"][0], "latency_ms": [lat.get("before_s", 0) * 1e3,
                                                                             lat.get("after_s", 0) * 1e3],
            "latency_ratio": lat.get("ratio"), "calibration": b.get("calibration"), "held_out": held,
            "steps": len(j.get("steps", [])), "trials": b.get("trials"), "stopped": b.get("stopped"),
            "blocks": blocks, "wall_s": j["wall_s"], "recovery_s": (j.get("recovery") or {}).get("seconds"),
            "reconstruction": j.get("reconstruction")}


def mobilenet(tmp: Path, args: argparse.Namespace) -> dict:
    n_cal, n_held = (48, 24) if args.quick else (200, 100)
    cal, held = image_sets(tmp / "images", n_cal, n_held)
    model = ROOT / "models" / "mobilenet_v2.onnx"
    common = dict(data=str(cal), verify_data=str(held), latency_reps=args.latency_reps)
    out = {"sets": {"calibration": n_cal, "held_out": n_held}}
    if not args.quick and not args.no_lossless:
        out["lossless"] = summary(run("lossless", model, tmp / "lossless.onnx", **common))
    lossy = dict(common, budget=args.budget, max_steps=args.max_steps, reconstruct=args.reconstruct,
                 ranking=args.ranking, channel_multiple=args.channel_multiple, sensitivity_cost=args.sens_cost)
    j = run("budget", model, tmp / "budget.onnx", **lossy)
    out["budget"] = summary(j)
    if args.round_check and j["written"]:
        out["rounding"] = rounded(tmp / "budget.onnx", cal, held, args)
    j2 = j
    if not args.no_recover_run:
        j2 = run("budget+recover", model, tmp / "recover.onnx", recover=args.recover, recover_lr=args.recover_lr,
                 recover_augment=args.recover_augment, **lossy)
        out["recover"] = summary(j2)
    if args.plot:
        from vizcore.prune.plot import curve_png

        shown = j2 if j2["steps"] else j
        Path(args.plot).write_bytes(curve_png(shown))
        keep = {k: shown[k] for k in ("budget", "steps", "recovery")} | {"cost": {"macs": shown["cost"]["macs"]}}
        Path(args.plot).with_suffix(".json").write_text(json.dumps(keep, indent=1) + "\n")  # to redraw it
    return out


def far(tmp: Path, args: argparse.Namespace) -> dict:
    """Re-fit far from the original: the `args.far` best-ranked channel classes of MobileNetV2 removed at once
    (no search), then top-1 agreement on the calibration and held-out crops without re-fit, with the least-squares
    re-fit of the readers of pruned channels ("pruned") and of every dense layer ("all"), and distillation
    (`args.far_recover` Adam steps) after each; wall time of each."""
    from vizcore import onnxfile
    from vizcore.prune import runtime
    from vizcore.prune.budget import agreement, parse_budget
    from vizcore.prune.inputs import feeder
    from vizcore.prune.reconstruct import Reconstructor
    from vizcore.prune.recover import recover
    from vizcore.prune.search import Edit, Measure, Search, origin

    cal, held = image_sets(tmp / "images", 200, 100)
    model = onnxfile.read(ROOT / "models" / "mobilenet_v2.onnx").proto
    fd = feeder(model)
    calib, hfeed = fd.feed(fd.data(str(cal), "--data"), 1), fd.feed(fd.data(str(held), "--verify-data"), 2)
    ref, href = runtime.outputs(model, calib, 16), runtime.outputs(model, hfeed, 16)
    s = Search(parse_budget(args.budget), Measure(calib, ref, 16, runtime.head(calib, 1)), size=fd.natural[2:],
               ranking="taylor", multiple=1)
    b = s.base(model)
    chans = [c for c in s.ranked(b, set()) if c.kind == "channel"][:args.far]
    pruned, drop = s.build(b, Edit().plus(chans))
    out = {"removed": len(drop), "macs": [s.measure.cost(model)[0], s.measure.cost(pruned)[0]]}

    def score(m, label: str, t0: float) -> None:
        out[label] = {"calibration": agreement(ref, runtime.outputs(m, calib, 16))["top1"],
                      "held_out": agreement(href, runtime.outputs(m, hfeed, 16))["top1"], "s": time.monotonic() - t0}
        print(label, out[label], flush=True)

    score(pruned, "plain", time.monotonic())
    for scope in ("pruned", "all"):
        t0 = time.monotonic()
        fitted = Reconstructor(model, fd.natural[2:], calib, scope=scope)(pruned, origin(b, drop))
        score(fitted, f"refit_{scope}", t0)
    runs = [("refit_all", None), ("refit_all", model)] if args.far_augment else [("plain", None), ("refit_all", None)]
    for label, teacher in runs:
        if not args.far_recover:
            continue
        t0 = time.monotonic()
        src = pruned if label == "plain" else fitted
        tuned, _ = recover(src, fd.natural[2:], calib, ref, steps=args.far_recover, lr=args.recover_lr, device="cpu",
                           teacher=teacher)
        score(tuned, f"{label}+recover{args.far_recover}{'+augment' if teacher else ''}", t0)
    return out


def rounded(pruned_path: Path, cal: Path, held: Path, args: argparse.Namespace) -> dict:
    """Latency with and without rounding: the pruned model's channel counts rounded *down* to multiples of 8 (the
    lowest-ranked classes of each odd tensor go, no budget check); onnxruntime latency (batch 1, interleaved with
    the original, the same process) of both, MACs and top-1 agreement of both."""
    from vizcore import onnxfile
    from vizcore.prune import cost, runtime
    from vizcore.prune.budget import agreement, parse_budget
    from vizcore.prune.inputs import feeder
    from vizcore.prune.search import Edit, Measure, Search

    model = onnxfile.read(ROOT / "models" / "mobilenet_v2.onnx").proto
    pruned = onnxfile.read(pruned_path).proto
    fd = feeder(model)
    calib, hfeed = fd.feed(fd.data(str(cal), "--data"), 1), fd.feed(fd.data(str(held), "--verify-data"), 2)
    ref, href = runtime.outputs(model, calib, 16), runtime.outputs(model, hfeed, 16)
    s = Search(parse_budget(args.budget), Measure(calib, ref, 16, runtime.head(calib, 1)), size=fd.natural[2:],
               ranking="taylor", multiple=1)
    b = s.base(pruned)
    order = {c.roots[0]: i for i, c in enumerate(s.ranked(b, set())) if c.kind == "channel"}
    chosen: set[int] = set()
    for atoms in b.ch.atoms.values():
        roots = [int(r) for r in b.ch.uf.roots(atoms) if int(r) not in chosen]
        if len(roots) <= 8 or len(roots) % 8 == 0 or len(set(roots)) != len(roots):
            continue
        ok = sorted((r for r in roots if r in order), key=order.get)
        if len(ok) >= len(roots) % 8:
            chosen.update(ok[:len(roots) % 8])
    m8, _ = s.build(b, Edit(channels=frozenset(chosen)))
    one = runtime.head(calib, 1)
    base = runtime.session(model, timed=True)
    out = {"classes_removed": len(chosen)}
    for label, m in (("pruned", pruned), ("rounded", m8)):
        lat = cost.latency(base, runtime.session(m, timed=True), one, reps=args.latency_reps)
        out[label] = {"macs": s.measure.cost(m)[0], "latency_ms": [lat["before_s"] * 1e3, lat["after_s"] * 1e3],
                      "ratio": lat["ratio"], "calibration": agreement(ref, runtime.outputs(m, calib, 16))["top1"],
                      "held_out": agreement(href, runtime.outputs(m, hfeed, 16))["top1"],
                      "odd_tensors": sum(1 for t, a in Search.base(s, m).ch.atoms.items() if len(a) % 8)}
        print(label, out[label], flush=True)
    return out


def resnet(tmp: Path, args: argparse.Namespace) -> dict:
    path = tmp / "resnet.onnx"
    info = train_resnet(path, 2 if args.quick else 8)
    for name, n, seed in (("calibration", 200, 1), ("held_out", 100, 2)):
        (tmp / name).mkdir(exist_ok=True)
        np.save(tmp / name / "x.npy", shapes_data(n, 100 + seed)[0])
    j = run("resnet", path, tmp / "resnet.small.onnx", data=str(tmp / "calibration"),
            verify_data=str(tmp / "held_out"), budget=args.budget, max_steps=args.max_steps,
            latency_reps=args.latency_reps, preprocess="none", value_range="0,1", ranking=args.ranking,
            channel_multiple=args.channel_multiple, sensitivity_cost=args.sens_cost)
    return {"training": info, "budget": summary(j)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sets, few trials: a smoke run")
    ap.add_argument("--budget", default="top1=0.99")
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--recover", type=int, default=300)
    ap.add_argument("--latency-reps", type=int, default=20)
    ap.add_argument("--plot", default=None, help="write the MobileNetV2 curve here (e.g. docs/compress_curve.png)")
    ap.add_argument("--json", default="bench/compress_results.json")
    ap.add_argument("--reconstruct", choices=("trial", "final", "off"), default="final",
                    help="least-squares re-fit (vizcore prune --reconstruct)")
    ap.add_argument("--round-check", action="store_true", help="MobileNetV2: latency of the budget run's result "
                    "with its channel counts rounded down to multiples of 8")
    ap.add_argument("--no-recover-run", action="store_true", help="MobileNetV2: skip the --recover run")
    ap.add_argument("--no-lossless", action="store_true", help="MobileNetV2: skip the lossless baseline run")
    ap.add_argument("--only", choices=("mobilenet", "resnet", "far"), default=None,
                    help="far: only the re-fit measurement far from the original (--far classes at once)")
    ap.add_argument("--far", type=int, default=300, help="channel classes removed at once for --only far")
    ap.add_argument("--far-recover", type=int, default=40, help="distillation steps after each --only far model")
    ap.add_argument("--far-augment", action="store_true", help="--only far: distil the re-fitted model with and "
                    "without augmentation (instead of the plain model and the re-fitted one without)")
    ap.add_argument("--ranking", choices=("sensitivity", "taylor"), default="taylor")
    ap.add_argument("--channel-multiple", type=int, default=8)
    ap.add_argument("--recover-lr", type=float, default=1e-5)
    ap.add_argument("--recover-augment", action="store_true", help="distil on augmented calibration inputs")
    ap.add_argument("--sens-cost", choices=("kl", "margin"), default="kl", help="PruneOptions.sensitivity_cost")
    ap.add_argument("--key", default=None, help="store this run's figures under this key of --json")
    args = ap.parse_args()
    if args.quick:
        args.max_steps, args.recover, args.latency_reps = min(args.max_steps, 8), min(args.recover, 12), 4
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res = {"started": started, "uptime_before": _uptime(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="vizcore-compress-") as tmp:
        if args.only in (None, "resnet"):
            res["resnet"] = resnet(Path(tmp), args)
        if args.only in (None, "mobilenet"):
            res["mobilenet_v2"] = mobilenet(Path(tmp), args)
        if args.only == "far":
            res["far"] = far(Path(tmp), args)
    res["uptime_after"] = _uptime()
    if args.key:
        res = {args.key: res}
    text = json.dumps(res, indent=1)
    print(text)
    if args.json and not args.quick:
        path = Path(args.json)
        old = json.loads(path.read_text()) if args.only and path.exists() else {}
        path.write_text(json.dumps(old | res, indent=1) + "\n")  # --only: the other model's figures stay
    return 0


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.getloadavg().__repr__()


if __name__ == "__main__":
    sys.exit(main())
