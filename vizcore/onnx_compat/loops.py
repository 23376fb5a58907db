"""Pre-pass 26, `unroll_constant_loops`: an ONNX `Loop` whose iteration count is known before it runs -> copies of
its body, one per iteration, so that every layer inside it converts and shows up as a layer.

The count is known when the trip count M and the condition input are constants (initializers, Constants, or
arithmetic on static shapes such as `Shape(x)[1] - 1`), and the body's condition output is constant in every
iteration (a Constant true, the condition input passed on, or arithmetic on the iteration number and on carried
values that are themselves constants). Caps: at most MAX_ITERATIONS iterations per Loop and MAX_NODES nodes added
over the whole model. A Loop that is not unrolled stays, with the reason in its `vizcore.unroll` metadata entry; the
loader cuts the graph in front of it (onnx_compat.partial) and `inspect` lists it with that reason.

Per iteration k the body's nodes and tensors are renamed `<loop name>[k]/<name>` (inside nested subgraphs too),
the iteration number becomes a constant, loop-carried values flow from copy k to copy k+1, scan outputs are stacked
along a new axis 0 (Unsqueeze + Concat, as ONNX specifies) and the last copy's carried values are the Loop's
outputs. After each unroll, constants are folded again and constant Ifs inlined (an `If i == 0` in the body), and
what the unroll left unused (the copies' condition outputs, the trip count's shape arithmetic) is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..hookspecs import hookimpl
from . import Prepass
from .prepasses import _NO_FOLD, _evaluate, _skeleton, fold_constants, inline_constant_if

MAX_ITERATIONS = 64  # per Loop
MAX_NODES = 4096  # nodes all unrolled copies may add to one model
MAX_ELEMENTS = 4096  # the largest tensor evaluated while working out conditions and trip counts
REASON_KEY = "vizcore.unroll"


class Refused(Exception):  # noqa: N818 - a reason, not an error
    """Why a Loop is not unrolled."""


# -- constant values ------------------------------------------------------------------------------------------------
class Values:
    """Lazily worked-out constant values of tensors in one scope: `get(name)` is an array, or None if not constant.

    `known` are values given up front (the iteration number, carried constants); `tensors` the scope's initializers
    (read when asked; those over MAX_ELEMENTS count as not constant); `producers` the nodes of the scope; `shapes`
    static dims by shape inference (a Shape node of a tensor whose dims are known is a constant); names of
    an enclosing scope are asked of `outer`.
    """

    def __init__(self, known: dict[str, np.ndarray], tensors: dict[str, onnx.TensorProto],
                 producers: dict[str, onnx.NodeProto], opsets: list[onnx.OperatorSetIdProto],
                 outer: Values | None = None, shapes: Callable[[], dict[str, list[int | None]]] | None = None) -> None:
        self.known, self.tensors, self.producers = dict(known), tensors, producers
        self.opsets, self.outer, self.shapes = opsets, outer, shapes
        self._busy: set[str] = set()

    def get(self, name: str) -> np.ndarray | None:
        if name in self.known:
            return self.known[name]
        if name in self.tensors:
            t = self.tensors[name]
            value = numpy_helper.to_array(t) if int(np.prod(t.dims)) <= MAX_ELEMENTS else None
            self.known[name] = value
            return value
        if name not in self.producers:
            return self.outer.get(name) if self.outer is not None else None
        if name in self._busy:
            return None
        self._busy.add(name)
        try:
            value = self._compute(self.producers[name], name)
        finally:
            self._busy.discard(name)
        self.known[name] = value
        return value

    def _compute(self, node: onnx.NodeProto, name: str) -> np.ndarray | None:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD - {"Constant"}:
            return None
        if node.op_type == "Shape":
            return self._shape(node)
        if node.op_type == "Gather" and node.input[0] in self.producers and \
                self.producers[node.input[0]].op_type == "Shape":
            return self._shape_element(node)
        inputs = [self.get(i) if i else None for i in node.input]
        if any(v is None for i, v in zip(node.input, inputs) if i) or \
                sum(v.size for v in inputs if v is not None) > MAX_ELEMENTS:
            return None
        tensors = [numpy_helper.from_array(np.asarray(v), i) for i, v in zip(node.input, inputs) if i]
        try:
            outs = _evaluate(node, tensors, self.opsets, _reference())
        except Exception:  # noqa: BLE001 - not evaluable here: not a constant for this pass
            return None
        named = dict(zip([o for o in node.output if o], outs))
        value = named.get(name)
        return None if value is None or np.asarray(value).size > MAX_ELEMENTS else np.asarray(value)

    def _dims(self, node: onnx.NodeProto) -> list[int | None] | None:
        dims = (self.shapes() if self.shapes is not None else {}).get(node.input[0])
        if dims is None:
            return None
        start = next((a.i for a in node.attribute if a.name == "start"), 0)
        end = next((a.i for a in node.attribute if a.name == "end"), len(dims))
        return dims[slice(start, end)]

    def _shape(self, node: onnx.NodeProto) -> np.ndarray | None:
        dims = self._dims(node)
        return None if dims is None or None in dims else np.asarray(dims, dtype=np.int64)

    def _shape_element(self, node: onnx.NodeProto) -> np.ndarray | None:
        """Gather(Shape(x), k) where dim k of x is static even though other dims (the batch) are not."""
        dims = self._dims(self.producers[node.input[0]])
        index = self.get(node.input[1])
        if dims is None or index is None or not np.issubdtype(index.dtype, np.integer):
            return None
        try:
            picked = np.asarray(dims, dtype=object)[index]
        except IndexError:
            return None
        flat = np.asarray(picked).reshape(-1)
        return None if any(d is None for d in flat) else np.asarray(picked, dtype=np.int64)


def _reference() -> type:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Dims of the main graph's tensors by shape inference (None where symbolic or unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model, None))
    except Exception:  # noqa: BLE001 - no shapes: fewer trip counts are known
        return {}
    g = inferred.graph
    found = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            found[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return found


# -- how many iterations ---------------------------------------------------------------------------------------------
def _body(node: onnx.NodeProto) -> onnx.GraphProto:
    """The Loop's body, or Refused when the node is not a well-formed Loop (the file is untrusted)."""
    body = next((a.g for a in node.attribute if a.name == "body" and a.type == onnx.AttributeProto.GRAPH), None)
    if body is None:
        raise Refused("the Loop has no body graph")
    carried = len(node.input) - 2
    if carried < 0 or len(body.input) != carried + 2 or len(body.output) < carried + 1 or \
            len(node.output) > len(body.output) - 1:
        raise Refused("the Loop's inputs and outputs do not match its body's")
    return body


