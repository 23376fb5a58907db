"""How much faster is a graph cut at an early layer than the full forward (what the engine gains by cutting)?

    python bench/cut_speed.py [MODEL.onnx] [--batch 8] [--size 224] [--repeat 7]

Prints, for a few layers at increasing depth, the median forward and forward+backward time of `model.cut_at`
against the full graph, and the ratio. Median of interleaved runs, one process, torch's default threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import vizcore

ROOT = Path(__file__).resolve().parents[1]


def _interleaved(fns: dict[str, object], repeat: int) -> dict[str, float]:
    """Median seconds per function, timing them in turn each round so that load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "models" / "mobilenet_v2.onnx"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    model = vizcore.load(args.model)
    x = model.probe_input(args.batch, args.size)
    convs = [l for l in model.layers if l.op_type in ("Conv", "Gemm", "MatMul")]
    picks = sorted({0, 2, len(convs) // 4, len(convs) // 2, len(convs) - 1})
    print(f"{Path(args.model).name}: batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat}")

    def full_fwd() -> None:
        with torch.no_grad():
            model.run(x)

    def full_bwd() -> None:
        xi = x.clone().requires_grad_(True)
        out = model.run(xi)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.mean().backward()

    fns: dict[str, object] = {"full": full_fwd, "full_b": full_bwd}
    cuts = {}
    for i in picks:
        layer = convs[i]
        cut = cuts[layer.index] = model.cut_at([layer])

        def cut_fwd(cut=cut) -> None:  # noqa: ANN001
            with torch.no_grad():
                cut(x)

        def cut_bwd(cut=cut) -> None:  # noqa: ANN001
            xi = x.clone().requires_grad_(True)
            cut(xi)[0].mean().backward()

        fns[f"{layer.index}"], fns[f"{layer.index}_b"] = cut_fwd, cut_bwd
    t = _interleaved(fns, args.repeat)
    n_full = sum(1 for n in model.module.graph.nodes if n.op == "call_module")
    print(f"{'layer':<48} {'nodes':>6} {'fwd ms':>8} {'speed-up':>8} {'fwd+bwd ms':>11} {'speed-up':>8}")
    print(f"{'(full graph)':<48} {n_full:>6} {t['full'] * 1e3:>8.1f} {1:>8.2f} {t['full_b'] * 1e3:>11.1f} {1:>8.2f}")
    for index, cut in cuts.items():
        layer = model.layers[index]
        nodes = sum(1 for n in cut.graph.nodes if n.op == "call_module")
        f, b = t[f"{index}"], t[f"{index}_b"]
        name = f"#{index} {layer.name}"[:48]
        print(f"{name:<48} {nodes:>6} {f * 1e3:>8.1f} {t['full'] / f:>8.2f} {b * 1e3:>11.1f} "
              f"{t['full_b'] / b:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
