"""ONNX graph -> torch fx module: the cut in front of nodes without a converter, the conversion itself (one-line
errors naming the failing node) and the layer names shown to users. The loader (`vizcore.loading`) drives it."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import onnx
from torch import fx

from . import graph_inputs, proto_check
from .errors import ModelLoadError, UnsupportedOpError, oneline
from .model import VISUAL_OPS
from .onnx_compat import Converter, loops, partial, registry
from .text import printable

#: Why some ops have no converter, for the one-line error (the hint always says how to add one).
_WHY = {
    "If": "data-dependent control flow", "Loop": "data-dependent control flow", "Scan": "a loop over a subgraph",
    "RNN": "recurrent layer",
}
CONVERTER_HINT = ("add a converter in a plugin (hook vizcore_add_onnx_converters, see vizcore/hookspecs.py), "
                  "or re-export the model without this op")


def _why(node: onnx.NodeProto, proto: onnx.ModelProto | None = None) -> str:
    """' (what kind of op it is)' for ops known to lack a converter; for a Loop, why it was not unrolled; for an If
    whose condition comes from a non-float graph input (a sample rate), which input to give."""
    refused = loops.refusal(node) if node.op_type == "Loop" else None
    if refused:
        return f" (control flow not unrolled: {printable(refused)})"
    control = graph_inputs.control_inputs(proto, node) if proto is not None and node.op_type == "If" else []
    if control:
        given = ", ".join(f"--feed {printable(c)}=VALUE" for c in control)
        return f" (control flow decided by input {printable(control[0])!r}: give its value, {given}, to specialise " \
               "the graph on it)"
    return f" ({_WHY[node.op_type]})" if node.op_type in _WHY else ""


def _op_label(node: onnx.NodeProto, opsets: dict[str, int]) -> str:
    dom = node.domain if node.domain not in ("", "ai.onnx") else ""
    opset = opsets.get(dom, 0)
    version = registry.since_version(node.op_type, opset, dom)
    where = f"{dom or 'ai.onnx'}::{node.op_type}"
    return f"{where}@{version} (opset {opset})" if version is not None else f"{where} (opset {opset})"


def _check_supported(proto: onnx.ModelProto, names: Sequence[str] | None = None) -> None:
    opsets = {o.domain if o.domain != "ai.onnx" else "": int(o.version) for o in proto.opset_import}
    missing = []
    for i, node in enumerate(proto.graph.node):
        dom = node.domain if node.domain != "ai.onnx" else ""
        if registry.find(node.op_type, opsets.get(dom, 0), dom) is None:
            missing.append((i, node))
    if missing:
        i, n = missing[0]
        others = sorted({m.op_type for _, m in missing[1:]} - {n.op_type})
        more = f"; also unsupported: {', '.join(others)}" if others else ""
        name = names[i] if names is not None else (n.name or "(unnamed)")
        why = _why(n, proto)
        raise UnsupportedOpError(f"no converter for {_op_label(n, opsets)}{why} in node {name!r}{more}",
                                 "give that input's value with --feed" if "--feed" in why else CONVERTER_HINT)


def _failing_node(proto: onnx.ModelProto, names: Sequence[str]) -> tuple[str, str, BaseException] | None:
    """Re-run the converters node by node to find the one that raised (only on the error path)."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    try:
        graph = OnnxGraph(safe_shape_inference(proto).graph)
    except Exception:
        return None
    opsets = {o.domain if o.domain != "ai.onnx" else "": int(o.version) for o in proto.opset_import}
    for i, node in enumerate(graph.nodes.values()):
        try:
            get_converter(domain=node.domain, operation_type=node.operation_type,
                          version=opsets.get(node.domain, 0))(node, graph)
        except Exception as exc:
            return names[i] if i < len(names) else node.name, _op_label(node.proto, opsets), exc
    return None


def convert(proto: onnx.ModelProto, names: Sequence[str] | None, converters: Sequence[Converter]) -> fx.GraphModule:
    """`proto` as a torch fx module in eval mode, weights frozen, with `converters` installed for this call only;
    a node that fails to convert is named in the one-line error (`names`: the layer names shown to users)."""
    with registry.installed(converters):  # onnx2torch's table is restored afterwards
        return _convert_installed(proto, names)


def _convert_installed(proto: onnx.ModelProto, names: Sequence[str] | None) -> fx.GraphModule:
    from onnx2torch import convert

    _check_supported(proto, names)
    for node in proto.graph.node:  # custom domains: no dots in torch module names (see registry.safe_domain)
        if node.domain not in ("", "ai.onnx"):
            node.domain = registry.safe_domain(node.domain)
    for o in proto.opset_import:
        if o.domain not in ("", "ai.onnx"):
            o.domain = registry.safe_domain(o.domain)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = convert(proto)
    except Exception as exc:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            failing = _failing_node(proto, names or [n.name for n in proto.graph.node])
        if failing is not None:
            name, label, cause = failing
            raise UnsupportedOpError(f"cannot convert {label} in node {name!r}: {oneline(cause)}",
                                     CONVERTER_HINT) from exc
        raise ModelLoadError(f"conversion to torch failed: {oneline(exc, 300)}",
                             "run with --debug for the traceback; a converter plugin may be needed") from exc
    gm.eval()
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm


def _scope_name(node: onnx.NodeProto, inits: set[str]) -> str | None:
    """`module.path/OpType` for dynamo exports: from the weight's state-dict name (`conv1.weight`: exact even when
    BatchNorm was fused into the Conv), else from the `pkg.torch.onnx.name_scopes` metadata."""
    if len(node.input) > 1 and node.input[1] in inits and node.input[1].endswith(".weight"):
        return f"{node.input[1][:-len('.weight')]}/{node.op_type}"
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            scopes = proto_check.name_scopes(p.value)  # bounded; anything but a list of strings is ignored
            if scopes is None:
                return None
            path = [s for s in scopes[:-1] if s]
            return f"{path[-1]}/{node.op_type}" if path else None
    return None


def display_names(nodes: Sequence[onnx.NodeProto], inits: set[str] = frozenset()) -> list[str]:
    """Unique, readable layer names: the node's name, or its torch module path for dynamo exports."""
    dynamo = any(p.key == "pkg.torch.onnx.name_scopes" for n in nodes[:50] for p in n.metadata_props)
    scoped = [_scope_name(n, inits) if dynamo else None for n in nodes]
    use_scopes = dynamo
    seen: dict[str, int] = {}
    names = []
    for i, n in enumerate(nodes):
        base = (scoped[i] if use_scopes and scoped[i] else None) or n.name or f"{n.op_type}_{i}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        names.append(base if k == 0 else f"{base}#{k}")
    return names


def cut_unconvertible(proto: onnx.ModelProto, names: list[str],
                      converters: Sequence[Converter]) -> tuple[list[tuple[str, str, str]], bytes | None]:
    """Cut the graph in front of nodes without a converter, if layers worth visualizing remain before them.

    Returns the removed nodes (display name, op type, why) and the cut graph's bytes for onnxruntime (None if
    nothing was cut). Raises UnsupportedOpError (as the conversion would) when nothing visual would be left.
    """
    opsets = {o.domain if o.domain != "ai.onnx" else "": int(o.version) for o in proto.opset_import}

    def ok(n: onnx.NodeProto) -> bool:
        dom = n.domain if n.domain != "ai.onnx" else ""
        return registry.find(n.op_type, opsets.get(dom, 0), dom) is not None

    def why(n: onnx.NodeProto) -> str:
        return f"no converter for {_op_label(n, opsets)}{_why(n, proto)}"

    with registry.installed(converters):
        blocked = partial.blocked_nodes(proto, ok, why)
    if not blocked:
        return [], None
    trial = onnx.ModelProto()
    trial.CopyFrom(proto)
    nodes = list(proto.graph.node)
    removed = partial.cut(trial, blocked, names)
    gone = {i for i, _ in removed}
    visual = [n for i, n in enumerate(nodes) if i not in gone and n.op_type in VISUAL_OPS]
    if not visual or not trial.graph.output:
        _check_supported(proto, names)  # raises with the usual one-line message
    proto.CopyFrom(trial)
    shown = list(names)
    for i in sorted(gone, reverse=True):
        del names[i]
    return [(shown[i], nodes[i].op_type, reason) for i, reason in removed], trial.SerializeToString()


def outputs_one_to_one(gm: fx.GraphModule, proto: onnx.ModelProto) -> None:
    """Graph outputs of a multi-output node (LSTM Y, Y_h, Y_c) -> one module output each, in the graph's order.

    onnx2torch returns such a node's whole tuple once; this rewires the output node to index it per output.
    """
    producer: dict[str, tuple[int, int, int]] = {}
    for i, n in enumerate(proto.graph.node):
        for k, t in enumerate(n.output):
            if t:
                producer[t] = (i, k, len(n.output))
    want = [producer.get(o.name) for o in proto.graph.output]
    if not any(w is not None and w[2] > 1 for w in want) or any(w is None for w in want):
        return
    by_target = {n.target.rsplit("/", 1)[-1]: n for n in gm.graph.nodes if n.op == "call_module"}
    out = next(n for n in gm.graph.nodes if n.op == "output")
    values = []
    with gm.graph.inserting_before(out):
        for i, k, count in want:
            node = by_target.get(f"n{i}")
            if node is None:
                return
            values.append(gm.graph.call_function(operator.getitem, (node, k)) if count > 1 else node)
    out.args = (values[0] if len(values) == 1 else tuple(values),)
    gm.graph.eliminate_dead_code()
    gm.recompile()
