"""Startup time of `vizcore --help` / `--version`, and of whole commands as a user types them (issue 28): this tree
against another (e.g. the last landing), interleaved, medians; and which heavy modules each one imports.

    git archive 125a784 vizcore | tar -x -C /tmp/before
    python bench/cli_startup.py --before /tmp/before [--runs 5]
    python bench/cli_startup.py --before /tmp/before --commands [--runs 3]   # whole commands on MobileNetV2

Goals (printed next to each figure): `--help` imports neither torch nor onnx and starts in well under 1 s; a
mistyped model path or a bad flag is answered in < 1 s; `vizcore inspect` <= 3 s; `vizcore check` <= 10 s (the
embedded MobileNetV2, whole process). `render` of 8 channels x 32 steps is timed too (its goal is relative to
Lucent: bench/render_speed.py).
"""

from __future__ import annotations

import argparse
import json
import os
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


MODEL = str(ROOT / "models" / "mobilenet_v2.onnx")
COMMANDS: list[tuple[list[str], float | None]] = [  # (argv, goal in seconds)
    (["inspect", "/nonexistent/mobilenet_v2.onnx"], 1.0),
    (["render", MODEL, "45:0", "--stepz", "3"], 1.0),
    (["inspect", MODEL], 3.0),
    (["check", MODEL], 10.0),
    (["render", MODEL, "45:0-7", "--steps", "32", "--size", "224", "--out", "{tmp}", "--force"], None),
]


def whole(tree: Path, argv: list[str]) -> float:
    """Wall seconds of `python -m vizcore.cli ARGV` run from `tree` (its exit code is not checked: a typo's is 2)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vizcore.cli", *argv], cwd=tree, env={"PYTHONPATH": str(tree)},
                   capture_output=True, text=True, check=False)
    return time.perf_counter() - t


def commands(before: Path, runs: int) -> None:
    """Whole commands, before and after, interleaved; medians against the goals."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for argv, goal in COMMANDS:
            argv = [a.replace("{tmp}", tmp) for a in argv]
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(runs):
                for label, tree in (("before", before), ("after", ROOT)):
                    times[label].append(whole(tree, argv))
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            shown = " ".join(x if x != MODEL else "models/mobilenet_v2.onnx" for x in argv)
            met = "" if goal is None else f" [goal <= {goal:g} s: {'met' if a <= goal else 'NOT met'}]"
            print(f"vizcore {shown}: before {b:.2f} s, after {a:.2f} s ({b / a:.2f}x){met} "
                  f"(medians of {runs}, interleaved)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a folder holding the other tree's vizcore/")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--commands", action="store_true", help="whole commands on the embedded MobileNetV2")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()}")
    if args.commands:
        commands(args.before, args.runs)
        return
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
