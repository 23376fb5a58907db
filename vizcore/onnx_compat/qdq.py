"""Pre-pass `fuse_qdq`: QDQ node groups -> the QOperator ops onnxruntime runs them as, so that vizcore computes
onnxruntime's integers instead of the float graph as written.

onnxruntime (CPU, graph optimization level >= extended) rewrites `DQ(x), DQ(w)[, DQ(b)] -> Conv -> Q` into
QLinearConv, `-> MatMul -> Q` into QLinearMatMul, `-> Gemm [-> Q]` into com.microsoft QGemm, `DQ, DQ -> Add/Mul
-> Q` into QLinearAdd/QLinearMul, `DQ -> GlobalAveragePool/Sigmoid/LeakyRelu -> Q` and `DQ... -> Concat -> Q`
into their com.microsoft QLinear forms, and absorbs a Relu/Clip between the op and its Q when the Q's range makes
it redundant. This pass makes the same groups with the same selection rules (every data input from a
DequantizeLinear, the op's one output read by one QuantizeLinear only, matching integer types, an int32 bias),
so the existing QOperator converters (converters/quantized.py) compute them with their exact integer arithmetic.

On x86 onnxruntime does not run int8-activation Conv/MatMul kernels: it first turns each int8 Q -> DQ pair whose
Q feeds exactly one DQ into uint8 (zero point + 128, the same real values) and fuses what is uint8 afterwards; an
int8 tensor read by several nodes stays int8, so its producer and consumers stay float. This pass does the same
(`int8_activations=None`: as onnxruntime on this machine's CPU, int8 kernels allowed on ARM only).

Not done: dropping DQ/Q around Reshape, Transpose, Flatten, MaxPool, ... (onnxruntime does it; it cannot change
a value, the converters pass integers through those ops anyway); Q/DQ propagation through MaxPool, Reshape,
Transpose, Squeeze, Unsqueeze, Slice (onnxruntime inserts Q/DQ pairs after/before them where a DQ/Q is next to
them, so the op beyond can fuse; `quantize_static` already writes those pairs, other tools may not, and then such
a neighbour stays float here); groups without a zero-point input. Not fused because no converter computes them
yet: AveragePool, Softmax, MatMul without Q (MatMulIntegerToFloat).
"""

from __future__ import annotations

import platform
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..hookspecs import hookimpl
from . import Prepass

MS = "com.microsoft"
_STD = ("", "ai.onnx")
_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}


@dataclass
class _Index:
    """Who makes and who reads each tensor, the initializers, and onnxruntime's platform rule."""

    model: onnx.ModelProto
    int8_ok: bool
    inits: dict[str, TensorProto] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    readers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    outputs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        g = self.model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.outputs = {o.name for o in g.output}
        for node in g.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                if i:
                    self.readers[i].append(node)


@dataclass(frozen=True)
class _QParams:
    """One Q or DQ node: its integer tensor, scale and zero point names, integer type and range."""

    node: onnx.NodeProto
    tensor: str
    scale: str
    zero_point: str
    dtype: int

    @property
    def qrange(self) -> tuple[int, int]:
        return _RANGES[self.dtype]


def _is(node: onnx.NodeProto | None, op: str) -> bool:
    return node is not None and node.op_type == op and node.domain in _STD


def _params(ix: _Index, node: onnx.NodeProto, tensor: str, scalar: bool) -> _QParams | None:
    """Q/DQ parameters when both are initializers, the type is (u)int8 and there is no block quantization."""
    if len(node.input) < 3 or any(a.name == "block_size" and a.i for a in node.attribute):
        return None
    scale, zp = ix.inits.get(node.input[1]), ix.inits.get(node.input[2])
    if scale is None or zp is None or zp.data_type not in _RANGES:
        return None
    if scalar and (int(np.prod(scale.dims)) != 1 or int(np.prod(zp.dims)) != 1):
        return None
    return _QParams(node, tensor, node.input[1], node.input[2], zp.data_type)


def _dq(ix: _Index, name: str, scalar: bool = True) -> _QParams | None:
    """The DequantizeLinear making `name` (not a graph output), or None."""
    node = ix.producer.get(name)
    if not _is(node, "DequantizeLinear") or name in ix.outputs:
        return None
    return _params(ix, node, node.input[0], scalar)


