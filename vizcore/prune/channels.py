"""Channel dependencies through the graph: one rule per op (see graph.py for the model).

`analyze(graph, shapes)` walks the nodes in order and gives every tensor with a channel axis its atoms; an op
without a rule freezes the channels that reach it and is named in `Channels.unknown_ops`.
"""

from __future__ import annotations

import numpy as np
import onnx

from .graph import Channels, Graph, Sink, attr

UNARY = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu",
         "Softplus", "Softsign", "Gelu", "Erf", "Identity", "Dropout", "Cast", "Neg", "Abs", "Exp", "Log", "Sqrt",
         "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Mish", "ThresholdedRelu", "Sin", "Cos", "IsNaN", "IsInf",
         "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu"}
NORM = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1", "ReduceProd",
          "ReduceLogSumExp", "ReduceSumSquare"}
#: ops that only read the shape / nothing of channel values, and produce no channel tensor
SHAPE_ONLY = {"Shape", "Size"}

Shapes = dict[str, tuple[tuple[int, ...], str]]  # tensor -> (shape, numpy dtype kind)


class Analyzer:
    """Walk the graph once, applying the rule of each op."""

    def __init__(self, graph: Graph, shapes: Shapes, values: dict | None = None) -> None:
        from .graph import UnionFind

        self.g, self.shapes, self.values = graph, shapes, values or {}
        self.ch = Channels(uf=UnionFind())
        self.skip: set[str] = set()  # nodes already handled by a pattern (channel shuffle)

    # --- helpers ---------------------------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray | None:
        """A constant, else the value a small integer tensor had on the probe run (read-only uses: no edit)."""
        v = self.g.const(name)
        return v if v is not None else self.values.get(name)

    def has_ch(self, t: str) -> bool:
        s = self.shapes.get(t)
        return s is not None and len(s[0]) >= 2 and s[1] == "f" and not self.g.is_const(t)

    def C(self, t: str) -> int:
        return int(self.shapes[t][0][1])

    def rank(self, t: str) -> int:
        return len(self.shapes[t][0])

    def give(self, t: str, atoms: np.ndarray) -> None:
        self.ch.atoms[t] = np.asarray(atoms, dtype=np.int64)

    def fresh_out(self, node: onnx.NodeProto, reason: str | None = None) -> None:
        for o in node.output:
            if o and self.has_ch(o):
                a = self.ch.fresh(self.C(o))
                self.give(o, a)
                if reason:
                    self.ch.freeze(a, reason)

    def unknown(self, node: onnx.NodeProto, why: str = "") -> None:
        label = f"{node.op_type} {node.name}".strip()
        reason = f"{label}: {why}" if why else f"{label} is not understood by the pruner"
        self.ch.unknown_ops[label] = self.ch.unknown_ops.get(label, 0) + 1
        for i in node.input:
            if i in self.ch.atoms:
                self.ch.freeze(self.ch.atoms[i], reason)
        self.fresh_out(node, reason)

    def passthrough(self, node: onnx.NodeProto, src: str) -> None:
        for o in node.output[:1]:
            if o and self.has_ch(o):
                if self.C(o) != len(self.ch.atoms[src]):
                    return self.unknown(node, "changes the channel count")
                self.give(o, self.ch.atoms[src])
        for o in node.output[1:]:
            if o and o in self.g.consumers:
                return self.unknown(node, "a second output is used")

    # --- the walk --------------------------------------------------------------------------------------------
    def run(self) -> Channels:
        for name in self.g.inputs:
            if self.has_ch(name):
                self.give(name, self.ch.fresh(self.C(name)))
                self.ch.freeze(self.ch.atoms[name], "model input")
        for node in self.g.model.graph.node:
            if node.output and node.output[0] in self.skip:
                continue
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                self.unknown(node, "control flow (subgraph)")
                continue
            ins = [i for i in node.input if i in self.ch.atoms]
            if not ins and node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                self.fresh_out(node, f"{node.op_type} {node.name} makes channels from no channel input")
                continue
            rule = getattr(self, f"op_{node.op_type}", None)
            if rule is not None:
                rule(node)
            elif node.op_type in UNARY:
                self.passthrough(node, node.input[0]) if node.input[0] in self.ch.atoms else self.unknown(node)
                self.gate(node)
            elif node.op_type in BINARY:
                self.binary(node)
            elif node.op_type in NORM:
                self.norm(node)
            elif node.op_type in REDUCE:
                self.reduce(node)
            elif node.op_type in SHAPE_ONLY:
                self.shape_op(node)
            else:
                self.unknown(node)
        for o in self.g.outputs:
            if o in self.ch.atoms:
                self.ch.freeze(self.ch.atoms[o], "model output")
        return self.ch

    def gate(self, node: onnx.NodeProto) -> None:
        """Record ReLU-like gates (output exactly 0 at or below a threshold) for the margin test."""
        thr = None
        if node.op_type == "Relu":
            thr = 0.0
        elif node.op_type == "HardSwish":
            thr = -3.0
        elif node.op_type == "Clip":
            lo = attr(node, "min")
            if lo is None and len(node.input) > 1 and node.input[1]:
                v = self.g.const(node.input[1])
                lo = None if v is None else float(v)
            thr = 0.0 if lo is not None and float(lo) == 0.0 else None
        out = node.output[0]
        if thr is not None and out in self.ch.atoms and node.input[0] in self.ch.atoms:
            self.ch.gates.append((out, node.input[0], thr))

    # --- channel producers and sinks -------------------------------------------------------------------------
    def op_Conv(self, node: onnx.NodeProto, transpose: bool = False) -> None:
        x, w = node.input[0], self.g.const(node.input[1])
        if x not in self.ch.atoms or w is None:
            return self.unknown(node, "weights are not a constant" if w is not None or x in self.ch.atoms
                                else "input has no channels")
        group = int(attr(node, "group", 1))
        cin = self.C(x)
        out = node.output[0]
        if group == 1:
            self.ch.sinks.append(Sink(node, x, 0 if transpose else 1))
            self.fresh_out(node)
            self.ch.edits.append(("out", node, 1 if transpose else 0, out))
        elif not transpose and group == cin and w.shape[0] == cin:
            self.give(out, self.ch.atoms[x])  # depthwise: channel c in, channel c out
            self.ch.edits.append(("dw", node, out))
        else:
            self.unknown(node, f"grouped Conv (group={group}) keeps equal group sizes")

    def op_ConvTranspose(self, node: onnx.NodeProto) -> None:
        self.op_Conv(node, transpose=True)

    def op_Gemm(self, node: onnx.NodeProto) -> None:
        a, b = node.input[0], self.g.const(node.input[1])
        if a not in self.ch.atoms or b is None or attr(node, "transA", 0) or self.rank(a) != 2:
            return self.unknown(node, "needs a rank-2 input and constant weights")
        tb = int(attr(node, "transB", 0))
        self.ch.sinks.append(Sink(node, a, 1 if tb else 0))
        self.fresh_out(node)
        self.ch.edits.append(("out", node, 0 if tb else 1, node.output[0]))

    def op_MatMul(self, node: onnx.NodeProto) -> None:
        a, b = node.input[0], self.g.const(node.input[1])
        if a not in self.ch.atoms or b is None or b.ndim != 2 or self.rank(a) != 2:
            return self.unknown(node, "needs a rank-2 input and a constant 2-D weight")
        self.ch.sinks.append(Sink(node, a, 0))
        self.fresh_out(node)
        self.ch.edits.append(("out", node, 1, node.output[0]))

    # --- channel-wise ops ------------------------------------------------------------------------------------
    def norm(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        if x not in self.ch.atoms or not all(self.g.is_const(node.input[i]) for i in NORM[node.op_type]):
            return self.unknown(node, "parameters are not constants")
        for i in NORM[node.op_type]:
            self.ch.edits.append(("param", node, i, 0, node.output[0]))
        self.passthrough(node, x)

    def binary(self, node: onnx.NodeProto) -> None:
        out = node.output[0]
        if not self.has_ch(out):
            return self.unknown(node)
        r, c = self.rank(out), self.C(out)
        joined = []
        for i, name in enumerate(node.input):
            if name in self.ch.atoms and self.rank(name) == r and self.C(name) == c:
                joined.append(name)
                continue
            val = self.g.const(name)
            shape = val.shape if val is not None else (self.shapes[name][0] if name in self.shapes else None)
            if shape is None:
                return self.unknown(node, f"operand {name!r} has no known shape")
            ax = 1 - (r - len(shape))
            size = shape[ax] if 0 <= ax < len(shape) else 1
            if size == 1:
                continue
            if val is None or size != c:
                return self.unknown(node, f"operand {name!r} broadcasts over the channels")
            self.ch.edits.append(("param", node, i, ax, out))
        if not joined:
            return self.unknown(node, "no operand carries the channels")
        for other in joined[1:]:
            for a, b in zip(self.ch.atoms[joined[0]], self.ch.atoms[other]):
                self.ch.uf.union(int(a), int(b))
        self.give(out, self.ch.atoms[joined[0]])

    def reduce(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            v = self.value(node.input[1])
            axes = None if v is None else [int(a) for a in v.ravel()]
        r = self.rank(x)
        if axes is None or any(int(a) % r in (0, 1) for a in axes):
            return self.unknown(node, "reduces over the channels")
        self.passthrough(node, x)

    def shape_op(self, node: onnx.NodeProto) -> None:
        """Shape is harmless when only the batch / spatial sizes are read (Gather of constant indices != 1)."""
        if node.op_type == "Shape":
            start, end = int(attr(node, "start", 0)), attr(node, "end")
            if end is not None and start == 0 and int(end) <= 1 or start >= 2:
                return
            r = self.rank(node.input[0])
            length = (int(end) % (r + 1) if end is not None else r) - start % r
            ok = True
            for c in self.g.consumers.get(node.output[0], []):
                idx = self.g.const(c.input[1]) if c.op_type == "Gather" and len(c.input) > 1 else None
                if idx is None or length <= 0 or (np.asarray(idx) % length == 1 - start % r).any():
                    ok = False
            if ok:
                return
        self.unknown(node, "reads the channel count")

    # --- routing ops -----------------------------------------------------------------------------------------
    def op_Concat(self, node: onnx.NodeProto) -> None:
        out = node.output[0]
        r = self.rank(out)
        axis = int(attr(node, "axis", 0)) % r
        if any(i not in self.ch.atoms for i in node.input):
            return self.unknown(node, "a constant or channel-less operand")
        if axis == 1:
            self.give(out, np.concatenate([self.ch.atoms[i] for i in node.input]))
        else:
            first = self.ch.atoms[node.input[0]]
            for i in node.input[1:]:
                for a, b in zip(first, self.ch.atoms[i]):
                    self.ch.uf.union(int(a), int(b))
            self.give(out, first)

    def op_Split(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        axis = int(attr(node, "axis", 0)) % self.rank(x)
        if axis != 1:
            for o in node.output:
                if self.has_ch(o):
                    self.give(o, self.ch.atoms[x])
            return
        start, atoms = 0, self.ch.atoms[x]
        for o in node.output:
            n = self.C(o)
            self.give(o, atoms[start:start + n])
            start += n
        self.ch.edits.append(("split", node, x))

    def op_Slice(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        vals = [self.g.const(node.input[i]) if len(node.input) > i and node.input[i] else None for i in range(1, 5)]
        starts, ends, axes, steps = vals
        if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None) or \
                (len(node.input) > 4 and node.input[4] and steps is None):
            return self.unknown(node, "starts/ends are not constants")
        r = self.rank(x)
        axes = list(range(len(starts))) if axes is None else [int(a) % r for a in axes]
        steps = [1] * len(starts) if steps is None else list(steps)
        if 1 not in axes:
            return self.passthrough(node, x)
        k = axes.index(1)
        if int(steps[k]) != 1:
            return self.unknown(node, "a strided slice of the channels")
        c = self.C(x)
        s, e, _ = slice(int(starts[k]), int(ends[k])).indices(c)
        self.give(node.output[0], self.ch.atoms[x][s:e])
        self.ch.edits.append(("slice", node, x, k))

    def op_Gather(self, node: onnx.NodeProto) -> None:
        x, idx = node.input[0], self.g.const(node.input[1])
        axis = int(attr(node, "axis", 0)) % self.rank(x)
        if idx is None or idx.ndim != 1 or axis != 1:
            return self.unknown(node, "gathers with non-constant indices or on another axis")
        self.give(node.output[0], self.ch.atoms[x][np.asarray(idx) % self.C(x)])
        self.ch.edits.append(("gather", node, x))

    def op_Flatten(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        if int(attr(node, "axis", 1)) % self.rank(x) != 1:
            return self.unknown(node, "flattens the batch into the channels")
        per = int(np.prod(self.shapes[x][0][2:])) if self.rank(x) > 2 else 1
        self.give(node.output[0], np.repeat(self.ch.atoms[x], per))

    def op_Transpose(self, node: onnx.NodeProto) -> None:
        perm = attr(node, "perm")
        if perm is None or len(perm) < 2 or perm[0] != 0 or perm[1] != 1:
            return self.unknown(node, "moves the channel axis")
        self.passthrough(node, node.input[0])

    def op_Squeeze(self, node: onnx.NodeProto) -> None:
        self._unsqueeze(node)

    def op_Unsqueeze(self, node: onnx.NodeProto) -> None:
        self._unsqueeze(node)

    def _unsqueeze(self, node: onnx.NodeProto) -> None:
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1:
            v = self.value(node.input[1])
            axes = None if v is None else list(v.ravel())
        r = self.rank(node.input[0] if node.op_type == "Squeeze" else node.output[0])
        if axes is None or any(int(a) % r in (0, 1) for a in axes):
            return self.unknown(node, "touches the batch or channel axis")
        self.passthrough(node, node.input[0])

    def op_Pad(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        pads = attr(node, "pads")
        if pads is None and len(node.input) > 1:
            pads = self.value(node.input[1])
        axes = self.value(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if pads is None:
            return self.unknown(node, "pads are not constant")
        pads = [int(p) for p in np.ravel(pads)]
        r = len(pads) // 2
        axes = list(range(r)) if axes is None else [int(a) % self.rank(x) for a in axes]
        if any(pads[i] or pads[i + r] for i, a in enumerate(axes) if a in (0, 1)):
            return self.unknown(node, "pads the channel axis")
        self.passthrough(node, x)

    def op_Resize(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        if len(node.input) > 3 and node.input[3]:
            if self.g.const(node.input[3]) is None:
                return self.unknown(node, "sizes are not constant")
            self.ch.edits.append(("sizes", node, 3, node.output[0]))
        self.passthrough(node, x)

    def op_Upsample(self, node: onnx.NodeProto) -> None:
        self.passthrough(node, node.input[0])

    def op_Reshape(self, node: onnx.NodeProto) -> None:
        x, out = node.input[0], node.output[0]
        shape = self.value(node.input[1])
        if shape is None or out not in self.shapes:
            return self.unknown(node, "the target shape is not known")
        if self._shuffle(node):
            return
        sin, sout = self.shapes[x][0], self.shapes[out][0]
        if len(sout) >= 2 and sout[0] == sin[0] and sout[1] == sin[1] and len(sin) >= 2:
            self.give(out, self.ch.atoms[x])
        elif len(sout) == 2 and sout[0] == sin[0] and sout[1] == int(np.prod(sin[1:])):
            self.give(out, np.repeat(self.ch.atoms[x], int(np.prod(sin[2:])) if len(sin) > 2 else 1))
        else:
            return self.unknown(node, "regroups the channels")
        if int(shape[1]) not in (0, -1):
            if not self.g.is_const(node.input[1]):
                return self.unknown(node, "the target shape is computed and names the channel count")
            self.ch.edits.append(("reshape", node, out))

    def _shuffle(self, node: onnx.NodeProto) -> bool:
        """Reshape (N,C,...)->(N,g,C/g,...), Transpose(0,2,1,...), Reshape back: a channel permutation."""
        x, mid = node.input[0], node.output[0]
        sin, smid = self.shapes[x][0], self.shapes[mid][0]
        if len(smid) != len(sin) + 1 or smid[0] != sin[0] or smid[1] * smid[2] != sin[1] or smid[3:] != sin[2:]:
            return False
        users = self.g.consumers.get(mid, [])
        if len(users) != 1 or users[0].op_type != "Transpose" or mid in self.g.outputs:
            return False
        tr = users[0]
        perm = list(attr(tr, "perm", []))
        if perm != [0, 2, 1] + list(range(3, len(smid))):
            return False
        users2 = self.g.consumers.get(tr.output[0], [])
        if len(users2) != 1 or users2[0].op_type != "Reshape" or tr.output[0] in self.g.outputs:
            return False
        back = users2[0]
        if self.shapes.get(back.output[0], ((),))[0] != sin:
            return False
        g, k = int(smid[1]), int(smid[2])
        order = np.arange(sin[1]).reshape(g, k).T.ravel()  # output channel j reads input channel order[j]
        self.give(back.output[0], self.ch.atoms[x][order])
        self.ch.edits.append(("shuffle", (node, tr, back), x, order))
        self.skip.update({tr.output[0], back.output[0]})
        return True


def analyze(graph: Graph, shapes: Shapes, values: dict | None = None) -> Channels:
    """Atoms, classes, sinks and edits of `graph`, with the tensor shapes (and small integer values) of a probe run."""
    return Analyzer(graph, shapes, values).run()
