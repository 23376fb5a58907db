"""The CUDA goal of issue 8: every channel of MobileNetV2's last conv layer, 256 steps at 224 px, in under 60 s.

    python bench/gpu_goal.py                              # bf16 (--amp), engine defaults, then the variants
    python bench/gpu_goal.py --variants amp,amp-nobench,fp32 --deadline 300 --json goal.json --grid grid.png

Times the render call itself (model already loaded, CUDA already initialised by a tiny warm-up render, both
reported too). Variants: `amp` (bf16 autocast, the engine's defaults, cuDNN autotuning included),
`amp-nobench` (the same with VIZCORE_CUDNN_BENCHMARK=0: what the autotuning gives), `fp32` (no autocast; TF32
convolutions as torch's default), `amp+unit1` (one unit, the per-render overhead). Each prints progress every 64
steps, the chunking and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=95, help="layer index (default 95: the last conv, 1280 channels)")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--units", type=int, default=None, help="default: every channel of the layer")
    ap.add_argument("--variants", default="amp,amp-nobench,fp32")
    ap.add_argument("--deadline", type=float, default=420.0, help="skip variants that would start after this (s)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only for a smoke test of this script")
    ap.add_argument("--grid", type=Path, default=None, help="save the first 64 images of the first variant here")
    args = ap.parse_args()
    t_start = time.perf_counter()

    import vizcore
    from vizcore.plugins import get_manager

    dev = torch.device(args.device)
    on_gpu = dev.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        print("no CUDA device: nothing to do")
        return 2
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(dev), "goal_seconds": GOAL_SECONDS}
    if on_gpu:
        props = torch.cuda.get_device_properties(dev)
        info.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()
    print("device:", json.dumps(info))
    t = time.perf_counter()
    model = vizcore.load(ROOT / "models" / "mobilenet_v2.onnx")
    info["load_seconds"] = round(time.perf_counter() - t, 2)
    layer = model.layers[args.layer]
    n = args.units or layer.channels
    print(f"model loaded in {info['load_seconds']} s; layer {layer.index} {layer.name} ({layer.channels} channels); "
          f"{n} units x {args.steps} steps at {args.size} px")

    t = time.perf_counter()
    vizcore.render(model, f"{layer.index}:0", steps=2, size=args.size, device=args.device, amp=on_gpu,
                   on_warning=lambda m: None)
    sync()
    info["warmup_seconds"] = round(time.perf_counter() - t, 2)
    print(f"warm-up render (CUDA init, 1 unit, 2 steps): {info['warmup_seconds']} s")

    class Progress:
        t0 = 0.0

        @vizcore.hookimpl
        def vizcore_render_step(self, run: Any, state: Any) -> None:
            if state.step % 64 == 0 or state.step == 1:
                sync()
                v = state.values.float()
                print(f"    chunk {run.chunk + 1}/{run.n_chunks} ({len(run.units)} units) step {state.step}: "
                      f"{time.perf_counter() - self.t0:6.1f} s, objective mean {v.mean().item():.3f}", flush=True)

    progress = Progress()
    get_manager().register(progress, "gpu-goal-progress")
    results = {}
    targets = f"{layer.index}:all" if n == layer.channels else [f"{layer.index}:{i}" for i in range(n)]
    for vi, variant in enumerate(v.strip() for v in args.variants.split(",") if v.strip()):
        elapsed = time.perf_counter() - t_start
        if elapsed > args.deadline:
            print(f"\n-- {variant}: SKIPPED (deadline: {elapsed:.0f} s > {args.deadline:.0f} s)")
            continue
        amp = variant.startswith("amp")
        os.environ["VIZCORE_CUDNN_BENCHMARK"] = "0" if "nobench" in variant else "1"
        tg = [f"{layer.index}:0"] if variant.endswith("unit1") else targets
        print(f"\n-- {variant}: amp={amp} VIZCORE_CUDNN_BENCHMARK={os.environ['VIZCORE_CUDNN_BENCHMARK']}",
              flush=True)
        sync()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        progress.t0 = time.perf_counter()
        try:
            r = vizcore.render(model, tg, steps=args.steps, size=args.size, device=args.device, amp=amp and on_gpu,
                               on_warning=lambda m: print("    warning:", m))
            sync()
        except Exception as exc:  # noqa: BLE001  report and go on with the next variant
            import traceback

            traceback.print_exc()
            results[variant] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        secs = time.perf_counter() - progress.t0
        vals = np.asarray(r.values, dtype=np.float64)
        res = {"seconds": round(secs, 2), "units": len(r), "per_unit_ms": round(1000 * secs / len(r), 2),
               "chunk_units": r.settings["chunk_units"],
               "max_memory_budget_gib": round(r.settings["max_memory"] / 2**30, 1),
               "max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
               "values_finite": bool(np.isfinite(vals).all()), "value_mean": round(float(vals.mean()), 3),
               "rose": float(np.mean([tr[-1] > tr[0] for tr in r.traces if len(tr) > 1] or [float("nan")])),
               "met_goal": bool(secs < GOAL_SECONDS) if len(r) == layer.channels else None}
        results[variant] = res
        print(f"   {variant}: {secs:.1f} s for {len(r)} units ({res['per_unit_ms']} ms/unit), chunks of "
              f"{res['chunk_units']}, max allocated {res['max_allocated_gib']} GiB, objective rose for "
              f"{100 * res['rose']:.0f} % of units"
              + (f" -> goal (< {GOAL_SECONDS:.0f} s) {'MET' if res['met_goal'] else 'NOT MET'}"
                 if res["met_goal"] is not None else ""), flush=True)
        if vi == 0 and args.grid is not None and len(r) >= 16:
            from PIL import Image

            k = min(64, len(r))
            cols = 8
            cell = r.images[:k]
            h, w = cell.shape[1:3]
            sheet = np.full((((k + cols - 1) // cols) * h, cols * w, 3), 255, np.uint8)
            for i, im in enumerate(cell):
                sheet[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = im[..., :3]
            Image.fromarray(sheet).resize((cols * 96, ((k + cols - 1) // cols) * 96)).save(args.grid)
            print(f"   first {k} images: {args.grid}")
    os.environ.pop("VIZCORE_CUDNN_BENCHMARK", None)
    info["variants"] = results
    print("\nsummary:", json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