def _bias(ix: _Index, name: str) -> str | None:
    """The int32 initializer behind a bias DequantizeLinear (its scale is x_scale * w_scale by construction)."""
    node = ix.producer.get(name)
    if not _is(node, "DequantizeLinear") or name in ix.outputs:
        return None
    t = ix.inits.get(node.input[0])
    return t.name if t is not None and t.data_type == TensorProto.INT32 else None


def _clip_bounds(ix: _Index, clip: onnx.NodeProto) -> tuple[float, float] | None:
    lo, hi = -np.inf, np.inf
    for a in clip.attribute:  # opset < 11
        lo, hi = (a.f, hi) if a.name == "min" else (lo, a.f) if a.name == "max" else (lo, hi)
    for k, name in enumerate(clip.input[1:3]):
        if not name:
            continue
        if name not in ix.inits:
            return None
        v = float(numpy_helper.to_array(ix.inits[name]).reshape(-1)[0])
        lo, hi = (v, hi) if k == 0 else (lo, v)
    return lo, hi


def _redundant(ix: _Index, act: onnx.NodeProto, q: _QParams) -> bool:
    """Whether the Q after `act` (Relu/Clip) saturates every value the activation would have changed."""
    qmin, qmax = q.qrange
    zp = int(numpy_helper.to_array(ix.inits[q.zero_point]).reshape(-1)[0])
    if act.op_type == "Relu":
        return zp == qmin
    bounds = _clip_bounds(ix, act)
    if bounds is None:
        return False
    scale = np.float32(numpy_helper.to_array(ix.inits[q.scale]).reshape(-1)[0])
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = (np.rint(np.float32(b) / scale) + zp for b in bounds)
    return bool(lo <= qmin and hi >= qmax)


def _sole_reader(ix: _Index, name: str) -> onnx.NodeProto | None:
    readers = ix.readers.get(name, [])
    return readers[0] if len(readers) == 1 and name not in ix.outputs else None


def _q_after(ix: _Index, node: onnx.NodeProto) -> tuple[_QParams | None, list[onnx.NodeProto], bool]:
    """(the Q reading `node`'s output, the nodes the group absorbs, whether any Q reads it at all)."""
    if len(node.output) != 1:
        return None, [], False
    nxt = _sole_reader(ix, node.output[0])
    absorbed = []
    if nxt is not None and nxt.op_type in ("Relu", "Clip") and nxt.domain in _STD:
        after = _sole_reader(ix, nxt.output[0])
        if after is None:
            return None, [], False
        absorbed, nxt = [nxt], after
    if not _is(nxt, "QuantizeLinear"):
        any_q = any(_is(r, "QuantizeLinear") for r in ix.readers.get(node.output[0], []))
        return None, [], any_q or bool(absorbed)
    q = _params(ix, nxt, nxt.output[0], scalar=True)
    if q is None or (absorbed and not _redundant(ix, absorbed[0], q)):
        return None, [], True
    return q, [*absorbed, nxt], True


@dataclass
class _Fused:
    node: onnx.NodeProto
    removed: list[onnx.NodeProto]


def _triple(p: _QParams) -> list[str]:
    return [p.tensor, p.scale, p.zero_point]


def _attrs(node: onnx.NodeProto, keep: tuple[str, ...] | None = None) -> list[onnx.AttributeProto]:
    return [a for a in node.attribute if keep is None or a.name in keep]


def _make(op: str, inputs: list[str], q: _QParams | None, target: onnx.NodeProto, domain: str,
          attrs: list[onnx.AttributeProto], removed: list[onnx.NodeProto]) -> _Fused:
    out = q.tensor if q is not None else target.output[0]
    node = helper.make_node(op, inputs, [out], name=target.name or out, domain=domain)
    node.attribute.extend(attrs)
    return _Fused(node, [target, *removed])