def _scalar(value: np.ndarray | None, what: str) -> np.ndarray:
    if value is None:
        raise Refused(f"{what} depends on the data")
    value = np.asarray(value)
    if value.size != 1 or not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        raise Refused(f"{what} is not a scalar integer or boolean")
    return value.reshape(-1)[0]


def _scalar_bool(value: np.ndarray | None, what: str) -> bool:
    return bool(_scalar(value, what))


def _copy_values(body: onnx.GraphProto, outer: Values, k: int, carried: list[np.ndarray | None],
                 opsets: list[onnx.OperatorSetIdProto]) -> Values:
    """The constant values inside iteration k, given the constant carried values (None: not constant)."""
    names = [vi.name for vi in body.input]
    known = {names[0]: np.asarray(k, dtype=np.int64)}
    known[names[1]] = np.asarray(True)
    known.update({n: v for n, v in zip(names[2:], carried) if v is not None})
    producers = {o: n for n in body.node for o in n.output if o}
    return Values(known, {t.name: t for t in body.initializer}, producers, opsets, outer)


def trip_count(node: onnx.NodeProto, values: Values, opsets: list[onnx.OperatorSetIdProto]) -> int:
    """How many times the Loop's body runs, or Refused with the reason."""
    body = _body(node)
    m_name = node.input[0] if node.input else ""
    limit = None
    if m_name:
        limit = int(_scalar(values.get(m_name), "the trip count"))
    cond = _scalar_bool(values.get(node.input[1]), "the condition") if len(node.input) > 1 and node.input[1] else True
    if limit is None and cond:
        # no trip count: only a condition that becomes false ends it, worked out iteration by iteration below
        limit = 1 << 62
    carried = [values.get(n) if n else None for n in node.input[2:]]
    trips = 0
    while cond and trips < limit:
        if trips == MAX_ITERATIONS:
            raise Refused(f"more than {MAX_ITERATIONS} iterations" + (f" ({limit})" if limit < 1 << 62 else ""))
        inside = _copy_values(body, values, trips, carried, opsets)
        cond = _scalar_bool(inside.get(body.output[0].name), "the body's condition output")
        carried = [inside.get(o.name) for o in body.output[1:1 + len(carried)]]
        trips += 1
    return trips


