"""Seeded mutants of a small valid ONNX model, for tests/test_fuzz.py and bench/fuzz_campaign.py.

`base_model()` is a conv net with everything load touches: dynamic dims, attributes, initializers, metadata,
torch name scopes. `mutant(seed)` is one deterministic mutant: byte-level (flips, truncation, insertion, chunk
duplication) or protobuf-level (elem_type, dims, attribute values, op_type, opset, names, metadata, removed
inputs / initializers / nodes). Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def base_model() -> onnx.ModelProto:
    """conv-relu-maxpool-conv-relu-gap-flatten-gemm on (N, 3, H, W), 16 px by metadata; checked."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], strides=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="/gap/GlobalAveragePool"),
        helper.make_node("Flatten", ["g"], ["f"], name="/flatten/Flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1, alpha=1.0),
    ]
    scope = nodes[1].metadata_props.add()
    scope.key, scope.value = "pkg.torch.onnx.name_scopes", "['', 'relu1']"
    graph = helper.make_graph(
        nodes, "base", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [init("conv1.weight", 4, 3, 3, 3), init("conv1.bias", 4), init("conv2.weight", 6, 4, 3, 3),
         init("fc.weight", 5, 6), init("fc.bias", 5)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz",
                              producer_version="1.0")
    model.ir_version = 8
    for k, v in {"vizcore.size": "16", "vizcore.mean": "0.5", "vizcore.std": "0.25", "vizcore.range": "0,1"}.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    return model


_OPS = ["Conv", "Relu", "Foo", "", "Loop", "If", "Resize", "Reshape", "Add", "MatMul", "Softmax", "Gemm", "Cast",
        "Gather", "Slice", "Split", "ConstantOfShape", "TopK", "Einsum", "QLinearConv", "BatchNormalization"]
_TEXT = ["", "\x00", "\x1b]0;pwned\x07", "\x1b[2J", "a" * 5000, "../../etc/passwd", "é", "\ud7ff", "x", "logits",
         "c1", "conv1.weight", "[", "['', 'a'", "{'a': 1}", "5", "None", "[" * 300]
_INTS = [0, -1, 1, 2, 3, 7, 64, 2**31 - 1, -(2**31), 2**40, 10**6]
_FLOATS = [0.0, -1.0, 1e30, float("nan"), float("inf"), 1e-30]


def _pick(r: random.Random, seq: list) -> object:
    return seq[r.randrange(len(seq))]


def _mutate_proto(m: onnx.ModelProto, r: random.Random) -> str:
    g = m.graph
    kind = r.randrange(14)
    if kind == 0:
        vi = _pick(r, list(g.input) + list(g.output))
        vi.type.tensor_type.elem_type = _pick(r, [0, 2, 6, 7, 9, 10, 11, 16, 17, 99, 1000, -3])
        return "elem_type"
    if kind == 1:
        vi = _pick(r, list(g.input) + list(g.output))
        dims = vi.type.tensor_type.shape.dim
        if dims and r.random() < 0.8:
            d = dims[r.randrange(len(dims))]
            if r.random() < 0.7:
                d.dim_value = _pick(r, _INTS)
            else:
                d.dim_param = _pick(r, _TEXT)[:50]
        else:
            vi.type.tensor_type.shape.dim.add().dim_value = r.randrange(5)
        return "dims"
    if kind == 2:
        t = _pick(r, list(g.initializer))
        if t.dims:
            t.dims[r.randrange(len(t.dims))] = _pick(r, [0, 1, 2, 5, 1000])
        else:
            t.dims.append(3)
        return "init_dims"
    if kind == 3:
        node = _pick(r, [n for n in g.node if n.attribute] or list(g.node))
        if not node.attribute:
            node.attribute.append(helper.make_attribute("axis", _pick(r, _INTS)))
            return "attr_add"
        a = node.attribute[r.randrange(len(node.attribute))]
        if a.type == onnx.AttributeProto.INTS and a.ints:
            a.ints[r.randrange(len(a.ints))] = _pick(r, _INTS)
        elif a.type == onnx.AttributeProto.INT:
            a.i = _pick(r, _INTS)
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = _pick(r, _FLOATS)
        else:
            a.type = _pick(r, [0, 1, 2, 3, 4, 5, 6, 7, 8, 99])
        return "attr_value"
    if kind == 4:
        _pick(r, list(g.node)).op_type = _pick(r, _OPS)
        return "op_type"
    if kind == 5:
        m.opset_import[0].version = _pick(r, [0, 1, 6, 11, 13, 18, 21, 22, 23, 30, 1000, -1])
        if r.random() < 0.3:
            m.opset_import[0].domain = _pick(r, ["ai.onnx", "com.microsoft", "x.y", "\x00"])
        return "opset"
    if kind == 6:
        node = _pick(r, list(g.node))
        field = r.randrange(3)
        if field == 0:
            node.name = _pick(r, _TEXT)
        elif field == 1 and node.input:
            node.input[r.randrange(len(node.input))] = _pick(r, _TEXT)
        elif node.output:
            node.output[r.randrange(len(node.output))] = _pick(r, _TEXT)
        return "names"
    if kind == 7:
        props = m.metadata_props if r.random() < 0.4 else (g.node[1] if r.random() < 0.5
                                                           else _pick(r, list(g.node))).metadata_props
        key = _pick(r, ["vizcore.size", "vizcore.mean", "vizcore.std", "vizcore.range", "pkg.torch.onnx.name_scopes"])
        p = next((q for q in props if q.key == key), None) or props.add()
        p.key = key
        p.value = _pick(r, _TEXT + ["abc", "0", "-5", "1e9", "nan", "0,0", "1,2,3", "99999999999", "[1, 2]",
                                    "['a', None]", "['" + "a" * 100_000 + "']", "[" * 100_000 + "]" * 100_000])
        return "metadata"
    if kind == 8:
        what = r.randrange(4)
        if what == 0 and g.input:
            del g.input[r.randrange(len(g.input))]
        elif what == 1 and g.initializer:
            del g.initializer[r.randrange(len(g.initializer))]
        elif what == 2 and g.node:
            del g.node[r.randrange(len(g.node))]
        elif g.output:
            del g.output[r.randrange(len(g.output))]
        return "remove"
    if kind == 9:
        m.ir_version = _pick(r, [0, 1, 3, 7, 10, 11, 99, -1])
        return "ir_version"
    if kind == 10:
        t = _pick(r, list(g.initializer))
        t.data_type = _pick(r, [0, 2, 6, 7, 10, 11, 16, 99])
        return "init_type"
    if kind == 11:
        t = _pick(r, list(g.initializer))
        t.raw_data = t.raw_data[: r.randrange(len(t.raw_data) + 1)]
        return "init_data"
    if kind == 12:
        t = _pick(r, list(g.initializer))
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")
        t.external_data.add(key="location", value=_pick(r, _TEXT + ["w.bin", "/dev/zero", "."]))
        return "external"
    m.producer_version = _pick(r, _TEXT)
    node = _pick(r, list(g.node))
    node.domain = _pick(r, ["", "ai.onnx", "com.microsoft", "custom.x", "\x1b[2J"])
    return "domain_producer"


def _mutate_bytes(data: bytes, r: random.Random) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = r.randrange(5)
    if kind == 4:  # a name that is not valid UTF-8 (protobuf then hands back bytes), same length: still parses
        name = _pick(r, [b"/relu1/Relu", b"conv1.weight", b"c1", b"logits", b"fuzz", b"relu1", b"Relu"])
        bad = bytes(c if r.random() < 0.6 else 0xFF for c in name)
        return bytes(b).replace(name, bad, r.choice((1, -1))), "bad_utf8"
    if kind == 0:
        for _ in range(r.randint(1, 8)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        return bytes(b), "flip"
    if kind == 1:
        return bytes(b[: r.randrange(len(b))]), "truncate"
    if kind == 2:
        at = r.randrange(len(b))
        return bytes(b[:at] + bytes(r.randrange(256) for _ in range(r.randint(1, 16))) + b[at:]), "insert"
    at, n = r.randrange(len(b)), r.randint(1, 64)
    return bytes(b[:at] + b[at:at + n] * 2 + b[at + n:]), "duplicate"


def mutant(seed: int, base: onnx.ModelProto | None = None) -> tuple[bytes, str]:
    """The bytes of mutant `seed` and what was done to it (e.g. "proto:dims+names", "bytes:flip")."""
    r = random.Random(seed)
    m = onnx.ModelProto()
    m.CopyFrom(base if base is not None else base_model())
    if r.random() < 0.3:
        data, what = _mutate_bytes(m.SerializeToString(), r)
        return data, f"bytes:{what}"
    kinds = [_mutate_proto(m, r) for _ in range(r.choice((1, 1, 2, 3)))]
    return m.SerializeToString(), "proto:" + "+".join(kinds)