def _per_axis(ix: _Index, p: _QParams, axis: int, rank: int) -> bool:
    """Per-tensor parameters, or per-channel ones along `axis` (of a rank-`rank` weight), as the kernel reads them."""
    if int(np.prod(ix.inits[p.scale].dims)) == 1:
        return True
    got = next((a.i for a in p.node.attribute if a.name == "axis"), 1)
    return got % rank == axis % rank


def _int8_rule(ix: _Index, act: int, weight: int) -> bool:
    """onnxruntime's Conv/MatMul rule: int8 activations only where int8 kernels run, and then int8 weights."""
    return act != TensorProto.INT8 or (ix.int8_ok and weight == TensorProto.INT8)


def _conv(ix: _Index, node: onnx.NodeProto) -> _Fused | None:
    names = [n for n in node.input if n]
    x, w = _dq(ix, node.input[0]), _dq(ix, node.input[1], scalar=False)
    b = _bias(ix, node.input[2]) if len(names) == 3 else None
    q, removed, _ = _q_after(ix, node)
    if x is None or w is None or q is None or (len(names) == 3 and b is None) or w.tensor not in ix.inits:
        return None
    if not _per_axis(ix, w, 0, len(ix.inits[w.tensor].dims)):
        return None
    if x.dtype != q.dtype or not _int8_rule(ix, x.dtype, w.dtype):
        return None
    inputs = _triple(x) + _triple(w) + [q.scale, q.zero_point] + ([b] if b else [])
    return _make("QLinearConv", inputs, q, node, "", _attrs(node), removed)


def _matmul(ix: _Index, node: onnx.NodeProto) -> _Fused | None:
    a, b = _dq(ix, node.input[0]), _dq(ix, node.input[1], scalar=False)
    q, removed, _ = _q_after(ix, node)
    if a is None or b is None or q is None or a.dtype != q.dtype or not _int8_rule(ix, a.dtype, b.dtype):
        return None
    if not _per_axis(ix, b, -1, len(ix.inits[b.tensor].dims) if b.tensor in ix.inits else 2):
        return None
    return _make("QLinearMatMul", _triple(a) + _triple(b) + [q.scale, q.zero_point], q, node, "", [], removed)


def _gemm(ix: _Index, node: onnx.NodeProto) -> _Fused | None:
    names = [n for n in node.input if n]
    a, b = _dq(ix, node.input[0]), _dq(ix, node.input[1], scalar=False)
    c = _bias(ix, node.input[2]) if len(names) == 3 else None
    q, removed, any_q = _q_after(ix, node)
    if a is None or b is None or (len(names) == 3 and c is None) or (q is None and any_q):
        return None
    if (a.dtype == TensorProto.INT8 and b.dtype != a.dtype) or (q is not None and q.dtype != a.dtype):
        return None
    trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
    if not _per_axis(ix, b, 0 if trans_b else 1, 2):
        return None
    beta = next((x.f for x in node.attribute if x.name == "beta"), 1.0)
    if c is not None and beta != 1.0:
        return None
    tail = [q.scale, q.zero_point] if q is not None else []
    inputs = _triple(a) + _triple(b) + [c or ""] + tail
    return _make("QGemm", inputs, q, node, MS, _attrs(node, ("alpha", "transA", "transB")), removed)


def _elementwise(op: str, keep: tuple[str, ...] = (), extra: tuple[onnx.AttributeProto, ...] = ()
                 ) -> Callable[[_Index, onnx.NodeProto], _Fused | None]:
    """Add/Mul (2 inputs), unary ops (1) and Concat (any number): every input from a DQ, one type throughout."""

    def fuse(ix: _Index, node: onnx.NodeProto) -> _Fused | None:
        dqs = [_dq(ix, n) for n in node.input]
        q, removed, _ = _q_after(ix, node)
        if not dqs or q is None or any(d is None or d.dtype != q.dtype for d in dqs) or not all(node.input):
            return None
        if op == "QLinearConcat":
            inputs = [q.scale, q.zero_point] + [s for d in dqs for s in _triple(d)]
        else:
            inputs = [s for d in dqs for s in _triple(d)] + [q.scale, q.zero_point]
        return _make(op, inputs, q, node, MS, _attrs(node, keep) + list(extra), removed)

    return fuse


