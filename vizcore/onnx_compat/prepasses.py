"""Built-in ModelProto rewrites that make exported graphs convertible, applied in `order` before conversion.

    10 constants_to_initializers  Constant/Identity-of-initializer -> initializers (onnx2torch #156)
    15 fuse_qdq                   QDQ node groups -> QLinearConv/QGemm/QLinearAdd/... as onnxruntime fuses them
                                  (onnx_compat/qdq.py)
    20 fold_constants             nodes computed only from initializers (Cast, Transpose, DequantizeLinear of
                                  weights, shape arithmetic on static shapes) -> initializers
    25 inline_constant_if         an If whose condition is constant -> the nodes of the branch it takes
    26 unroll_constant_loops      a Loop whose iteration count is known -> one copy of its body per iteration
                                  (onnx_compat/loops.py)
    30 symbolic_batch             a batch-1 export -> symbolic batch; constant Reshape shapes whose leading 1 is
                                  the batch -> 0 (copy), each rewrite checked by shape inference and onnxruntime
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .. import onnxfile
from ..hookspecs import hookimpl
from . import Prepass

BATCH = "batch"


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn `Constant` nodes and `Identity` nodes over initializers back into initializers.

    onnx2torch's Conv/ConvTranspose read weights from initializers only: the TorchScript exporter's de-duplicated
    weights (Identity) and Paddle's weights (Constant) would otherwise fail with KeyError (onnx2torch #156).
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    keep, changes = [], 0
    for node in g.node:
        out = node.output[0] if node.output else ""
        if out in graph_outputs:
            keep.append(node)
            continue
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            arr = None
            if attr.name == "value":
                arr = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_float", "value_floats"):
                arr = np.asarray(onnx.helper.get_attribute_value(attr), dtype=np.float32)
            elif attr.name in ("value_int", "value_ints"):
                arr = np.asarray(onnx.helper.get_attribute_value(attr), dtype=np.int64)
            if arr is not None:
                t = numpy_helper.from_array(arr, out)
                g.initializer.append(t)
                inits[out] = t
                changes += 1
                continue
        if node.op_type == "Identity" and node.input and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = out
            g.initializer.append(t)
            inits[out] = t
            changes += 1
            continue
        keep.append(node)
    if changes:
        del g.node[:]
        g.node.extend(keep)
    return changes


#: Ops never folded: random, control flow / subgraphs, sequences, and ops whose output may dwarf their inputs.
_NO_FOLD = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout",
    "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceAt", "SplitToSequence",
    "ConcatFromSequence", "Constant",
})
_MAX_FOLDED = 1 << 24  # elements


#: Ops whose newer versions only add types, so the reference evaluator may run them at a newer opset when it lacks
#: the model's version (it implements DequantizeLinear from 19 only).
_NEWER_OK = {"DequantizeLinear": 19}


def _evaluate(node: onnx.NodeProto, inputs: list[onnx.TensorProto], opsets: list[onnx.OperatorSetIdProto],
              evaluator: type) -> list[np.ndarray]:
    outputs = [onnx.helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "fold", [], outputs, inputs), opset_imports=opsets)
    try:
        return evaluator(model).run(None, {})
    except RuntimeError:
        if node.op_type not in _NEWER_OK:
            raise
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = max(o.version, _NEWER_OK[node.op_type])
        return evaluator(model).run(None, {})


def fold_constants(model: onnx.ModelProto) -> int:
    """Evaluate nodes whose inputs are all initializers (onnx's reference evaluator) and store their outputs.

    Weights that reach a Conv/MatMul through a Cast (fp16 models), a Transpose or a DequantizeLinear (weight-only
    quantized models) become plain initializers, and static shape arithmetic disappears from the layer table.
    """
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    opsets = list(model.opset_import)
    inits = {t.name: t for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    keep, changes = [], 0
    for node in g.node:
        foldable = (node.domain in ("", "ai.onnx") and node.op_type not in _NO_FOLD and node.input
                    and all(i in inits for i in node.input if i) and not any(o in graph_outputs for o in node.output)
                    and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                for a in node.attribute))
        if not foldable:
            keep.append(node)
            continue
        try:
            outs = _evaluate(node, [inits[n] for n in node.input if n], opsets, ReferenceEvaluator)
        except Exception:
            keep.append(node)
            continue
        if sum(np.asarray(o).size for o in outs) > _MAX_FOLDED:
            keep.append(node)
            continue
        for name, value in zip([o for o in node.output if o], outs):
            t = numpy_helper.from_array(np.asarray(value), name)
            g.initializer.append(t)
            inits[name] = t
        changes += 1
    if changes:
        del g.node[:]
        g.node.extend(keep)
    return changes


# -- control flow with a constant condition -------------------------------------------------------------------------
def _splice_branch(g: onnx.GraphProto, node: onnx.NodeProto, branch: onnx.GraphProto, tag: str) -> list:
    """The branch's nodes with internal tensors renamed (prefix `tag`) and its outputs renamed to the If's."""
    rename: dict[str, str] = {}
    for t in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename[t.name] = f"{tag}/{t.name}"
        g.initializer.append(copy)
    produced = {o for n in branch.node for o in n.output if o}
    outputs = {bo.name: out for bo, out in zip(branch.output, node.output)}
    for o in produced:
        rename[o] = outputs.get(o, f"{tag}/{o}")
    spliced = []
    for n in branch.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = f"{tag}/{n.name or n.op_type}"
        c.input[:] = [rename.get(i, i) if i else i for i in n.input]
        c.output[:] = [rename.get(o, o) if o else o for o in n.output]
        spliced.append(c)
    for bo, out in zip(branch.output, node.output):  # a branch output that no branch node makes: pass it on
        if bo.name not in produced:
            spliced.append(onnx.helper.make_node("Identity", [rename.get(bo.name, bo.name)], [out],
                                                 name=f"{tag}/{out}"))
    return spliced


def inline_constant_if(model: onnx.ModelProto) -> int:
    """Replace each `If` whose condition is a constant (an initializer after folding) by the branch it takes.

    Exporters leave such Ifs behind (a traced `if x.shape[0] > 1:`), and a graph input given as a constant (a
    sample rate) makes more; data-dependent ones stay and are cut off by the loader (see onnx_compat.partial).
    After each round the inlined nodes computed from constants are folded, so nested Ifs whose conditions were
    computed from the constant inside a branch are inlined too.
    """
    changes = 0
    while True:
        inlined = _inline_round(model, changes)
        if not inlined:
            return changes
        changes += inlined
        constants_to_initializers(model)
        fold_constants(model)


def _inline_round(model: onnx.ModelProto, done: int) -> int:
    """Inline every If whose condition is an initializer now; the number inlined."""
    g = model.graph
    changes = done
    while True:
        inits = {t.name: t for t in g.initializer}
        at = next((k for k, n in enumerate(g.node) if n.op_type == "If" and n.domain in ("", "ai.onnx")
                   and n.input and n.input[0] in inits), None)
        if at is None:
            return changes - done
        node = g.node[at]
        cond = bool(np.asarray(numpy_helper.to_array(inits[node.input[0]])).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))
        spliced = _splice_branch(g, node, branch, f"{node.name or 'If'}#{changes}")
        nodes = list(g.node)
        del g.node[:]
        g.node.extend(nodes[:at] + spliced + nodes[at + 1:])
        changes += 1


# -- symbolic batch -------------------------------------------------------------------------------------------------
def _batch_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    found = []
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in inits and len(dims) >= 2 and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            found.append(vi)
    return found


def _reshape_candidates(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    inits = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
        if shape.size >= 2 and shape[0] == 1:
            found.append((node, shape))
    return found


def _set_batch(vi: onnx.ValueInfoProto, value: int | str) -> None:
    dim = vi.type.tensor_type.shape.dim[0]
    if isinstance(value, str):
        dim.dim_param = value
    else:
        dim.dim_value = value


def _skeleton(model: onnx.ModelProto, batch: int | None) -> onnx.ModelProto:
    """The graph with the batch set to `batch` (None: left symbolic) and big initializers turned into typed inputs:
    shape inference needs their shapes, not their bytes (copying vit_b_16's weights for every inference took
    seconds)."""
    m = onnx.ModelProto()
    m.ir_version, m.producer_name = model.ir_version, model.producer_name
    m.opset_import.extend(model.opset_import)
    g = m.graph
    g.node.extend(model.graph.node)
    g.output.extend(model.graph.output)
    g.input.extend(model.graph.input)
    names = {vi.name for vi in g.input}
    for t in model.graph.initializer:
        if int(np.prod(t.dims)) <= 64:
            g.initializer.append(t)
        elif t.name not in names:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for vi in g.input if batch is not None else ():
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param") and dims[0].dim_param == BATCH:
            dims[0].dim_value = batch
    return m


def _inferred_dim0(model: onnx.ModelProto, batch: int, names: set[str]) -> dict[str, int | None]:
    """dim 0 of the named tensors by shape inference with the batch set to `batch` (None if unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model, batch), data_prop=True)
    except Exception:
        return {}
    found: dict[str, int | None] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.name in names:
            dims = vi.type.tensor_type.shape.dim
            found[vi.name] = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    return found


