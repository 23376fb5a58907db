"""Convert only what can be converted: cut the graph in front of the first node without a converter.

Nodes that have no converter (data-dependent If/Loop, NonMaxSuppression, an unknown custom op), and every node
that depends on one, are removed; the tensors they read from the kept part become graph outputs. The layers before
them load, list, render and check as usual; the removed ones are reported as not reachable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
from onnx import helper


def _types(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001  unknown custom ops may make inference fail: fall back to no types
        inferred = proto
    g = inferred.graph
    return {vi.name: vi for vi in [*g.value_info, *g.output, *g.input]}


def cut(proto: onnx.ModelProto, blocked: dict[int, str], names: Sequence[str]) -> list[tuple[int, str]]:
    """Remove the `blocked` nodes ({index: why}) and everything downstream of them, in place.

    Returns (index, reason) for each removed node, in graph order; `names` name the nodes for the reasons.
    """
    g = proto.graph
    nodes = list(g.node)
    dead_tensors: set[str] = set()
    removed: list[tuple[int, str]] = []
    for i, n in enumerate(nodes):
        if i in blocked:
            removed.append((i, blocked[i]))
        elif any(t in dead_tensors for t in n.input if t):
            first = next(j for j in blocked if j < i)
            removed.append((i, f"after {nodes[first].op_type} node {names[first]!r}"))
        else:
            continue
        dead_tensors.update(t for t in n.output if t)
    gone = {i for i, _ in removed}
    kept = [n for i, n in enumerate(nodes) if i not in gone]
    produced = {t for n in kept for t in n.output}
    boundary = []
    for i in sorted(gone):
        for t in nodes[i].input:
            if t in produced and t not in boundary:
                boundary.append(t)
    types = _types(proto)
    outputs = [o for o in g.output if o.name in produced]
    names_out = {o.name for o in outputs}
    for t in boundary:
        if t not in names_out:
            outputs.append(types.get(t) or helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    del g.node[:]
    g.node.extend(kept)
    new_outputs = [onnx.ValueInfoProto() for _ in outputs]
    for dst, src in zip(new_outputs, outputs):
        dst.CopyFrom(src)
    del g.output[:]
    g.output.extend(new_outputs)
    return removed


def blocked_nodes(proto: onnx.ModelProto, has_converter: Callable[[onnx.NodeProto], bool],
                  why: Callable[[onnx.NodeProto], str]) -> dict[int, str]:
    """{index: reason} of the nodes that have no converter."""
    return {i: why(n) for i, n in enumerate(proto.graph.node) if not has_converter(n)}