_CHANNELS_FIRST = helper.make_attribute("channels_last", 0)
_RULES: dict[str, Callable[[_Index, onnx.NodeProto], _Fused | None]] = {
    "Conv": _conv, "MatMul": _matmul, "Gemm": _gemm,
    "Add": _elementwise("QLinearAdd"), "Mul": _elementwise("QLinearMul"),
    "GlobalAveragePool": _elementwise("QLinearGlobalAveragePool", extra=(_CHANNELS_FIRST,)),
    "Sigmoid": _elementwise("QLinearSigmoid"), "LeakyRelu": _elementwise("QLinearLeakyRelu", ("alpha",)),
    "Concat": _elementwise("QLinearConcat", ("axis",)),
}


def _s8_to_u8(model: onnx.ModelProto) -> int:
    """onnxruntime's x86 step: an int8 Q -> DQ pair (the Q read by that DQ only, equal constant zero points) ->
    uint8 with zero point + 128. Same real values; which groups fuse afterwards depends on it."""
    ix = _Index(model, int8_ok=False)
    g, done = model.graph, 0
    for q in list(g.node):
        dq = _sole_reader(ix, q.output[0]) if _is(q, "QuantizeLinear") else None
        if not _is(dq, "DequantizeLinear") or len(q.input) < 3 or len(dq.input) < 3:
            continue
        if len(ix.readers.get(dq.output[0], [])) > 1:  # onnxruntime first gives each reader its own DQ
            continue
        zq, zd = ix.inits.get(q.input[2]), ix.inits.get(dq.input[2])
        if zq is None or zd is None or TensorProto.INT8 != zq.data_type or zd.data_type != TensorProto.INT8:
            continue
        vq, vd = numpy_helper.to_array(zq).reshape(-1), numpy_helper.to_array(zd).reshape(-1)
        if vq.size != 1 or vd.size != 1 or vq[0] != vd[0]:
            continue
        name = f"{q.output[0]}__vizcore_u8_zero_point"
        g.initializer.append(numpy_helper.from_array(np.array(int(vq[0]) + 128, np.uint8), name))
        q.input[2] = dq.input[2] = name
        done += 1
    return done


def fuse_qdq(model: onnx.ModelProto, *, int8_activations: bool | None = None) -> int:
    """Rewrite QDQ node groups into QOperator nodes as onnxruntime's CPU provider does; returns the number of
    groups fused. `int8_activations`: whether int8-activation Conv/MatMul fuse (None: as onnxruntime on this
    CPU, i.e. on ARM only; elsewhere int8 Q/DQ pairs are first made uint8 where onnxruntime does it)."""
    if not any(_is(n, "QuantizeLinear") for n in model.graph.node):
        return 0
    int8_ok = platform.machine().lower() in ("arm64", "aarch64") if int8_activations is None else int8_activations
    if not int8_ok:
        _s8_to_u8(model)
    ix = _Index(model, int8_ok)
    fused: dict[int, _Fused] = {}
    for node in model.graph.node:
        rule = _RULES.get(node.op_type) if node.domain in _STD else None
        group = rule(ix, node) if rule else None
        if group is not None:
            fused[id(node)] = group
    if fused:
        _splice(model, fused)
    return len(fused)


def _splice(model: onnx.ModelProto, fused: dict[int, _Fused]) -> None:
    """Each fused op at its target's place; absorbed Q/Relu/Clip nodes and DQ nodes nobody reads any more go."""
    g = model.graph
    gone = {id(n) for f in fused.values() for n in f.removed}
    nodes = [fused[id(n)].node if id(n) in fused else n for n in g.node if id(n) in fused or id(n) not in gone]
    outputs = {o.name for o in g.output}
    while True:
        read = {i for n in nodes for i in n.input if i} | outputs
        keep = [n for n in nodes if not _is(n, "DequantizeLinear") or n.output[0] in read]
        if len(keep) == len(nodes):
            break
        nodes = keep
    del g.node[:]
    g.node.extend(nodes)
    if any(n.domain == MS for n in nodes) and not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))


@hookimpl
def vizcore_add_prepasses() -> list[Prepass]:
    return [Prepass("fuse_qdq", 15, fuse_qdq)]