def _feeds(model: onnx.ModelProto, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [batch if i == 0 else (d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 224)
                 for i, d in enumerate(tt.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = (rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                          else np.zeros(shape, dtype=dtype))
    return feeds


def _session(model: onnx.ModelProto):  # noqa: ANN202 - onnxruntime is optional
    # a rewrite that fails is expected here, not an error worth printing; a graph that runs longer than the
    # limit is not checked (the rewrite is undone), never waited for
    return onnxfile.session(model, log_level=4, limit=PREPASS_RUN_LIMIT_S)


#: Longest the batch pre-pass waits for one onnxruntime run of the graph it checks (seconds).
PREPASS_RUN_LIMIT_S = 20.0


def _reference_session(model: onnx.ModelProto):  # noqa: ANN202 - onnxruntime is optional
    """An onnxruntime session of the original graph, or None (not installed, or it cannot run this graph)."""
    try:
        return _session(model)
    except Exception:  # ImportError, or an op version onnxruntime no longer implements
        return None


def _onnxruntime_agrees(before, rewritten: onnx.ModelProto) -> bool:  # noqa: ANN001
    """Whether the rewritten graph at batch 1 and 3 equals the original run sample by sample."""
    try:
        after = _session(rewritten)
        feeds = _feeds(rewritten, 3)
        got3 = after.run(None, feeds)
        got1 = after.run(None, {k: v[:1] for k, v in feeds.items()})
        for i in range(3):
            ref = before.run(None, {k: v[i:i + 1] for k, v in feeds.items()})
            for r, a, b in zip(ref, got3, got1):
                if r.ndim == 0 or a.shape != (3 * r.shape[0], *r.shape[1:]) or b.shape != r.shape:
                    return False  # an output without the batch dim: the graph mixes samples
                if not np.allclose(a[i:i + 1], r, rtol=1e-3, atol=1e-4) or (
                        i == 0 and not np.allclose(b, r, rtol=1e-4, atol=1e-5)):
                    return False
        return True
    except Exception:
        return False


def _carries_batch(at1: int | None, at3: int | None, unknown_ok: bool) -> bool:
    if at1 is None or at3 is None:
        return unknown_ok and at1 in (None, 1) and at3 in (None, 3)
    return at1 == 1 and at3 == 3


def symbolic_batch(model: onnx.ModelProto) -> int:
    """Make a batch-1 export run at any batch: a symbolic batch dim, and Reshape shapes [1, ...] -> [0, ...].

    Static exports bake batch 1 into constant Reshape shapes, so rendering many units at once fails. A leading 1
    is rewritten only where shape inference shows the Reshape's input carries the batch (dim 0 is 1 at batch 1
    and 3 at batch 3); onnxruntime, when installed, must then agree with the original sample by sample, else
    the whole rewrite is undone. Returns the number of inputs made symbolic plus Reshapes rewritten (0 if undone).
    """
    inputs = _batch_inputs(model)
    if not inputs:
        return 0
    original = onnx.ModelProto()
    original.CopyFrom(model)
    g = model.graph
    for vi in inputs:
        _set_batch(vi, BATCH)
    for vi in g.output:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            _set_batch(vi, BATCH)
    del g.value_info[:]
    # Rewrite every candidate, then undo those whose input does not carry the batch, until stable: checking
    # one at a time would see the batch already lost by an earlier, not yet rewritten Reshape.
    plan = {}
    for node, shape in _reshape_candidates(model):
        allowzero = any(a.name == "allowzero" and a.i == 1 for a in node.attribute)
        if not allowzero or -1 not in shape:
            new = shape.copy()
            new[0] = 0 if not allowzero else -1
            plan[id(node)] = (node, node.input[1], new)
    for i, (node, _, new) in enumerate(plan.values()):
        name = f"{node.input[1]}__vizcore_batch{i}"
        g.initializer.append(numpy_helper.from_array(new.astype(np.int64), name))
        node.input[1] = name
    names = {node.input[0] for node, _, _ in plan.values()}
    reference = _reference_session(original)

    def settle(unknown_ok: bool) -> None:
        """Undo rewrites whose input does not carry the batch by shape inference, until none is left to undo."""
        for _ in range(len(plan) + 1):
            at1, at3 = _inferred_dim0(model, 1, names), _inferred_dim0(model, 3, names)
            wrong = [k for k, (node, _, _) in plan.items()
                     if not _carries_batch(at1.get(node.input[0]), at3.get(node.input[0]), unknown_ok)]
            if not wrong:
                return
            for k in wrong:
                node, old, _ = plan.pop(k)
                node.input[1] = old

    def hopeless() -> bool:
        """Shape inference already shows an output that does not follow the batch (e.g. a Concat with a batch-1
        class token): no need to ask onnxruntime."""
        outs = {o.name for o in g.output}
        at3 = _inferred_dim0(model, 3, outs)
        return any(d is not None and d != 3 for d in at3.values()) or len(at3) < len(outs) and not at3

    # shape inference loses dims after Shape->Gather->Slice arithmetic (shufflenet's channel split): such
    # "unknown" rewrites are tried only when onnxruntime can check the result, then dropped if it disagrees
    settle(unknown_ok=reference is not None)
    if hopeless():
        model.CopyFrom(original)
        return 0
    if reference is not None and not _onnxruntime_agrees(reference, model):
        before = len(plan)
        settle(unknown_ok=False)
        if len(plan) == before or hopeless() or not _onnxruntime_agrees(reference, model):
            model.CopyFrom(original)
            return 0
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if "__vizcore_batch" not in t.name or t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return len(inputs) + len(plan)


@hookimpl
def vizcore_add_prepasses() -> list[Prepass]:
    return [Prepass("constants_to_initializers", 10, constants_to_initializers),
            Prepass("fold_constants", 20, fold_constants),
            Prepass("inline_constant_if", 25, inline_constant_if),
            Prepass("symbolic_batch", 30, symbolic_batch)]
