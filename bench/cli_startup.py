"""Startup time of `vizcore --help` / `--version`: this tree against another (e.g. the commit before the lazy
imports), interleaved, medians; and which heavy modules each one imports.

    git archive 125a784 vizcore | tar -x -C /tmp/before
    python bench/cli_startup.py --before /tmp/before [--runs 5]

Goal: `--help` imports neither torch nor onnx and starts in well under 1 s (printed next to each figure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "onnx2torch", "numpy", "PIL")
PROBE = ("import sys, json\nfrom vizcore.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))), file=sys.stderr)")


def once(tree: Path, argv: list[str]) -> tuple[float, list[str]]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tree, env={"PYTHONPATH": str(tree)},
                       capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    return took, json.loads(p.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a folder holding the other tree's vizcore/")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for argv in (["--help"], ["--version"]):
        times: dict[str, list[float]] = {"before": [], "after": []}
        mods = {}
        for _ in range(args.runs):  # interleaved: before, after, before, after, ...
            for label, tree in (("before", args.before), ("after", ROOT)):
                t, m = once(tree, argv)
                times[label].append(t)
                mods[label] = m
        b, a = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"vizcore {' '.join(argv)}: before {b:.2f} s (imports {', '.join(mods['before']) or 'none'}), "
              f"after {a:.2f} s (imports {', '.join(mods['after']) or 'none'}); {b / a:.1f}x faster "
              f"[goal: no torch/onnx, < 1 s] (medians of {args.runs}, interleaved)")


if __name__ == "__main__":
    main()
