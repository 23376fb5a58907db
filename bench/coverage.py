"""Conversion coverage: which ONNX models vizcore loads, and whether they match onnxruntime and back-propagate.

    python bench/coverage.py                 # everything (about an hour on 2 cores), writes bench/COVERAGE.md
    python bench/coverage.py --models resnet18,vit_b_16 --exporters dynamo --no-reference --out /tmp/cov.md

Models: the 19 torchvision classifiers (random weights, perturbed so no two initializers are identical) exported
with the TorchScript exporter (opset 17, batch 1 baked in) and the default dynamo exporter (opset 20, weights in
a .data file), plus the reference nets in the onnx wheel (onnx/backend/test/data/{pytorch-converted,
pytorch-operator,simple}). Each is checked against onnxruntime at batch 1 and 3 and for a finite, non-zero
gradient of the output with respect to the input. Every case runs in its own process (memory, crashes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TORCHVISION = ("alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50", "googlenet", "inception_v3", "densenet121",
               "squeezenet1_1", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0",
               "mnasnet1_0", "regnet_y_400mf", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t")
EXPORTERS = ("torchscript", "dynamo")
REFERENCE_SETS = ("pytorch-converted", "pytorch-operator", "simple")
TOLERANCE = 1e-3  # max |torch - onnxruntime| / max |onnxruntime|
ZERO_GRADIENT_OPS = frozenset({"Sign", "Round", "Floor", "Ceil", "ArgMax", "ArgMin", "Equal", "Less", "Greater"})


# -- one case (child process) -------------------------------------------------------------------------------------
def perturb_(model) -> None:  # noqa: ANN001
    """Make every weight distinct and non-trivial: random BN statistics, non-zero biases (seeded)."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g) * 0.05
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(noise)
            else:
                t.add_(noise)


def export_torchvision(name: str, exporter: str, folder: Path) -> Path:
    """Export one torchvision classifier (batch 1) and return the .onnx path."""
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    perturb_(model)
    size = 299 if name == "inception_v3" else 224
    x = torch.rand(1, 3, size, size)
    path = folder / f"{name}_{exporter}.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"])
        else:
            torch.onnx.export(model, (x,), str(path), verbose=False)
    return path


