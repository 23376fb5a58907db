"""How long does `vizcore check` (default layers and settings) take per model on this CPU box?

Goal (issue 14): every model up to 25 M parameters in <= 60 s, MobileNetV2 in <= 30 s, on a 2-core machine;
issue 24: VGG16 (224 px) and ResNet-50 in <= 60 s each, MobileNetV2 <= 20 s, peak RSS stated.

    python bench/check_speed.py [--models a.onnx b.onnx ...] [--zoo] [--arch vgg16 resnet50] [--baseline /work/main]
                                [--rounds 1] [--json FILE]

`--arch` exports torchvision architectures with random weights (nothing is downloaded): `vgg16` is VGG16's 13
convolutions (14.7 M parameters, the article's model without its 124 M-parameter classifier) with a global pool
and a 10-class head, with PLANTED_DEAD filters of block5_conv3 made undrivable (negative weights on ReLU inputs,
negative bias); `resnet50` is torchvision's ResNet-50 (25.6 M). Each line gives the per-stage times (load,
fidelity, probes, ascent, duplicates) and the child's peak RSS.

Each check runs in a fresh process (imports count: a CI job pays them too) and is timed by wall clock and by the
child's CPU time (user + sys: less sensitive to a shared machine). With `--baseline DIR` (another vizcore checkout)
the same checks run interleaved with that code (A, B, A, B ...) and the ratio baseline / this is printed, the only
figure that is fair on a loaded machine. `--zoo` adds small models of the kinds that used to time out (an LSTM over
a 1-D conv stack, a CRNN, a 1-D U-Net with two inputs, a 3-input voice-activity LSTM, a detector head).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S, GOAL_MOBILENET_S = 60.0, 20.0
#: Filters of VGG16's block5_conv3 (features.28) the bench makes undrivable: the "dead" units a check must find.
PLANTED_DEAD = tuple(range(0, 512, 8))
_CHILD = """
import json, os, sys, time
t0 = time.perf_counter()
from vizcore.health import check
r = check(sys.argv[1])
if os.environ.get("CHECK_SPEED_REPORT"):
    open(os.environ["CHECK_SPEED_REPORT"], "w").write(r.dumps())
import resource
print(json.dumps({"wall": time.perf_counter() - t0, "timings": r.timings,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "passed": r.passed,
                  "layers": len(r.layers), "units": sum(l.channels for l in r.layers),
                  "dead": sum(len(l.dead) for l in r.layers), "inconclusive": sum(len(getattr(l, "inconclusive", []))
                  for l in r.layers), "params": r.model.get("parameters")}))
"""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(code_root: Path, model: Path, timeout: float, report: Path | None = None) -> dict:
    before = _cpu()
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    if report is not None:
        env["CHECK_SPEED_REPORT"] = str(report)
    try:
        out = subprocess.run([sys.executable, "-c", _CHILD, str(model)], cwd=code_root, env=env, timeout=timeout,
                             capture_output=True, text=True)
    except subprocess.TimeoutExpired:  # the killed child was waited for: its CPU time counts
        return {"wall": float("inf"), "cpu": _cpu() - before, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    cpu = _cpu() - before
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"wall": wall, "cpu": cpu, "error": f"exit {out.returncode}: {last[:160]}"}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall, "cpu": cpu}


def _zoo(folder: Path) -> list[Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from check_zoo import KINDS, export_kind

    return [export_kind(k, folder) for k in KINDS]


def _arch(name: str, folder: Path) -> Path:
    """A torchvision architecture with random (seeded) weights, exported to ONNX at 224 px."""
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "vgg16":
        feats = torchvision.models.vgg16(weights=None).features
        with torch.no_grad():
            conv = feats[28]  # block5_conv3
            for c in PLANTED_DEAD:
                conv.weight[c] = -conv.weight[c].abs()
                conv.bias[c] = -0.1
        net = torch.nn.Sequential(feats, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(512, 10))
    else:
        net = torchvision.models.resnet50(weights=None)
    path = folder / f"{name}.onnx"
    torch.onnx.export(net.eval(), (torch.rand(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def _line(name: str, r: dict, goal: float) -> str:
    if "error" in r:
        return f"{name:<28} {'-':>8} {r['cpu']:7.1f}s  goal <= {goal:.0f} s  FAILED ({r['error']})"
    met = "MET" if r["wall"] <= goal else "MISSED"
    return (f"{name:<28} {r['wall']:7.1f}s {r['cpu']:7.1f}s  goal <= {goal:.0f} s  {met:<6}  "
            f"{r.get('params', 0) / 1e6:5.2f} M params, {r['layers']} layers, {r['dead']} dead, "
            f"{r['inconclusive']} inconclusive; ascent {r['timings'].get('ascent', 0):.1f} s, "
            f"probes {r['timings'].get('probes', 0):.1f} s, load {r['timings'].get('load', 0):.1f} s, fidelity "
            f"{r['timings'].get('fidelity', 0):.1f} s, duplicates {r['timings'].get('duplicates', 0):.1f} s; "
            f"peak RSS {r.get('rss_mb', 0):.0f} MB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", type=Path, default=[ROOT / "models" / "mobilenet_v2.onnx"])
    ap.add_argument("--zoo", action="store_true", help="add the small 1-D / recurrent / detector models")
    ap.add_argument("--baseline", type=Path, help="another vizcore checkout to run interleaved (ratio)")
    ap.add_argument("--arch", nargs="*", default=[], choices=("vgg16", "resnet50"),
                    help="add torchvision architectures (random weights, exported here)")
    ap.add_argument("--keep", type=Path, help="export the --arch models into this folder (kept), not a temporary one")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report-dir", type=Path, help="keep each model's check --json report here (this code's)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="check_speed_")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    models = list(args.models) + (_zoo(tmp) if args.zoo else []) + [_arch(a, tmp) for a in args.arch]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          "columns: wall, child CPU time")
    rows, ok = [], True
    for m in models:
        goal = GOAL_MOBILENET_S if "mobilenet_v2" in m.name else GOAL_S
        for k in range(args.rounds):
            rep = args.report_dir / f"{m.stem}.json" if args.report_dir else None
            r = _run(ROOT, m, args.timeout, rep)
            b = _run(args.baseline, m, args.timeout) if args.baseline else None
            print(_line(m.stem + (f" #{k + 1}" if args.rounds > 1 else ""), r, goal), flush=True)
            if b is not None:
                ratio = b["wall"] / r["wall"] if "error" not in r and "error" not in b else float("nan")
                cpu_ratio = b["cpu"] / r["cpu"] if r["cpu"] > 0 else float("nan")  # a timed-out baseline: at least
                print(f"{'  baseline ' + str(args.baseline):<28} {b['wall']:7.1f}s {b['cpu']:7.1f}s  "
                      f"baseline/this: wall x{ratio:.2f}, CPU x{cpu_ratio:.2f}" +
                      (f"  (baseline: {b['error']})" if "error" in b else ""), flush=True)
            ok &= "error" not in r and r["wall"] <= goal
            rows.append({"model": m.name, "goal_s": goal, "this": r, "baseline": b})
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