# -- unrolling -------------------------------------------------------------------------------------------------------
def _graphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _defined(graph: onnx.GraphProto, nested: bool) -> set[str]:
    """Names a graph defines (node outputs; with `nested`, also the inputs and initializers of its subgraphs)."""
    names = {o for n in graph.node for o in n.output if o}
    for n in graph.node:
        for sub in _graphs(n):
            names |= {vi.name for vi in sub.input} | {t.name for t in sub.initializer} | _defined(sub, True)
    if nested:
        names |= {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    return names


def _used(graph: onnx.GraphProto) -> set[str]:
    """Names read anywhere in a graph: node inputs (in subgraphs too) and graph outputs."""
    names = {o.name for o in graph.output}
    for n in graph.node:
        names.update(i for i in n.input if i)
        for sub in _graphs(n):
            names |= _used(sub)
    return names


def node_count(graph: onnx.GraphProto) -> int:
    return sum(1 + sum(node_count(s) for s in _graphs(n)) for n in graph.node)


def _rename_graph(graph: onnx.GraphProto, rename: dict[str, str]) -> None:
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        vi.name = rename.get(vi.name, vi.name)
    for t in graph.initializer:
        t.name = rename.get(t.name, t.name)
    for n in graph.node:
        _rename_node(n, rename)


def _rename_node(n: onnx.NodeProto, rename: dict[str, str]) -> None:
    n.input[:] = [rename.get(i, i) if i else i for i in n.input]
    n.output[:] = [rename.get(o, o) if o else o for o in n.output]
    for sub in _graphs(n):
        _rename_graph(sub, rename)


def _constant(g: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    g.initializer.append(numpy_helper.from_array(value, name))
    return name


def _unsqueeze(name: str, out: str, axes: str | None, label: str) -> onnx.NodeProto:
    if axes is None:  # opset < 13: axes is an attribute
        return helper.make_node("Unsqueeze", [name], [out], axes=[0], name=label)
    return helper.make_node("Unsqueeze", [name, axes], [out], name=label)


def unroll(model: onnx.ModelProto, node: onnx.NodeProto, trips: int, tag: str) -> list[onnx.NodeProto]:
    """The nodes that replace `node`: `trips` renamed copies of its body, scan outputs stacked, outputs named."""
    g, body = model.graph, _body(node)
    carried_in = [vi.name for vi in body.input[2:]]
    n_carried = len(carried_in)
    carried_out = [o.name for o in body.output[1:1 + n_carried]]
    scan_out = [o.name for o in body.output[1 + n_carried:]]
    finals, scans = list(node.output[:n_carried]), list(node.output[n_carried:])
    if trips == 0 and any(scans):
        raise Refused("no iterations: the scan outputs would have no shape")
    used = _used(body)
    shared = {t.name: _constant(g, f"{tag}/{t.name}", numpy_helper.to_array(t))
              for t in body.initializer if t.name in used}
    if body.input[1].name in used:
        shared[body.input[1].name] = _constant(g, f"{tag}/cond", np.asarray(True))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    axes = _constant(g, f"{tag}/axes0", np.asarray([0], dtype=np.int64)) if scans and opset >= 13 else None
    defined, produced = _defined(body, False), {o for n in body.node for o in n.output if o}
    current = [i for i in node.input[2:]]
    stacked: list[list[str]] = [[] for _ in scans]
    nodes: list[onnx.NodeProto] = []
    for k in range(trips):
        rename = {**{d: f"{tag}[{k}]/{d}" for d in defined}, **shared, **dict(zip(carried_in, current))}
        if body.input[0].name in used:
            rename[body.input[0].name] = _constant(g, f"{tag}[{k}]/iteration", np.asarray(k, dtype=np.int64))
        claimed = set()
        if k == trips - 1:  # the last copy makes the Loop's outputs under their own names where it can
            for b, out in zip(carried_out, finals):
                if out and b in produced and b not in claimed:
                    rename[b] = out
                    claimed.add(b)
        for n in body.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = f"{tag}[{k}]/{(n.name or n.op_type).lstrip('/')}"
            _rename_node(c, rename)
            nodes.append(c)
        current = [rename.get(b, b) for b in carried_out]
        for j, (s, out) in enumerate(zip(scan_out, scans)):
            if out:
                stacked[j].append(f"{tag}[{k}]/scan{j}")
                nodes.append(_unsqueeze(rename.get(s, s), stacked[j][-1], axes, f"{tag}[{k}]/stack{j}"))
    made = {o for n in nodes for o in n.output}
    for value, out in zip(current, finals):
        if out and out not in made:
            nodes.append(helper.make_node("Identity", [value], [out], name=f"{tag}/{out}"))
    for parts, out in zip(stacked, scans):
        if out:
            nodes.append(helper.make_node("Concat", parts, [out], axis=0, name=f"{tag}/{out}"))
    return nodes


# -- the pre-pass ----------------------------------------------------------------------------------------------------
def _mark(node: onnx.NodeProto, reason: str) -> None:
    """Record why the Loop stays (an empty reason: just remove an old one)."""
    keep = [p for p in node.metadata_props if p.key != REASON_KEY]
    del node.metadata_props[:]
    node.metadata_props.extend(keep)
    if reason:
        entry = node.metadata_props.add()
        entry.key, entry.value = REASON_KEY, reason


def refusal(node: onnx.NodeProto) -> str | None:
    """Why the pre-pass left this Loop in place (None: it did not look at it)."""
    return next((p.value[:300] for p in node.metadata_props if p.key == REASON_KEY), None)


def _unique_tag(model: onnx.ModelProto, node: onnx.NodeProto, base: str) -> str:
    others = [n for n in model.graph.node if n is not node]
    taken = {n.name for n in others} | {o for n in others for o in n.output} | {vi.name for vi in model.graph.input}
    taken |= {t.name for t in model.graph.initializer}
    tag, k = base, 1
    while any(t == tag or t.startswith((tag + "/", tag + "[")) for t in taken):
        tag, k = f"{base}~{k}", k + 1
    return tag


def _main_values(model: onnx.ModelProto) -> Values:
    g = model.graph
    producers = {o: n for n in g.node for o in n.output if o}
    cache: list[dict[str, list[int | None]]] = []

    def shapes() -> dict[str, list[int | None]]:
        if not cache:
            cache.append(_static_shapes(model))
        return cache[0]

    fed = {vi.name for vi in g.input}  # an initializer that is also an input is only a default: not a constant
    tensors = {t.name: t for t in g.initializer if t.name not in fed}
    return Values({}, tensors, producers, list(model.opset_import), shapes=shapes)


def _unroll_one(model: onnx.ModelProto, budget: list[int]) -> set[str] | None:
    """Unroll the first Loop that can be, marking the others with their reason. Returns the names the unroll made
    or freed (see _prune), or None when no Loop could be unrolled. `budget` holds the nodes still allowed."""
    g = model.graph
    values = _main_values(model)
    for at, node in enumerate(g.node):
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
            continue
        try:
            trips = trip_count(node, values, list(model.opset_import))
            cost = trips * node_count(_body(node))
            if cost > budget[0]:
                raise Refused(f"{trips} iterations would add {cost} nodes (budget left {budget[0]} of {MAX_NODES})")
            spliced = unroll(model, node, trips, _unique_tag(model, node, node.name or f"Loop_{at}"))
        except Refused as why:
            _mark(node, str(why))
            continue
        budget[0] -= cost
        nodes = list(g.node)
        del g.node[:]
        g.node.extend(nodes[:at] + spliced + nodes[at + 1:])
        made = {n.name for n in spliced} | {o for n in spliced for o in n.output}
        return made | {i for i in node.input if i} | (_used(_body(node)) - _defined(_body(node), True))
    return None


def _prune(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Drop what unrolling left unused: nodes named in `candidates` or making only candidates (the copies' condition
    outputs, the trip count's arithmetic) whose outputs nobody reads, and unread initializers among `candidates`
    (the Loops' former inputs, the copies' constants)."""
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = _used(g) | outputs
        dead = [n for n in g.node if (n.name in candidates or all(o in candidates for o in n.output))
                and not any(o in used for o in n.output if o)]
        if not dead:
            break
        candidates = candidates | {i for n in dead for i in n.input if i}  # a trip count's Shape arithmetic
        gone = {id(n) for n in dead}
        keep = [n for n in g.node if id(n) not in gone]
        del g.node[:]
        g.node.extend(keep)
    used = _used(g) | outputs | {vi.name for vi in g.input}
    keep_t = [t for t in g.initializer if t.name in used or t.name not in candidates]
    del g.initializer[:]
    g.initializer.extend(keep_t)


def unroll_constant_loops(model: onnx.ModelProto) -> int:
    """Replace each `Loop` whose iteration count is known by copies of its body; returns how many were unrolled."""
    if not any(n.op_type == "Loop" for n in model.graph.node):
        return 0
    for node in model.graph.node:  # reasons come from this run only, never from the file
        if node.op_type == "Loop":
            _mark(node, "")
    budget, changes, candidates = [MAX_NODES], 0, set()
    while (made := _unroll_one(model, budget)) is not None:
        changes += 1
        candidates |= made
        fold_constants(model)  # arithmetic on the iteration number, then Ifs on it
        inline_constant_if(model)
    if changes:
        _prune(model, candidates)
    return changes


@hookimpl
def vizcore_add_prepasses() -> list[Prepass]:
    return [Prepass("unroll_constant_loops", 26, unroll_constant_loops)]