def check(path: Path, size: int | None = None) -> dict:
    """Load with vizcore; parity with onnxruntime at batch 1 and 3; gradient with respect to the input."""
    import numpy as np
    import torch

    import vizcore
    from vizcore.analysis.fidelity import fidelity
    from vizcore.errors import VizcoreError

    rec: dict = {}
    t = time.perf_counter()
    try:
        model = vizcore.load(path, size=size)
    except VizcoreError as exc:
        rec.update(status="load failed", error=exc.message)
        return rec
    rec["load_s"] = round(time.perf_counter() - t, 2)
    rec["layers"] = len(model.layers)
    rec["prepasses"] = {n: c for n, c in model.prepasses if c}
    rec["opset"] = model.opset
    for batch in (1, 3):
        if batch > 1 and isinstance(model.input.shape[0], int):
            rec["b3"] = f"n/a (fixed batch {model.input.shape[0]})"
            continue
        try:
            fid = fidelity(model, batch=batch, size=size)
        except Exception as exc:  # noqa: BLE001 - a forward that raises is a result to record
            rec[f"b{batch}"] = f"forward fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        if not fid.get("available") or fid.get("error"):
            rec[f"b{batch}"] = f"not compared: {fid.get('reason') or fid.get('error')}"
            continue
        x = model.probe_input(batch, size, 0)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        scale = 0.0
        with torch.no_grad():
            out = model.run(x)
        outs = out if isinstance(out, (tuple, list)) else [out]
        scale = max(float(o.detach().abs().max()) for o in outs if o.numel()) if outs else 0.0
        rel = fid["max_abs_diff"] / max(scale, 1e-12)
        rec[f"b{batch}"] = rel
    x = model.probe_input(1, size, 1).requires_grad_(True)
    try:
        out = model.run(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().sum().backward()
        g = x.grad
        rec["grad_finite"] = bool(torch.isfinite(g).all())
        rec["grad_nonzero"] = float((g != 0).float().mean())
    except Exception as exc:  # noqa: BLE001
        rec["grad_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    ok1 = isinstance(rec.get("b1"), float) and rec["b1"] <= TOLERANCE
    ok3 = isinstance(rec.get("b3"), float) and rec["b3"] <= TOLERANCE or str(rec.get("b3", "")).startswith("n/a")
    okg = rec.get("grad_finite") and rec.get("grad_nonzero", 0) > 0
    rec["status"] = "ok" if ok1 and ok3 and okg else "mismatch" if not ok1 else "batch>1 fails" if not ok3 \
        else "gradient fails"
    del np
    return rec


def _rel(got: list, ref: list) -> float:
    import numpy as np

    worst = 0.0
    for g, r in zip(got, ref):
        g = np.asarray(g, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            return float("inf")
        if r.size:
            worst = max(worst, float(np.max(np.abs(g - r))) / max(float(np.max(np.abs(r))), 1e-12))
    return worst


def reference_check(folder: Path) -> dict:
    """A reference net on its shipped inputs: vizcore vs onnxruntime (or, where onnxruntime no longer runs the
    op version, the shipped expected outputs); batch 3 where the batch is symbolic; gradient on the shipped input."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    import vizcore
    from vizcore.analysis.fidelity import fidelity
    from vizcore.errors import VizcoreError

    proto = onnx.load(str(folder / "model.onnx"))
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    float_in = [vi for vi in inputs if vi.type.tensor_type.elem_type in (1, 10, 11, 16)]
    values = list(proto.graph.input) + list(proto.graph.output)
    non_tensor = [vi for vi in values if not vi.type.HasField("tensor_type")]
    domains = {n.domain for n in proto.graph.node} - {"", "ai.onnx"}
    if not float_in or non_tensor or domains:
        why = ("no float input" if not float_in else "sequence values" if non_tensor
               else f"domain {', '.join(sorted(domains))}")
        return {"status": "out of scope", "error": why}
    try:
        model = vizcore.load(folder / "model.onnx")
    except VizcoreError as exc:
        return {"status": "load failed", "error": exc.message}
    rec: dict = {"layers": len(model.layers), "prepasses": {n: c for n, c in model.prepasses if c}}
    data = sorted(folder.glob("test_data_set_*"))[0]
    ins = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("input_*.pb"))]
    exp = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("output_*.pb"))]
    feeds = [torch.from_numpy(np.array(a)) for a in ins]
    with torch.no_grad():
        got = model.module(*feeds)
    got = [g.numpy() for g in (got if isinstance(got, (tuple, list)) else [got])]
    rec["expected"] = _rel(got, exp)
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
        rec["b1"] = _rel(got, sess.run(None, {vi.name: a for vi, a in zip(inputs, ins)}))
    except Exception as exc:  # noqa: BLE001 - onnxruntime dropped opset 1-6 kernels (Add@6, Gemm@6, ...)
        rec["ort"] = f"onnxruntime cannot run it: {str(exc).splitlines()[0][:80]}"
        rec["b1"] = rec["expected"]
    if isinstance(model.input.shape[0], int):
        rec["b3"] = f"n/a (fixed batch {model.input.shape[0]})"
    else:
        fid = fidelity(model, batch=3)
        if fid.get("available") and not fid.get("error"):
            with torch.no_grad():
                out = model.run(model.probe_input(3, None, 0))
            outs = out if isinstance(out, (tuple, list)) else [out]
            rec["b3"] = fid["max_abs_diff"] / max(max(float(o.abs().max()) for o in outs), 1e-12)
        else:
            rec["b3"] = f"not compared: {fid.get('reason') or fid.get('error')}"
    feeds = [f.clone().requires_grad_(f.is_floating_point()) for f in feeds]
    try:
        out = model.module(*feeds)
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if o.is_floating_point()]
        gen = torch.Generator().manual_seed(0)
        if outs:
            sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs).backward()
        grads = [f.grad for f in feeds if f.grad is not None]
        rec["grad_finite"] = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)
        rec["grad_nonzero"] = max((float((g != 0).float().mean()) for g in grads), default=0.0)
    except Exception as exc:  # noqa: BLE001
        rec["grad_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    ok1 = rec["b1"] <= TOLERANCE and rec["expected"] <= TOLERANCE
    ok3 = isinstance(rec["b3"], float) and rec["b3"] <= TOLERANCE or str(rec["b3"]).startswith(("n/a", "not compared"))
    if not all(np.isfinite(e).all() for e in exp if e.dtype.kind == "f"):
        rec["grad"] = "n/a (non-finite outputs)"
        okg = True
    elif {n.op_type for n in proto.graph.node} <= ZERO_GRADIENT_OPS or all(e.dtype.kind != "f" for e in exp):
        rec["grad"] = "n/a (zero by definition, or integer outputs)"
        okg = True
    else:
        okg = rec.get("grad_finite") and rec.get("grad_nonzero", 0) > 0
    rec["status"] = "ok" if ok1 and ok3 and okg else "mismatch" if not ok1 else "batch>1 fails" if not ok3 \
        else "gradient fails"
    return rec


def run_one(kind: str, name: str, exporter: str) -> dict:
    """One case in this process: export (torchvision) or locate (reference), then check."""
    t = time.perf_counter()
    if kind == "torchvision":
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = export_torchvision(name, exporter, Path(tmp))
            except Exception as exc:  # noqa: BLE001
                return {"status": "export failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"}
            rec = {"export_s": round(time.perf_counter() - t, 1)}
            rec.update(check(path, 299 if name == "inception_v3" else None))
    else:
        import onnx

        rec = reference_check(Path(onnx.__file__).parent / "backend" / "test" / "data" / exporter / name)
    rec["total_s"] = round(time.perf_counter() - t, 1)
    return rec


# -- orchestration --------------------------------------------------------------------------------------------------
def _cases(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    cases = []
    models = args.models.split(",") if args.models else TORCHVISION
    exporters = args.exporters.split(",") if args.exporters else EXPORTERS
    for m in models:
        for e in exporters:
            cases.append(("torchvision", m, e))
    if not args.no_reference:
        import onnx

        base = Path(onnx.__file__).parent / "backend" / "test" / "data"
        for s in REFERENCE_SETS:
            for d in sorted((base / s).iterdir()):
                if (d / "model.onnx").is_file():
                    cases.append(("reference", d.name, s))
    return cases


def _cell(rec: dict) -> str:
    st = rec.get("status", "?")
    if st == "ok":
        b3 = rec.get("b3")
        b3s = f"{b3:.0e}" if isinstance(b3, float) else "n/a"
        return f"ok {rec['b1']:.0e} / {b3s}"
    if st in ("load failed", "export failed", "out of scope", "crashed"):
        return f"{st}: {rec.get('error', '')}".replace("|", "\\|")
    detail = {k: rec.get(k) for k in ("b1", "b3", "grad_nonzero", "grad_error", "expected") if k in rec}
    text = ", ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}" for k, v in detail.items())
    return f"**{st}** ({text})".replace("|", "\\|")


def write_report(results: list[dict], out: Path, wall: float) -> None:
    """Markdown table(s) of the results."""
    tv = [r for r in results if r["kind"] == "torchvision"]
    ref = [r for r in results if r["kind"] == "reference"]
    lines = ["# Conversion coverage", "",
             f"Generated by `python bench/coverage.py` in {wall / 60:.1f} min (wall) on this machine "
             f"({os.cpu_count()} cores; torch {_version('torch')}, onnx {_version('onnx')}, "
             f"onnxruntime {_version('onnxruntime')}, onnx2torch {_version('onnx2torch')}).",
             "",
             f"A cell is `ok REL1 / REL3` when vizcore loads the file, matches onnxruntime at batch 1 and 3 "
             f"(max |torch - ort| / max |ort| <= {TOLERANCE:g}; REL1/REL3 are those ratios), and the gradient of the "
             "output with respect to the input is finite and non-zero. Batch 3 runs the original file in "
             "onnxruntime sample by sample when it fixes batch 1.", ""]
    if tv:
        ok = sum(r["status"] == "ok" for r in tv)
        b3 = sum(r["status"] == "ok" and isinstance(r.get("b3"), float) for r in tv)
        lines += [f"## torchvision classifiers: {ok}/{len(tv)} ok, {b3}/{len(tv)} also at batch 3", "",
                  "TorchScript = `torch.onnx.export(dynamo=False, opset_version=17)`, batch 1 baked in; "
                  "dynamo = the default `torch.onnx.export(model, (x,), f)` (opset 20, external data). "
                  "Random weights, perturbed so no two initializers are identical. `n/a` at batch 3: the export "
                  "bakes batch 1 in somewhere vizcore's `symbolic_batch` pre-pass cannot safely rewrite (it rewrites "
                  "constant Reshape shapes only, and onnxruntime disagreed or shape inference ruled it out), so the "
                  "model stays at batch 1 and vizcore renders one image at a time.", "",
                  "| model | " + " | ".join(EXPORTERS) + " | pre-passes (dynamo) | grad ≠ 0 (dynamo) |",
                  "|---|" + "---|" * (len(EXPORTERS) + 2)]
        by = {(r["name"], r["set"]): r for r in tv}
        for m in dict.fromkeys(r["name"] for r in tv):
            cells = [_cell(by[(m, e)]) if (m, e) in by else "-" for e in EXPORTERS]
            d = by.get((m, "dynamo"), {})
            pp = ", ".join(f"{k} {v}" for k, v in d.get("prepasses", {}).items()) or "-"
            gz = f"{d['grad_nonzero']:.1%}" if "grad_nonzero" in d else "-"
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {pp} | {gz} |")
        lines.append("")
    if ref:
        scope = [r for r in ref if r["status"] != "out of scope"]
        ok = sum(r["status"] == "ok" for r in scope)
        lines += [f"## onnx reference nets: {ok}/{len(scope)} in scope ok ({ok / max(len(scope), 1):.1%}); "
                  f"{len(ref) - len(scope)} out of scope", "",
                  "Out of scope: no float input to optimize (strings, integer ids), sequence values, or the training "
                  "domain. `expected` compares with the outputs shipped with each net.", "",
                  "| set | net | result |", "|---|---|---|"]
        for r in ref:
            lines.append(f"| {r['set']} | {r['name']} | {_cell(r)} |")
        lines.append("")
    lines += ["## Timing", "", f"Total wall time: {wall:.0f} s. Per case (export + load + checks):", ""]
    slow = sorted((r for r in results if "total_s" in r), key=lambda r: -r["total_s"])[:10]
    lines += [f"- {r['name']} ({r['set']}): {r['total_s']} s" for r in slow]
    out.write_text("\n".join(lines) + "\n")


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated torchvision names (default: all 19)")
    ap.add_argument("--exporters", help="comma-separated: torchscript,dynamo")
    ap.add_argument("--no-reference", action="store_true", help="skip the onnx wheel's reference nets")
    ap.add_argument("--no-torchvision", action="store_true", help="only the reference nets")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("COVERAGE.md"))
    ap.add_argument("--json", type=Path, help="also write the raw records here")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per case")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "NAME", "SET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, name, group = args.one
        names = [name] if name != "*" else [n for k, n, g in _cases(args) if k == kind and g == group]
        for n in names:
            rec = run_one(kind, n, group)
            rec.update(kind=kind, name=n, set=group)
            print(json.dumps(rec), flush=True)
        return 0
    cases = _cases(args)
    if args.no_torchvision:
        cases = [c for c in cases if c[0] != "torchvision"]
    # torchvision cases run one per process (memory, crashes); the tiny reference nets one process per set
    jobs: list[tuple[str, str, str, list[tuple[str, str, str]]]] = []
    for kind, name, group in cases:
        if kind == "reference":
            if not jobs or jobs[-1][2] != group or jobs[-1][0] != "reference":
                jobs.append((kind, "*", group, []))
            jobs[-1][3].append((kind, name, group))
        else:
            jobs.append((kind, name, group, [(kind, name, group)]))
    results, start, done = [], time.perf_counter(), 0
    for kind, name, group, members in jobs:
        extra = ["--no-torchvision"] if kind == "reference" else []
        try:
            proc = subprocess.run([sys.executable, __file__, *extra, "--one", kind, name, group],
                                  capture_output=True, text=True, timeout=args.timeout * len(members))
            got = {(r["kind"], r["name"], r["set"]): r for r in
                   (json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{"))}
            error = (proc.stderr.strip().splitlines() or ["?"])[-1][:150]
        except subprocess.TimeoutExpired:
            got, error = {}, f"timeout after {args.timeout * len(members)} s"
        for key in members:
            rec = got.get(key) or {"status": "crashed", "error": error}
            rec.update(kind=key[0], name=key[1], set=key[2])
            results.append(rec)
            done += 1
            print(f"[{done}/{len(cases)}] {key[2]:>17} {key[1]:<45} {_cell(rec)}", flush=True)
    wall = time.perf_counter() - start
    write_report(results, args.out, wall)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
