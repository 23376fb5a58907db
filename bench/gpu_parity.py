"""Do vizcore's converted modules run on CUDA and give the CPU's results (forward and input gradient)?

    python bench/gpu_parity.py            # needs a CUDA device; prints one line per case and a JSON summary

Cases: every converter case of tests/test_onnx_compat_converters.py, the recurrent cases, and the embedded
MobileNetV2 (plus a graph cut of it). Catches CPU-only tensors created inside converter modules.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import vizcore  # noqa: E402


def _cases():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("conv_cases", ROOT / "tests" / "test_onnx_compat_converters.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from conftest import make_onnx

    for name, (nodes, feeds, inits, opset) in mod.CASES.items():
        yield name, nodes, feeds, inits, opset, [o for n in nodes[-1:] for o in n.output], make_onnx
    for name, (kind, attrs, dirs, outs, _layout, init) in mod.RNN_CASES.items():
        inits = mod._rnn(kind, dirs)
        ins = ["x", "W", "R", "B"]
        if init:
            ins += ["", "h0"] + (["c0"] if kind == "LSTM" else [])
            inits["h0"] = mod.f32(dirs, 2, 5)
            if kind == "LSTM":
                inits["c0"] = mod.f32(dirs, 2, 5)
        yield name, [helper.make_node(kind, ins, outs, hidden_size=5, **attrs)], {"x": mod.f32(4, 2, 3)}, inits, 14, \
            outs, make_onnx


DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cuda"  # "cpu" checks the script itself on a machine without a GPU


def _compare(model: vizcore.Model, feeds: list[torch.Tensor]) -> tuple[float, float]:
    """Max abs difference CPU vs DEVICE of the outputs and of the first input's gradient."""
    outs, grads = {}, {}
    for dev in ("cpu", DEVICE):
        m = model.module.to(dev)
        args = [f.to(dev).clone().requires_grad_(i == 0 and f.is_floating_point()) for i, f in enumerate(feeds)]
        out = m(*args)
        out = list(out) if isinstance(out, (tuple, list)) else [out]
        outs[dev] = [o.detach().float().cpu() for o in out]
        if args[0].requires_grad:
            w = [torch.ones_like(o) for o in out]
            sum((o * wi).sum() for o, wi in zip(out, w) if o.is_floating_point()).backward()
            grads[dev] = args[0].grad.cpu()
    model.module.to("cpu")
    d_out = max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(outs["cpu"], outs[DEVICE]))
    d_grad = float((grads["cpu"] - grads[DEVICE]).abs().max()) if grads else 0.0
    return d_out, d_grad


def main() -> int:
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    sync = torch.cuda.synchronize if DEVICE.startswith("cuda") else (lambda: None)
    results, failures = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, nodes, feeds, inits, opset, outputs, make_onnx in _cases():
            ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT if v.dtype == np.float32 else TensorProto.INT64,
                                                 v.shape) for k, v in feeds.items()]
            outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
            model = make_onnx(nodes, ins, outs, [numpy_helper.from_array(v, k) for k, v in inits.items()], opset=opset)
            for o in model.graph.output:
                o.type.tensor_type.shape.SetInParent()
            path = Path(tmp) / "case.onnx"
            path.write_bytes(model.SerializeToString())
            try:
                m = vizcore.load(path)
                d = _compare(m, [torch.from_numpy(v.copy()) for v in feeds.values()])
                results[name] = d
                ok = d[0] <= 1e-4 and d[1] <= 1e-4
            except Exception as exc:  # noqa: BLE001 - a case that fails on CUDA is the finding
                results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
                ok = False
            if not ok:
                failures.append(name)
            print(f"{'ok ' if ok else 'BAD'} {name}: {results[name]}", flush=True)
    m = vizcore.load(ROOT / "models" / "mobilenet_v2.onnx")
    x = m.probe_input(4, 224)
    d = _compare(m, [x])
    results["mobilenet_v2"] = d
    print(f"mobilenet_v2 cpu vs cuda: {d}", flush=True)
    layer = [l for l in m.layers if l.op_type == "Conv"][2]
    cut = m.cut_at([layer]).to(DEVICE)
    full = m.module.to(DEVICE)
    xc = x.to(DEVICE)
    timing = {}
    for key, fn in (("full", lambda: full(xc)), ("cut", lambda: cut(xc))):
        with torch.no_grad():
            for _ in range(3):
                fn()
            sync()
            t = time.perf_counter()
            for _ in range(20):
                fn()
            sync()
        timing[key] = (time.perf_counter() - t) / 20 * 1e3
    results["mobilenet_cut_ms"] = timing
    name = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu"
    print(f"mobilenet_v2 batch 4 on {name}: full {timing['full']:.2f} ms, cut at #{layer.index} {timing['cut']:.2f} ms",
          flush=True)
    print(json.dumps({"device": name, "torch": torch.__version__, "failures": failures}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
