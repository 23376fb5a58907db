"""What pruning bought: parameters, MACs counted from the graph, file size, interleaved onnxruntime latency."""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnx

from .. import onnxfile
from ..inputs import read_json
from . import runtime
from .graph import attr

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def params(model: onnx.ModelProto) -> int:
    """Float elements in initializers and Constant nodes."""
    n = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in (1, 10, 11, 16))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in (1, 10, 11, 16):
                    n += int(np.prod(a.t.dims))
    return n


def node_macs(node: onnx.NodeProto, shapes: dict, weights: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one node for one sample (0 for ops that are not convolutions or products)."""
    out = shapes.get(node.output[0], (None,))[0]
    x = shapes.get(node.input[0], (None,))[0]
    w = weights.get(node.input[1]) if len(node.input) > 1 else None
    if w is None and len(node.input) > 1:
        w = shapes.get(node.input[1], (None,))[0]
    if out is None or x is None or w is None:
        return 0
    if node.op_type == "Conv":
        return int(np.prod(out[1:])) * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        return int(np.prod(x[1:])) * int(np.prod(w[1:]))
    k = x[-2] if node.op_type == "Gemm" and attr(node, "transA", 0) else x[-1]
    return int(np.prod(out[1:])) * int(k)


def _weights(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    w = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    w[n.output[0]] = tuple(a.t.dims)
    return w


def layer_costs(model: onnx.ModelProto, shapes: dict) -> dict[str, dict[str, int]]:
    """Per Conv/Gemm/MatMul node (keyed by its output): op, name, output channels, parameters, MACs."""
    weights = _weights(model)
    out = {}
    for n in model.graph.node:
        if n.op_type in MAC_OPS:
            s = shapes.get(n.output[0])
            out[n.output[0]] = {"name": n.name or n.output[0], "op": n.op_type,
                                "channels": int(s[0][1]) if s and len(s[0]) > 1 else 0,
                                "params": sum(int(np.prod(weights[i])) for i in n.input[1:] if i in weights),
                                "macs": node_macs(n, shapes, weights)}
    return out


def macs(model: onnx.ModelProto, shapes: dict) -> int:
    """Total MACs for one sample."""
    weights = _weights(model)
    return sum(node_macs(n, shapes, weights) for n in model.graph.node if n.op_type in MAC_OPS)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the serialized model (weights included)."""
    return model.ByteSize()


def latency(sess_a, sess_b, feed: dict[str, np.ndarray], reps: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median seconds per run of each session, runs interleaved (a b, b a, ...) in this process; ratio b / a."""
    for _ in range(warmup):
        sess_a.run(None, feed)
        sess_b.run(None, feed)
    ta, tb = [], []
    for i in range(reps):
        pair = ((sess_a, ta), (sess_b, tb)) if i % 2 == 0 else ((sess_b, tb), (sess_a, ta))
        for sess, times in pair:
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
    a, b = statistics.median(ta), statistics.median(tb)
    return {"before_s": a, "after_s": b, "ratio": b / a if a > 0 else float("nan"), "reps": reps}


def layer_latency(model_a: onnx.ModelProto, model_b: onnx.ModelProto, feed: dict[str, np.ndarray],
                  reps: int = 10) -> tuple[dict[str, float], dict[str, float]]:
    """Median kernel time (seconds) per node name of each model, from onnxruntime's profiler, runs interleaved.

    Profiled at onnxruntime's basic graph optimization (no layout change, no activation fusion) so that each
    Conv/Gemm keeps its name; the total latency (`latency`) is measured at the default level.
    """
    import tempfile
    from pathlib import Path

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [onnxfile.session(m, profile=str(Path(tmp) / f"p{i}"), limit=None)
                    for i, m in enumerate((model_a, model_b))]
        for _ in range(reps):
            for s in sessions:
                s.run(None, feed)
        for s in sessions:
            events = read_json(s.end_profiling(), "onnxruntime profile", 1 << 30)
            times: dict[str, list[float]] = {}
            for e in events:
                name = str(e.get("name", ""))
                if e.get("cat") == "Node" and name.endswith("_kernel_time"):
                    times.setdefault(name[: -len("_kernel_time")], []).append(float(e.get("dur", 0)) * 1e-6)
            out.append({k: statistics.median(v) for k, v in times.items()})
    return out[0], out[1]


def compare(model: onnx.ModelProto, pruned: onnx.ModelProto, feed: dict, reps: int) -> tuple[list[dict], dict]:
    """Per changed Conv/Gemm/MatMul layer and in total: channels, parameters, MACs, latency (profiled per node,
    interleaved in total), before and after."""
    layers: list[dict] = []
    sa = runtime.shapes(model, feed)
    sb = runtime.shapes(pruned, feed)
    before, after = layer_costs(model, sa), layer_costs(pruned, sb)
    ta, tb = layer_latency(model, pruned, feed, reps=max(3, reps // 2)) if reps else ({}, {})
    for key, b in before.items():
        a = after.get(key, {"channels": 0, "params": 0, "macs": 0})
        if a != b:
            layers.append({"layer": b["name"], "op": b["op"], "channels": [b["channels"], a["channels"]],
                           "params": [b["params"], a["params"]], "macs": [b["macs"], a["macs"]],
                           "latency_s": [ta.get(b["name"]), tb.get(a.get("name", b["name"]))]})
    lat = (latency(runtime.session(model, timed=True), runtime.session(pruned, timed=True), feed, reps=reps)
           if reps else {})
    total = {"params": [params(model), params(pruned)], "macs": [macs(model, sa), macs(pruned, sb)],
             "file_bytes": [weight_bytes(model), weight_bytes(pruned)], "latency": lat}
    return layers, total
