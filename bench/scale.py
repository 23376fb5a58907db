"""What spreading an atlas over Ray costs and gains, on this machine's CPUs.

    python bench/scale.py [MODEL.onnx] [--layer N] [--units 4] [--steps 32] [--size 112] [--repeat 3]
                          [--record bench/RESULTS.md]

1. Per-chunk overhead: the same chunk rendered in this process (`render_chunk`, one torch thread) and on one Ray
   actor (one thread), interleaved; the overhead is the driver's round trip minus the actor's own render time, as a
   share of the local chunk time (goal <= 5 %).
2. Throughput: one job of 4 chunks run by Ray with 1 and 2 actors of one thread each, and by the local executor in
   one process with two threads (and with one, for reference), interleaved; units per second. Ray gets 3 logical
   CPUs so that both sets of actors stay loaded (one set works at a time: the machine's cores are what they are).
Medians of `--repeat` interleaved rounds; the load average is printed (the box is shared).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vizcore  # noqa: E402
from vizcore.engine import RenderOptions  # noqa: E402
from vizcore.executors import Chunk  # noqa: E402
from vizcore.executors.local import LocalExecutor  # noqa: E402
from vizcore.executors.run import run_chunks  # noqa: E402
from vizcore.executors.worker import render_chunk, resolve  # noqa: E402

OVERHEAD_GOAL = 0.05


def _chunks(model: vizcore.Model, layer: int, n: int, per: int, options: RenderOptions) -> list[Chunk]:
    objs = resolve(model, [f"{layer}:0-{n - 1}"])
    return [Chunk(objs[a:a + per], options.replace(batch_size=per), list(range(a, a + per))) for a in range(0, n, per)]


def _job(ex, chunks: list[Chunk]) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    failed = run_chunks(ex, chunks, lambda c, r: None)
    if failed:
        raise RuntimeError(f"{len(failed)} units failed: {failed[0][1]}")
    return time.perf_counter() - t0


def overhead(model: vizcore.Model, ray_ex, chunk: Chunk, repeat: int) -> dict:  # noqa: ANN001
    """Local chunk time, Ray round trip and the actor's own time for the same chunk, interleaved."""
    import ray

    actor = ray_ex.actors[0]
    ray.get(actor.render.remote(chunk))  # warm-up: first-call costs on both sides
    torch.set_num_threads(1)
    render_chunk(model, chunk)
    local, trip, inside = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        render_chunk(model, chunk)
        local.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = ray.get(actor.render.remote(chunk))
        trip.append(time.perf_counter() - t0)
        inside.append(res.seconds)
    over = [t - i for t, i in zip(trip, inside)]
    med = statistics.median
    return {"local_s": med(local), "ray_round_trip_s": med(trip), "ray_inside_s": med(inside),
            "overhead_s": med(over), "overhead_share": med(over) / med(local),
            "round_trip_vs_local": med(trip) / med(local) - 1}


def throughput(model: vizcore.Model, chunks: list[Chunk], repeat: int) -> dict:
    """Units per second of one job: Ray 1 x 1 thread, Ray 2 x 1 thread, one process with 2 threads."""
    from vizcore.executors.ray import RayExecutor

    units = sum(len(c) for c in chunks)
    size = chunks[0].options.size
    execs = {"ray 1 worker x 1 thread": RayExecutor(workers=1, keep_workers=True),
             "ray 2 workers x 1 thread": RayExecutor(workers=2, keep_workers=True),
             "local 1 process x 2 threads": LocalExecutor(), "local 1 process x 1 thread": LocalExecutor()}
    for ex in execs.values():  # all loaded and warm before timing (3 logical CPUs: the actors are idle between)
        ex.start(model, size, "cpu")
        _job(ex, chunks[:ex.workers])
    times: dict[str, list[float]] = {k: [] for k in execs}
    for _ in range(repeat):
        for name, ex in execs.items():
            torch.set_num_threads(2 if "2 threads" in name else 1)
            times[name].append(_job(ex, chunks))
    for ex in execs.values():
        getattr(ex, "shutdown", ex.close)()
    return {k: units / statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "models" / "mobilenet_v2.onnx"))
    ap.add_argument("--layer", type=int, default=47)
    ap.add_argument("--units", type=int, default=4, help="units per chunk")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--record", default=None, help="append the results to this markdown file")
    args = ap.parse_args()

    import ray

    from vizcore.executors.ray import RayExecutor

    model = vizcore.load(args.model, size=args.size)
    options = RenderOptions.from_env(steps=args.steps, size=args.size, seed=0, device="cpu")
    chunks = _chunks(model, args.layer, 4 * args.units, args.units, options)
    load0 = os.getloadavg()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        ex = RayExecutor(workers=1, keep_workers=True)
        ex.start(model, args.size, "cpu")
        over = overhead(model, ex, chunks[0], args.repeat)
        ex.shutdown()
        thr = throughput(model, chunks, args.repeat)
    finally:
        ray.shutdown()
    text = _report(args, model, over, thr, load0, os.getloadavg())
    print(text)
    if args.record:
        with open(args.record, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


def _report(args: argparse.Namespace, model: vizcore.Model, over: dict, thr: dict, load0: tuple, load1: tuple) -> str:
    import ray

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ok = "yes" if over["overhead_share"] <= OVERHEAD_GOAL else "NO"
    lines = [
        f"## scale — {now} (CPU, {os.cpu_count()} cores)",
        "",
        f"`python bench/scale.py --layer {args.layer} --units {args.units} --steps {args.steps} --size {args.size} "
        f"--repeat {args.repeat}` · {model.path.name} · ray {ray.__version__} · torch {torch.__version__} · "
        f"load average {load0[0]:.1f} -> {load1[0]:.1f} · medians of {args.repeat} interleaved rounds",
        "",
        "| measure | figure | goal | met |",
        "|---|---|---|---|",
        f"| per-chunk overhead of Ray ({args.units} units, {args.steps} steps, {args.size} px, layer {args.layer}) "
        f"| {over['overhead_s'] * 1e3:.0f} ms = {over['overhead_share'] * 100:.1f} % of the local chunk "
        f"({over['local_s']:.2f} s; round trip {over['ray_round_trip_s']:.2f} s, inside the actor "
        f"{over['ray_inside_s']:.2f} s) | <= {OVERHEAD_GOAL * 100:.0f} % | {ok} |",
    ]
    for name, ups in thr.items():
        lines.append(f"| throughput, {name} | {ups:.3f} units/s | - | - |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
