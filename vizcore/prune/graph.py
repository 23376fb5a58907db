"""The ONNX graph as the pruner sees it: constants, producers and consumers, and the channel classes.

Every channel of every tensor with a channel axis (axis 1) is an *atom*; atoms that must be removed together are
joined (union-find): an Add/Mul/Sum joins its operands' channels, a depthwise Conv ties its input and output, a
BatchNormalization or activation passes them through. Concat, Split, Slice, Gather, Flatten and channel shuffles
route atoms without joining. A class is frozen (never removed) where an op is not understood, with the reason.
*Sinks* are the reads that mix channels (Conv with group 1, Gemm, MatMul): a class can be removed when every sink
read of it is zero, because every other op on the way is channel-wise.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper


class UnionFind:
    """Atoms (ints) joined into classes."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self, atoms: np.ndarray) -> np.ndarray:
        return np.array([self.find(int(a)) for a in atoms], dtype=np.int64)


class Graph:
    """An ONNX model with constant lookup and edits (initializers or Constant nodes), producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.refresh()

    def refresh(self) -> None:
        g = self.model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.outputs = {o.name for o in g.output}
        self.inputs = [i.name for i in g.input if i.name not in self.inits]
        self.alias: dict[str, str] = {}  # Identity of a constant (TorchScript shares equal weights so) -> source
        for n in g.node:
            if n.op_type == "Identity" and n.input and (n.input[0] in self.inits or n.input[0] in self.const_nodes
                                                        or n.input[0] in self.alias):
                self.alias[n.output[0]] = self.alias.get(n.input[0], n.input[0])

    def is_const(self, name: str) -> bool:
        return name in self.inits or name in self.const_nodes or name in self.alias

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer, a Constant node output or an Identity of one, else None."""
        name = self.alias.get(name, name)
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.const_nodes.get(name)
        if n is not None:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def set_input_const(self, node: onnx.NodeProto, idx: int, arr: np.ndarray) -> None:
        """Set input `idx` of `node` to `arr`: in place if only this node reads it, else as a new initializer."""
        name = node.input[idx] if idx < len(node.input) else ""
        users = [n for n in self.consumers.get(name, []) if n is not node] if name else []
        if name and name in self.inits and not users:
            self.inits[name].CopyFrom(numpy_helper.from_array(arr, name))
            return
        base = name or f"{node.name or node.op_type}_in{idx}"
        new = unique(f"{base}_pruned", self)
        self.model.graph.initializer.append(numpy_helper.from_array(arr, new))
        while len(node.input) <= idx:
            node.input.append("")
        node.input[idx] = new
        self.refresh()


def unique(base: str, g: Graph) -> str:
    """`base`, or `base1`, `base2`, ...: a name no initializer, node output or input of `g` has."""
    name, i = base, 0
    taken = set(g.inits) | set(g.producer) | set(g.inputs)
    while name in taken:
        i += 1
        name = f"{base}{i}"
    return name


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's value (ints, floats, strings decoded), else `default`."""
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


@dataclass
class Sink:
    """A channel-mixing read: `node` reads tensor `tensor` on its input 0, weight `w_axis` of input 1 is its axis."""

    node: onnx.NodeProto
    tensor: str
    w_axis: int


@dataclass
class Channels:
    """The result of the analysis: atoms per tensor, classes, sinks, and what the surgery must edit."""

    uf: UnionFind
    atoms: dict[str, np.ndarray] = field(default_factory=dict)
    frozen: dict[int, str] = field(default_factory=dict)  # atom -> reason (resolve with uf.find)
    sinks: list[Sink] = field(default_factory=list)
    edits: list[tuple] = field(default_factory=list)  # (kind, node, ...) replayed by the surgery
    unknown_ops: dict[str, int] = field(default_factory=dict)
    gates: list[tuple[str, str, float]] = field(default_factory=list)  # (output, input, zero at or below)

    def freeze(self, atoms: np.ndarray, reason: str) -> None:
        for a in atoms:
            self.frozen.setdefault(int(a), reason)

    def frozen_roots(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for a, why in self.frozen.items():
            out.setdefault(self.uf.find(a), why)
        return out

    def fresh(self, n: int) -> np.ndarray:
        return self.uf.new(n)
