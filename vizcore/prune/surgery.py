"""Apply a plan to a copy of the model: slice weights, fold constants into biases, merge copies, fix routing ops."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .evidence import Evidence
from .graph import Channels, Graph, Sink, attr, set_attr, unique
from .plan import Plan


class Surgeon:
    """Edits one copy of the model for one plan."""

    def __init__(self, model: onnx.ModelProto, ch: Channels, plan: Plan, ev: Evidence) -> None:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        self.g = Graph(m)
        self.ch, self.plan, self.ev = ch, plan, ev
        self.drop = plan.drop
        self._roots = {t: ch.uf.roots(a) for t, a in ch.atoms.items()}
        # the analysis saw the original's nodes: their copies, by first output name (unique in a valid graph)
        self._by_out = {c.output[0]: c for c in m.graph.node if c.output}

    def node(self, n: onnx.NodeProto) -> onnx.NodeProto:
        return self._by_out[n.output[0]]

    def keep(self, t: str) -> np.ndarray:
        return np.array([int(r) not in self.drop for r in self._roots[t]], dtype=bool)

    def run(self) -> onnx.ModelProto:
        for s in self.ch.sinks:
            self.sink(s)
        shuffles = []
        for e in self.ch.edits:
            if e[0] == "shuffle":
                shuffles.append(e)
            else:
                getattr(self, f"edit_{e[0]}")(*e[1:])
        for e in shuffles:
            self.edit_shuffle(*e[1:])
        m = self.g.model
        del m.graph.value_info[:]
        _drop_unused(m)
        return m

    # --- sinks: merge copies, fold constants, drop input channels ------------------------------------------
    def sink(self, s: Sink) -> None:
        keep = self.keep(s.tensor)
        if keep.all():
            return
        n = self.node(s.node)
        w = self.g.const(n.input[1]).copy()
        roots = self._roots[s.tensor]
        for b, a in self.plan.merge.items():
            f = self.plan.scale.get(b, 1.0)
            for kb, ka in zip(np.flatnonzero(roots == b), np.flatnonzero(roots == a)):
                _axis(w, s.w_axis, ka)[...] += f * _axis(w, s.w_axis, kb)
        folds = [k for k in np.flatnonzero(~keep) if int(roots[k]) in self.plan.fold | self.plan.approx]
        if folds and n.op_type in ("Conv", "Gemm"):
            self.fold(n, s, w, folds)
        self.g.set_input_const(n, 1, np.take(w, np.flatnonzero(keep), axis=s.w_axis))

    def fold(self, n: onnx.NodeProto, s: Sink, w: np.ndarray, ks: list[int]) -> None:
        """bias += W[:, k] * value for each constant input channel k (exact: no padding, checked by the plan); a
        channel removed with loss (`plan.approx`) folds its mean the same way (approximate at a zero-padded border)."""
        st = self.ev.stats[s.tensor]
        roots = self._roots[s.tensor]
        vals = np.zeros(w.shape[s.w_axis], dtype=np.float64)
        for k in ks:
            vals[k] = st.mean[k] if int(roots[k]) in self.plan.approx else st.lo[k]
        if n.op_type == "Conv":
            extra = w.astype(np.float64).reshape(w.shape[0], w.shape[1], -1).sum(-1) @ vals
            bidx, scale = 2, 1.0
        else:  # Gemm: Y = alpha * A @ B' + beta * C
            b2 = w.T if attr(n, "transB", 0) else w
            extra = vals @ b2.astype(np.float64)
            bidx = 2
            scale = float(attr(n, "alpha", 1.0)) / float(attr(n, "beta", 1.0))
        m = extra.shape[0]
        bias = self.g.const(n.input[bidx]) if len(n.input) > bidx and n.input[bidx] else None
        bias = np.zeros(m, dtype=w.dtype) if bias is None else np.broadcast_to(bias, (m,)).copy()
        self.g.set_input_const(n, bidx, (bias + scale * extra).astype(w.dtype))

    # --- producers and channel-wise parameters -------------------------------------------------------------
    def edit_out(self, node: onnx.NodeProto, axis: int, out: str) -> None:
        keep = self.keep(out)
        if keep.all():
            return
        n = self.node(node)
        idx = np.flatnonzero(keep)
        self.g.set_input_const(n, 1, np.take(self.g.const(n.input[1]), idx, axis=axis))
        if len(n.input) > 2 and n.input[2]:
            b = self.g.const(n.input[2])
            if b is not None and b.ndim >= 1 and b.shape[-1] == len(keep):
                self.g.set_input_const(n, 2, np.take(b, idx, axis=-1))

    def edit_dw(self, node: onnx.NodeProto, out: str) -> None:
        keep = self.keep(out)
        if keep.all():
            return
        self.edit_out(node, 0, out)
        set_attr(self.node(node), "group", int(keep.sum()))

    def edit_param(self, node: onnx.NodeProto, idx: int, axis: int, tensor: str) -> None:
        keep = self.keep(tensor)
        if keep.all():
            return
        n = self.node(node)
        self.g.set_input_const(n, idx, np.take(self.g.const(n.input[idx]), np.flatnonzero(keep), axis=axis))

    # --- routing ops -----------------------------------------------------------------------------------------
    def edit_split(self, node: onnx.NodeProto, x: str) -> None:
        if self.keep(x).all():
            return
        n = self.node(node)
        sizes = np.array([int(self.keep(o).sum()) for o in n.output], dtype=np.int64)
        opset = _opset(self.g.model)
        if opset >= 13:
            for i, a in enumerate(n.attribute):
                if a.name == "num_outputs":
                    del n.attribute[i]
                    break
            self.g.set_input_const(n, 1, sizes)
        else:
            set_attr(n, "split", [int(s) for s in sizes])

    def edit_slice(self, node: onnx.NodeProto, x: str, k: int) -> None:
        keep = self.keep(x)
        if keep.all():
            return
        n = self.node(node)
        starts, ends = self.g.const(n.input[1]).copy(), self.g.const(n.input[2]).copy()
        s, e, _ = slice(int(starts[k]), int(ends[k])).indices(len(keep))
        starts[k] = int(keep[:s].sum())
        ends[k] = starts[k] + int(keep[s:e].sum())
        self.g.set_input_const(n, 1, starts)
        self.g.set_input_const(n, 2, ends)

    def edit_gather(self, node: onnx.NodeProto, x: str) -> None:
        keep = self.keep(x)
        if keep.all():
            return
        n = self.node(node)
        idx = np.asarray(self.g.const(n.input[1])) % len(keep)
        newpos = np.cumsum(keep) - 1
        self.g.set_input_const(n, 1, newpos[idx[keep[idx]]].astype(np.int64))

    def edit_reshape(self, node: onnx.NodeProto, out: str) -> None:
        if self.keep(out).all():
            return
        n = self.node(node)
        shape = self.g.const(n.input[1]).copy()
        shape[1] = int(self.keep(out).sum())
        self.g.set_input_const(n, 1, shape)

    def edit_sizes(self, node: onnx.NodeProto, idx: int, out: str) -> None:
        if self.keep(out).all():
            return
        n = self.node(node)
        sizes = self.g.const(n.input[idx]).copy()
        sizes[1] = int(self.keep(out).sum())
        self.g.set_input_const(n, idx, sizes)

    def edit_shuffle(self, nodes: tuple, x: str, order: np.ndarray) -> None:
        """A channel shuffle over pruned channels is no longer a reshape: it becomes one Gather on axis 1."""
        keep = self.keep(x)
        if keep.all():
            return
        first, tr, back = (self.node(n) for n in nodes)
        newpos = np.cumsum(keep) - 1
        idx = newpos[order[keep[order]]].astype(np.int64)
        name = f"{back.output[0]}_shuffle_indices"
        self.g.model.graph.initializer.append(onnx.numpy_helper.from_array(idx, name))
        gather = helper.make_node("Gather", [first.input[0], name], [back.output[0]], axis=1,
                                  name=f"{back.name or 'shuffle'}_gather")
        nodes_list = self.g.model.graph.node
        pos = list(nodes_list).index(first)
        for n in (back, tr, first):
            nodes_list.remove(n)
        nodes_list.insert(pos, gather)
        self.g.refresh()


def _axis(w: np.ndarray, axis: int, k: int) -> np.ndarray:
    return w[(slice(None),) * axis + (k,)]


def _opset(m: onnx.ModelProto) -> int:
    return next((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)


def _drop_unused(m: onnx.ModelProto) -> None:
    """Initializers, Constant and Identity nodes that nothing reads any more (weights replaced by pruned copies);
    a name an If/Loop body reads from the outer graph counts as read (`_used`)."""
    outs = {o.name for o in m.graph.output}
    while True:
        used = _used(m.graph) | outs
        dead = [n for n in m.graph.node if n.op_type in ("Constant", "Identity") and not set(n.output) & used]
        if not dead:
            break
        for n in dead:
            m.graph.node.remove(n)
    used = _used(m.graph) | outs
    dropped = {t.name for t in m.graph.initializer if t.name not in used}
    if not dropped:
        return
    keep = [t for t in m.graph.initializer if t.name not in dropped]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    inputs = [i for i in m.graph.input if i.name not in dropped]
    if len(inputs) != len(m.graph.input):
        del m.graph.input[:]
        m.graph.input.extend(inputs)


def _used(graph: onnx.GraphProto) -> set[str]:
    """Every name a node reads, in this graph and in its subgraphs (If/Loop bodies read outer names)."""
    used = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used |= _used(sub)
    return used


def drop_dead_nodes(m: onnx.ModelProto) -> int:
    """Remove nodes whose outputs nothing reads (not a graph output, not read by any node); how many went."""
    outs = {o.name for o in m.graph.output}
    gone = 0
    while True:
        used = _used(m.graph) | outs
        dead = [n for n in m.graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            m.graph.node.remove(n)
        gone += len(dead)
    _drop_unused(m)
    return gone


def bypass(model: onnx.ModelProto, target: str, source: str, offset: np.ndarray | None = None
           ) -> onnx.ModelProto | None:
    """A copy where every reader of tensor `target` reads `source` instead (a residual branch dropped: the Add's output
    becomes its other operand; a shape-preserving run becomes identity), or `source + offset` (per channel, axis 1),
    without the nodes that nothing reads any more. None when `target` or `source` is no longer computed (an earlier
    bypass removed it) or the offset no longer fits its channels."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    made = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
    if target not in made or source not in made or target == source:
        return None
    if offset is not None:
        source = _offset(m, target, source, offset)
        if source is None:
            return None
    if target in {o.name for o in m.graph.output}:  # the graph's interface stays: target = Identity(source)
        for i, n in enumerate(m.graph.node):
            if target in n.output:
                m.graph.node.insert(i, helper.make_node("Identity", [source], [target], name=f"{target}_bypass"))
                n.output[list(n.output).index(target)] = f"{target}_bypassed"
                break
    else:
        for n in m.graph.node:
            for k, i in enumerate(n.input):
                if i == target:
                    n.input[k] = source
    del m.graph.value_info[:]
    drop_dead_nodes(m)
    return m


def _offset(m: onnx.ModelProto, target: str, source: str, offset: np.ndarray) -> str | None:
    """Insert `source + offset` (shaped (1, C, 1, ...) like the tensor) after the producer of `source`; its name."""
    g = Graph(m)
    name, out = unique(f"{target}_bypass_mean", g), unique(f"{target}_bypass", g)
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(offset, np.float32), name))
    at = next((i + 1 for i, n in enumerate(m.graph.node) if source in n.output), 0)
    m.graph.node.insert(at, helper.make_node("Add", [source, name], [out], name=out))
    return out


def apply(model: onnx.ModelProto, ch: Channels, plan: Plan, ev: Evidence) -> onnx.ModelProto:
    """A pruned copy of `model` (the original is not changed)."""
    return Surgeon(model, ch, plan, ev).run()
