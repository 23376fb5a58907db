"""`vizcore prune` on torchvision models with planted dead channels, both exporters.

Per model (random weights, seeded BatchNorm statistics): dead channels are planted by BatchNorm surgery (gamma 0,
beta = -50 before a ReLU / ReLU6 / Hardswish / SiLU; on a Conv or Linear with no BatchNorm: weight row 0, bias -50)
at up to four sites whose activation reaches only channel-mixing consumers (through pools, concat, channel shuffle,
gates), plus one channel of a whole residual stream in resnet18/50 and regnet. Each model is exported with the
TorchScript exporter and with dynamo=True, pruned, verified, and measured.

A planted channel is recognised in the ONNX file by its marker (a BatchNormalization channel with scale 0 and bias
-50, or a Conv/Gemm row of zeros with bias -50, where the exporter folded the BatchNorm): the fraction removed is
1 - markers left in the pruned file / markers in the original.

    python bench/prune.py [--models resnet18,vgg16] [--size 224] [--json bench/prune_results.json]

Goal (issue 15): >= 15 of the 20 exports with every planted channel removed and outputs equal (<= 1e-5 relative).
"""

from __future__ import annotations

import argparse
import json
import operator
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision.models as tvm
from onnx import numpy_helper
from torch import fx, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vizcore.prune import prune  # noqa: E402

MODELS = ["resnet18", "resnet50", "densenet121", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x1_0",
          "efficientnet_b0", "regnet_y_400mf", "googlenet", "vgg16"]
STREAMS = {"resnet18": ["bn1", "layer1.0.bn2", "layer1.1.bn2"],
           "resnet50": ["layer1.0.downsample.1", "layer1.0.bn3", "layer1.1.bn3", "layer1.2.bn3"],
           "regnet_y_400mf": ["trunk_output.block1.block1-0.proj.1", "trunk_output.block1.block1-0.f.c.1"]}
BETA = -50.0
ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)
ACT_FNS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.hardswish,
           torch.nn.functional.silu, torch.relu_}
FOLLOW_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity, nn.Flatten)
FOLLOW_FNS = {torch.cat, torch.flatten, operator.mul, torch.mul, operator.getitem, torch.transpose,
              torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.dropout}
FOLLOW_METHODS = {"view", "reshape", "transpose", "contiguous", "chunk", "flatten", "mean", "mul"}


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    m = getattr(tvm, name)(weights=None, **kw).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_((torch.rand(c, generator=g) - 0.5) * 0.2)
                mod.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                mod.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                mod.bias.copy_((torch.rand(c, generator=g) - 0.5) * 0.2)
    return m


def _is_act(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), ACTS)
    return (n.op == "call_function" and n.target in ACT_FNS) or (n.op == "call_method" and n.target in ("relu",
                                                                                                        "relu_"))


def _reaches_only_sinks(gm: fx.GraphModule, n: fx.Node, depth: int = 0) -> bool:
    """Every path from `n` ends in a Conv (group 1) or Linear, through channel-wise or routing ops only."""
    if depth > 40 or not n.users:
        return False
    for u in n.users:
        if u.op == "call_module":
            mod = gm.get_submodule(u.target)
            if isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1):
                continue
            if isinstance(mod, FOLLOW_MODULES) and _reaches_only_sinks(gm, u, depth + 1):
                continue
            return False
        if u.op == "call_function" and u.target in FOLLOW_FNS or u.op == "call_method" and u.target in FOLLOW_METHODS:
            if u.target in ("mean",) and not _keeps_channels(u):
                return False
            if _reaches_only_sinks(gm, u, depth + 1):
                continue
        return False
    return True


def _keeps_channels(u: fx.Node) -> bool:
    dims = u.args[1] if len(u.args) > 1 else u.kwargs.get("dim")
    return isinstance(dims, (list, tuple)) and 1 not in dims


