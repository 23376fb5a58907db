"""What a lossy prune may remove, each with the MACs it saves: channel classes (the dependency groups of
`channels.py`), near-duplicate classes (merged into their original, scaled), whole residual branches (an `Add`
becomes its other operand) and shape-preserving runs of nodes (become identity).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from . import cost
from .graph import Channels, Graph
from .plan import labels, sink_reads

#: ops a shape-preserving run may hold (one data input each, constants besides)
RUN_OPS = {"Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSwish", "Sigmoid", "Tanh", "Mul",
           "Add", "HardSigmoid", "Elu", "Selu", "Gelu", "PRelu", "Identity", "Dropout"}
RUN_LENGTH = 8  # nodes a run may span


@dataclass(frozen=True)
class Candidate:
    """One removable unit. `kind`: "channel" (the classes `roots` go, their means folded into the consumers' biases),
    "merge" (class `roots[0]` ~ `scale` x class `into`: folded into it), "block" (readers of `target` read `source`:
    a residual branch dropped) or "identity" (the same, for a shape-preserving run); with `offset`, they read
    `source` + the per-channel mean of what was removed (mean(target) - mean(source) on the calibration data, as a
    channel's mean is folded into its readers). `macs`: saved, per sample."""

    kind: str
    label: str
    macs: int
    roots: tuple[int, ...] = ()
    into: int | None = None
    scale: float = 1.0
    target: str = ""
    source: str = ""
    offset: bool = False  # readers get `source` + the removed part's per-channel mean (`Base.offsets`)
    group: str = ""  # a unit of several channel classes (`roots`) of one group (`sensitivity.py`)

    @property
    def structural(self) -> bool:
        return self.kind in ("block", "identity")

    def to_json(self) -> dict:
        out = {"kind": self.kind, "unit": self.label, "macs": self.macs}
        return out | {"channels": len(self.roots)} if self.group else out


def channel_candidates(ch: Channels, g: Graph, shapes: dict) -> list[Candidate]:
    """Every class that is not frozen, with the MACs its channels cost at their producers, depthwise convs and
    channel-mixing readers (per channel: the node's MACs / its channel count)."""
    frozen = ch.frozen_roots()
    weights = {t.name: tuple(t.dims) for t in g.model.graph.initializer}
    saved: dict[int, float] = defaultdict(float)
    per_node = {n.output[0]: cost.node_macs(n, shapes, weights) for n in g.model.graph.node
                if n.op_type in cost.MAC_OPS and n.output}
    for s in ch.sinks:
        atoms = ch.uf.roots(ch.atoms[s.tensor])
        for r in atoms:
            saved[int(r)] += per_node.get(s.node.output[0], 0) / max(len(atoms), 1)
    for e in ch.edits:
        if e[0] in ("out", "dw"):
            atoms = ch.uf.roots(ch.atoms.get(e[-1], np.zeros(0, np.int64)))
            for r in atoms:
                saved[int(r)] += per_node.get(e[1].output[0], 0) / max(len(atoms), 1)
    names = labels(ch)
    return [Candidate("channel", names.get(r, f"class {r}"), int(m), roots=(r,))
            for r, m in sorted(saved.items()) if r not in frozen]


def _dead_macs(g: Graph, shapes: dict, target: str, source: str) -> tuple[int, list[str]]:
    """MACs (per sample) and names of the nodes that nothing reads once readers of `target` read `source`."""
    weights = {t.name: tuple(t.dims) for t in g.model.graph.initializer}
    readers: dict[str, int] = defaultdict(int)
    for n in g.model.graph.node:
        for i in n.input:
            if i:
                readers[i] += 1
    outs = set(g.outputs)
    readers[source] += readers.pop(target, 0)
    dead, macs = [], 0
    stack = [g.producer[target]] if target in g.producer and target not in outs else []
    while stack:
        n = stack.pop()
        if any(readers.get(o, 0) or o in outs for o in n.output if o):
            continue
        dead.append(n.name or n.output[0])
        macs += cost.node_macs(n, shapes, weights) if n.op_type in cost.MAC_OPS else 0
        for i in n.input:
            if i and i in readers:
                readers[i] -= 1
                if readers[i] == 0 and i in g.producer:
                    stack.append(g.producer[i])
    return macs, dead


def block_candidates(g: Graph, shapes: dict) -> list[Candidate]:
    """Residual branches: an Add (or Sum) of two operands shaped like its output; dropping an operand makes the
    output the other one. Only operands whose removal frees some MACs count (an identity shortcut frees none)."""
    out = []
    for n in g.model.graph.node:
        if n.op_type not in ("Add", "Sum") or len(n.input) != 2 or any(g.is_const(i) for i in n.input):
            continue
        y = n.output[0]
        if y not in shapes or any(shapes.get(i, (None,))[0] != shapes[y][0] for i in n.input):
            continue
        for k in (0, 1):
            branch, keep = n.input[k], n.input[1 - k]
            macs, dead = _dead_macs(g, shapes, y, keep)
            if macs > 0:
                first = g.producer[branch].name if branch in g.producer else branch
                out.append(Candidate("block", f"{n.name or y}: drop the branch ending in {first} ({len(dead) - 1} "
                                     "nodes)", macs, target=y, source=keep))
    return out


def run_candidates(g: Graph, shapes: dict) -> list[Candidate]:
    """Shape-preserving runs: a chain of single-data-input nodes from tensor A to tensor B, intermediates read by
    nothing else, A and B of one shape, at least one Conv: B becomes A."""
    out = []
    for n in g.model.graph.node:
        if n.op_type not in RUN_OPS or not n.output or n.output[0] not in shapes:
            continue
        end, t, convs = n.output[0], n, 0
        for _ in range(RUN_LENGTH):
            data = [i for i in t.input if i and not g.is_const(i)]
            if t.op_type not in RUN_OPS or len(data) != 1:
                break
            convs += t.op_type == "Conv"
            a = data[0]
            if convs and shapes.get(a, (None,))[0] == shapes[end][0]:
                macs, _ = _dead_macs(g, shapes, end, a)
                if macs > 0:
                    span = t.name or t.output[0] if t is n else f"{t.name or t.output[0]} .. {n.name or end}"
                    out.append(Candidate("identity", f"{span} -> identity", macs, target=end, source=a))
            if a not in g.producer or len(g.consumers.get(a, [])) != 1 or a in g.outputs:
                break
            t = g.producer[a]
    return out


def structure(model: onnx.ModelProto, shapes: dict) -> list[Candidate]:
    """The block and run candidates of a model (its tensors' shapes from one run)."""
    g = Graph(model)
    return block_candidates(g, shapes) + run_candidates(g, shapes)


def near_duplicates(ch: Channels, acts: dict[str, np.ndarray], corr: float = 0.98) -> list[tuple[int, int, float]]:
    """(copy, original, scale) for classes read in one tensor only whose activations on the calibration sample
    `acts` (tensor -> (N, C, ...)) correlate above `corr` with an earlier class of that tensor; scale is the
    least-squares factor copy ~ scale x original."""
    reads = sink_reads(ch)
    frozen = ch.frozen_roots()
    single = {r for r, rs in reads.items() if len({s.tensor for s, _ in rs}) == 1 and r not in frozen}
    found, taken = [], set()
    for t, x in acts.items():
        roots = ch.uf.roots(ch.atoms[t])
        ks = [k for k, r in enumerate(roots) if int(r) in single and int(np.sum(roots == r)) == 1]
        if len(ks) < 2:
            continue
        flat = np.moveaxis(x[:, ks], 1, 0).reshape(len(ks), -1).astype(np.float64)
        norms = np.linalg.norm(flat, axis=1)
        live = norms > 0
        unit = flat / np.where(live, norms, 1.0)[:, None]
        c = unit @ unit.T
        for i in range(1, len(ks)):
            j = int(np.argmax(np.where(np.arange(len(ks)) < i, c[i], -2.0)))
            rb, ra = int(roots[ks[i]]), int(roots[ks[j]])
            if live[i] and live[j] and c[i, j] >= corr and rb not in taken and ra not in taken:
                found.append((rb, ra, float(flat[i] @ flat[j] / (norms[j] ** 2))))
                taken.add(rb)
    return found
