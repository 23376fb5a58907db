"""How long does `vizcore check` take on every conv layer of MobileNetV2 on a 2-core CPU? Goal: under 3 minutes.

    python bench/check_speed.py [MODEL.onnx] [--ascent candidates|all|none] [--json FILE]

Times one full check (load, fidelity, probes, gradient ascent, duplicate search) in a fresh process, with the
default settings (the same as `vizcore check MODEL`), and prints the figure next to the goal with a breakdown,
the machine's load average (the CPU may be shared), and what was found. Also times the duplicate search alone
on a 512-filter 3x3x512 layer (130k pairs) to show how it scales.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 180.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "models" / "mobilenet_v2.onnx"))
    ap.add_argument("--ascent", default="candidates", choices=("candidates", "all", "none"))
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import torch  # imports count: a CI job pays them too

    from vizcore.health import check

    load_before = os.getloadavg()[0]
    report = check(args.model, ascent=args.ascent)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]

    from vizcore.analysis.duplicates import find_duplicates

    w = torch.randn(512, 512, 3, 3, generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    find_duplicates(w)
    dup_512 = time.perf_counter() - t1

    dead = sum(len(lay.dead) for lay in report.layers)
    const = sum(len(lay.constant) for lay in report.layers)
    units = sum(lay.channels for lay in report.layers)
    pairs = sum(len(lay.duplicates) for lay in report.layers)
    ok = wall < GOAL_S
    print(f"model: {args.model}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load average {load_before:.1f} before / {load_after:.1f} after")
    print(f"layers checked: {len(report.layers)} ({units} units)")
    print(f"check wall time: {wall:.1f} s   goal: < {GOAL_S:.0f} s   {'MET' if ok else 'MISSED'}")
    print("  breakdown: imports {:.1f} s, ".format(wall - report.timings.get("total", wall)) +
          ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
    print(f"found: {dead} dead, {const} constant units, {pairs} duplicate pairs; passed={report.passed}")
    for note in report.notes:
        print(f"  {note}")
    print(f"duplicate search alone, 512 filters x 512 x 3 x 3 (130,816 pairs, 9 transformations): {dup_512:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "wall_s": wall, "goal_s": GOAL_S, "met": ok, "timings": report.timings,
            "layers": len(report.layers), "units": units, "dead": dead, "constant": const, "duplicate_pairs": pairs,
            "duplicates_512_s": dup_512, "load_average": [load_before, load_after], "cpus": os.cpu_count(),
        }, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
