"""Seeded mutants of a small valid ONNX model, for tests/test_fuzz.py and bench/fuzz_campaign.py.

`base_model()` is a conv net with everything load touches: dynamic dims, attributes, initializers, metadata,
torch name scopes; `residual_model()` a second one (BatchNorm, a residual Add, Concat, Reshape, MatMul).
`structural_mutant(seed, bases)` changes fields only (and splices hard nodes: a huge Range, an Expand, duplicated
names), so most mutants reach conversion, the check and prune. `mutant(seed)` is one deterministic mutant:
byte-level (flips, truncation, insertion, chunk duplication) or protobuf-level (elem_type, dims, attribute
values, op_type, opset, names, metadata, removed inputs / initializers / nodes). Not collected by pytest.
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


def residual_model() -> onnx.ModelProto:
    """A second real small model for structural mutants: conv-bn-relu, a residual Add, a Concat and Reshape; checked."""
    rng = np.random.default_rng(1)

    def init(name: str, *shape: int, dtype: type = np.float32) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(dtype), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="/c1/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"], name="/bn/BN"),
        helper.make_node("Relu", ["n1"], ["r1"], name="/r1/Relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="/c2/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="/add/Add"),
        helper.make_node("Relu", ["s"], ["r2"], name="/r2/Relu"),
        helper.make_node("Concat", ["r2", "r1"], ["cat"], name="/cat/Concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gp"], name="/gap/GAP"),
        helper.make_node("Reshape", ["gp", "shape"], ["flat"], name="/flat/Reshape"),
        helper.make_node("MatMul", ["flat", "wf"], ["logits"], name="/fc/MatMul"),
    ]
    inits = [init("w1", 4, 3, 3, 3), init("w2", 4, 4, 3, 3), init("g", 4), init("b", 4), init("m", 4),
             numpy_helper.from_array(np.ones(4, np.float32), "v"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "shape"), init("wf", 8, 3)]
    graph = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz")
    model.ir_version = 8
    p = model.metadata_props.add()
    p.key, p.value = "vizcore.range", "0,1"
    onnx.checker.check_model(model)
    return model


def _insert_op(m: onnx.ModelProto, r: random.Random) -> str:
    """Structural: splice a node that is valid for onnx's checker but hard on everything after it (a huge Range,
    a Loop with a large trip count, an Expand to a big shape, a duplicated node name, swapped inputs)."""
    g = m.graph
    kind = r.randrange(5)
    if kind == 0:
        big = _pick(r, [10**3, 10**9, 10**13])
        g.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                              (("fz_s", 0), ("fz_l", big), ("fz_d", 1))])
        g.node.append(helper.make_node("Range", ["fz_s", "fz_l", "fz_d"], ["fz_r"], name="fz_range"))
        return "insert_range"
    if kind == 1:
        shape = _pick(r, [[2, 2], [10**5, 10**5], [1, 3, 10**4, 10**4]])
        g.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), "fz_shape"))
        g.node.append(helper.make_node("Expand", [g.node[0].output[0], "fz_shape"], ["fz_e"], name="fz_expand"))
        return "insert_expand"
    if kind == 2 and len(g.node) > 1:
        g.node[r.randrange(1, len(g.node))].name = g.node[0].name
        return "duplicate_name"
    if kind == 3:
        node = _pick(r, [n for n in g.node if len(n.input) >= 2] or list(g.node))
        if len(node.input) >= 2:
            node.input[0], node.input[1] = node.input[1], node.input[0]
        return "swap_inputs"
    i = r.randrange(len(g.node))
    g.node.insert(i, onnx.NodeProto())
    g.node[i].CopyFrom(g.node[i + 1])
    return "duplicate_node"


def structural_mutant(seed: int, bases: list[onnx.ModelProto]) -> tuple[bytes, str]:
    """Mutant `seed` of one of `bases`: field-level changes only (no byte flips), so most mutants still parse and
    reach the later stages (conversion, the check's probes, prune's surgery)."""
    r = random.Random(seed)
    m = onnx.ModelProto()
    m.CopyFrom(bases[seed % len(bases)])
    kinds = [(_insert_op if r.random() < 0.3 else _mutate_proto)(m, r) for _ in range(r.choice((1, 1, 2)))]
    return m.SerializeToString(), f"struct{seed % len(bases)}:" + "+".join(kinds)


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


#: The commands a structural mutant goes through (MODEL is the mutant's path); small settings, no writes.
COMMANDS = {"inspect": ["inspect", "MODEL"],
            "check": ["check", "MODEL", "--size", "16", "--noise-probes", "4", "--ascent-steps", "4", "-q"],
            "prune": ["prune", "MODEL", "--dry-run", "--probes", "4", "--latency-reps", "0", "--size", "16"]}


def run_command(cli: object, argv: list[str]) -> tuple[object, str]:
    """`cli(argv)` with stdout and stderr captured: (exit code, or "raised TYPE" if it raised; stderr)."""
    import contextlib
    import io
    import warnings

    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code: object = cli(argv)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the point of a fuzz run
        code = f"raised {type(exc).__name__}: {str(exc)[:80]}"
    return code, err.getvalue()


def crashed(code: object, err: str) -> bool:
    """A crash for a user: an exit code other than 0, 1 (a failed check) or 2 (one-line error), or a traceback."""
    return code not in (0, 1, 2) or "Traceback" in err or (code == 2 and not err.lstrip().startswith("error:"))