def sites(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(kind, module name) of the producers that can be planted: a BatchNorm (or a Conv/Linear with no BatchNorm)
    made by a Conv of group 1 or a depthwise Conv, whose only user is an activation that reaches only sinks."""
    out = []
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        mod = gm.get_submodule(n.target)
        if not isinstance(mod, (nn.BatchNorm2d, nn.Conv2d, nn.Linear)) or len(n.users) != 1:
            continue
        act = next(iter(n.users))
        if not _is_act(gm, act) or not _reaches_only_sinks(gm, act):
            continue
        if isinstance(mod, nn.BatchNorm2d):
            src = n.args[0]
            if not (isinstance(src, fx.Node) and src.op == "call_module"):
                continue
            conv = gm.get_submodule(src.target)
            if not isinstance(conv, nn.Conv2d) or len(src.users) != 1:
                continue
            if conv.groups != 1 and not (conv.groups == conv.in_channels == conv.out_channels):
                continue
            out.append(("bn", n.target))
        elif getattr(mod, "bias", None) is not None and (not isinstance(mod, nn.Conv2d) or mod.groups == 1):
            out.append(("lin", n.target))
    return out


def plant(model: nn.Module, name: str, seed: int) -> int:
    """Plant dead channels in `model`; returns how many."""
    gm = fx.symbolic_trace(model)
    cand = sites(gm)
    rng = np.random.default_rng(seed)
    picks = [cand[int(i)] for i in np.unique(np.linspace(0, len(cand) - 1, min(4, len(cand))).round())] if cand else []
    planted = 0
    with torch.no_grad():
        for kind, target in picks:
            mod = model.get_submodule(target)
            n = mod.num_features if kind == "bn" else mod.weight.shape[0]
            chans = rng.choice(n, size=2, replace=False).tolist()
            if kind == "bn":
                mod.weight[chans], mod.bias[chans] = 0.0, BETA
            else:
                mod.weight[chans], mod.bias[chans] = 0.0, BETA
            planted += 2
        if name in STREAMS:
            bns = [model.get_submodule(t) for t in STREAMS[name]]
            c = int(rng.integers(0, bns[0].num_features))
            for bn in bns:
                bn.weight[c], bn.bias[c] = 0.0, BETA
            planted += 1
    return planted


def export(model: nn.Module, path: Path, dynamo: bool, size: int) -> None:
    x = torch.rand(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], verbose=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def markers(path: Path) -> int:
    """Planted channels still in the file: BN scale 0 & bias BETA, or a Conv/Gemm row of zeros with bias BETA."""
    m = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            init[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    count = 0
    for n in m.graph.node:
        ins = [init.get(i) for i in n.input]
        if n.op_type == "BatchNormalization" and ins[1] is not None and ins[2] is not None:
            count += int(np.sum((ins[1] == 0) & (ins[2] == BETA)))
        elif n.op_type in ("Conv", "Gemm") and len(ins) > 2 and ins[1] is not None and ins[2] is not None:
            w = ins[1].T if n.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in n.attribute) \
                else ins[1]
            rows = np.abs(w.reshape(w.shape[0], -1)).max(1) == 0
            count += int(np.sum(rows & (np.broadcast_to(ins[2], rows.shape) == BETA)))
    return count


def one(name: str, dynamo: bool, size: int, tmp: Path, seed: int = 0) -> dict:
    model = build(name, seed)
    planted = plant(model, name, seed)
    src, out = tmp / f"{name}_{int(dynamo)}.onnx", tmp / f"{name}_{int(dynamo)}_pruned.onnx"
    t0 = time.perf_counter()
    export(model, src, dynamo, size)
    t_export = time.perf_counter() - t0
    found = markers(src)
    t0 = time.perf_counter()
    rep = prune(src, out, size=size, probes=16, latency_reps=10, force=True)
    t_prune = time.perf_counter() - t0
    left = markers(out) if rep.written else found
    c = rep.cost or {}
    res = {"model": name, "exporter": "dynamo" if dynamo else "torchscript", "planted": planted, "markers": found,
           "planted_removed": found - left, "counts": rep.counts(), "verified": rep.verified,
           "max_rel_diff": rep.max_relative_diff, "frozen_ops": len(rep.frozen_ops), "culprit": rep.culprit,
           "params": c.get("params"), "macs": c.get("macs"), "file_bytes": c.get("file_bytes"),
           "latency_ratio": (c.get("latency") or {}).get("ratio"), "export_s": t_export, "prune_s": t_prune,
           "kept_reasons": sorted({k["reason"].split(":")[0] for k in rep.kept})[:6]}
    res["goal"] = goal(res)
    src.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return res


def goal(r: dict) -> bool:
    """Every planted channel (marker) removed, verified, max relative difference <= 1e-5."""
    return bool(r.get("verified") and r.get("markers") and r["planted_removed"] == r["markers"]
                and r["max_rel_diff"] <= 1e-5)


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['exporter']} | error: {r['error'][:80]} | | | | | | |"
    saved = lambda pair: f"{1 - pair[1] / pair[0]:.1%}" if pair and pair[0] else "-"  # noqa: E731
    lat = f"{r['latency_ratio']:.2f}" if r.get("latency_ratio") else "-"
    return (f"| {r['model']} | {r['exporter']} | {r['planted_removed']}/{r['markers']} | "
            f"{r['counts']['removed'] + r['counts']['folded']} | {saved(r['macs'])} | {saved(r['params'])} | "
            f"{r['max_rel_diff']:.1e} | {lat} | {'yes' if r['goal'] else 'NO'} |")


HEADER = ("| model | exporter | planted channels removed | channel classes removed (all) | MACs saved | params saved | "
          "max rel diff (goal <= 1e-5) | latency after/before | goal met |\n|---|---|---|---|---|---|---|---|---|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--exporters", default="torchscript,dynamo")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", default=None, help="append each result as a JSON line to this file")
    ap.add_argument("--table", metavar="JSONL", help="only print the table of results recorded with --json")
    args = ap.parse_args()
    if args.table:
        rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
        print(HEADER)
        for r in rows:
            r["goal"] = goal(r) if "error" not in r else False
            print(_row(r))
        return _summary(rows)
    torch.set_num_threads(2)
    rows = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for exp in args.exporters.split(","):
                try:
                    r = one(name, exp == "dynamo", args.size, Path(tmp))
                except Exception as exc:  # a bench records failures and goes on
                    r = {"model": name, "exporter": exp, "error": f"{type(exc).__name__}: {exc}", "goal": False}
                rows.append(r)
                print(_row(r), flush=True)
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as f:
                        f.write(json.dumps(r, default=str) + "\n")
    return _summary(rows)


def _summary(rows: list[dict]) -> int:
    met = sum(bool(r["goal"]) for r in rows)
    print(f"\ngoal: >= 15 of 20 exports with every planted channel removed and outputs equal; met: {met} of "
          f"{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
