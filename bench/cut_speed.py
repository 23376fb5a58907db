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


def _time(fn, repeat: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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

    t_full, t_full_b = _time(full_fwd, args.repeat), _time(full_bwd, args.repeat)
    print(f"{'layer':<48} {'nodes':>6} {'fwd ms':>8} {'ratio':>6} {'fwd+bwd ms':>11} {'ratio':>6}")
    n_full = sum(1 for n in model.module.graph.nodes if n.op == "call_module")
    print(f"{'(full graph)':<48} {n_full:>6} {t_full * 1e3:>8.1f} {1:>6.2f} {t_full_b * 1e3:>11.1f} {1:>6.2f}")
    for i in picks:
        layer = convs[i]
        cut = model.cut_at([layer])

        def cut_fwd() -> None:
            with torch.no_grad():
                cut(x)

        def cut_bwd() -> None:
            xi = x.clone().requires_grad_(True)
            cut(xi)[0].mean().backward()

        t, tb = _time(cut_fwd, args.repeat), _time(cut_bwd, args.repeat)
        nodes = sum(1 for n in cut.graph.nodes if n.op == "call_module")
        name = f"#{layer.index} {layer.name}"[:48]
        print(f"{name:<48} {nodes:>6} {t * 1e3:>8.1f} {t_full / t:>6.2f} {tb * 1e3:>11.1f} {t_full_b / tb:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
