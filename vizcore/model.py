"""The loaded model as data: its graph inputs and outputs (how to feed the converted graph), the layer table,
addressing and graph cuts. `vizcore.loading` builds it complete, in one go; nothing here reads a file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnx import TensorProto
from torch import fx

from . import layouts, proto_check
from .errors import LayerNotFoundError, ModelLoadError, TargetError, closest

VISUAL_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Relu", "Clip", "PRelu", "LeakyRelu", "Elu", "Selu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Gelu", "Tanh", "Softplus", "Mish", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Concat", "Add", "Softmax", "BatchNormalization", "LayerNormalization", "Flatten",
    # quantized and onnxruntime-fused forms of the same layers
    "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearConcat",
    "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "FusedConv", "FusedGemm", "FastGelu",
    "BiasGelu", "QuickGelu", "SkipLayerNormalization",
})
ACTIVATION_OPS = frozenset({
    "Relu", "Clip", "PRelu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Tanh",
    "Softplus", "Mish",
})
FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64",
               TensorProto.BFLOAT16: "bfloat16"}
DEFAULT_SPATIAL = 224
#: Ops that compute the same thing on an input of any spatial size (they slide or act per element, or pool it all):
#: a graph made only of them runs on a smaller picture with the same meaning (`Model.size_free`).
SIZE_FREE_OPS = frozenset({
    "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "Relu", "Clip", "PRelu", "LeakyRelu",
    "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Tanh", "Softplus", "Mish", "Erf", "Exp", "Log",
    "Sqrt", "Neg", "Abs", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "Concat", "Identity", "Dropout", "Constant", "Cast", "QuantizeLinear",
    "DequantizeLinear", "QLinearConv", "FusedConv",
})


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (ints, or strings for symbolic dims, None for unknown), dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    #: the axis that holds the batch (1 for an LSTM state `[layers, batch, hidden]`; see graph_inputs.batch_axes)
    batch_axis: int = 0

    @property
    def is_float(self) -> bool:
        """Whether gradient ascent can optimize it."""
        return self.dtype in FLOAT_TYPES.values()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Layer:
    """One ONNX node of the converted graph, addressable by `name`, `output` tensor name or `index`."""

    index: int
    name: str
    op_type: str
    output: str
    fx_name: str
    shape: tuple[int, ...] | None  # for the probe input (batch 1, default size); None if not a tensor
    inputs: tuple[str, ...] = ()
    #: the graph's tensor is (N, L, C) (a text model's hidden states): `shape` and the activations vizcore hands
    #: on (`Model.cut_at`) are (N, C, L), so that a channel is a feature, not a position
    channel_last: bool = False

    @property
    def channels(self) -> int | None:
        """Channel count (dim 1) for tensors of rank >= 2."""
        return self.shape[1] if self.shape is not None and len(self.shape) >= 2 else None

    @property
    def visual(self) -> bool:
        """Whether `vizcore inspect` lists it by default."""
        return self.op_type in VISUAL_OPS and self.shape is not None and len(self.shape) >= 2

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"index": self.index, "name": self.name, "op_type": self.op_type, "output": self.output,
                "shape": list(self.shape) if self.shape is not None else None, "channels": self.channels,
                "channel_last": self.channel_last}


@dataclass(frozen=True, eq=False, kw_only=True)
class Network:
    """The converted torch module (eval mode) and its graph inputs and outputs: how to feed it, at what shape.

    `vizcore.loading` probes it to build the layer table; a `Model` is a Network with that table.
    """

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata: dict[str, str]
    module: fx.GraphModule
    #: the optimized input's layout in the graph (None: natural, N C spatial...); see vizcore.layouts
    layout: layouts.Layout | None = None
    #: the probe length of a 1-D model without a fixed length (from its receptive field), else None
    default_length: int | None = None
    #: an inner tensor made the optimized input (`load(path, input=...)`): the module's extra last argument
    optimized: TensorInfo | None = None
    #: the table (vocabulary, features) an optimized embedding output is looked up in (its Gather's initializer)
    embedding: np.ndarray | None = field(default=None, repr=False)
    #: values for the other graph inputs (`load(path, feeds=...)`), else defaults (see `default_feed`)
    given: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: integer inputs that index an embedding table: {name: vocabulary size} (probed with ids 0, 1, ...)
    tokens: dict[str, int] = field(default_factory=dict)
    #: a module computing the optimized inner tensor from the graph inputs (fidelity feeds onnxruntime those)
    source: fx.GraphModule | None = field(default=None, repr=False)
    #: the float graph input optimized when there are several (None: the first)
    primary: str | None = None

    @property
    def input(self) -> TensorInfo:
        """The one float input that gradient ascent optimizes (an inner tensor if asked, else the first float input)."""
        if self.optimized is not None:
            return self.optimized
        for t in self.inputs:
            if t.is_float and (self.primary is None or t.name == self.primary):
                return t
        t = self.inputs[0]
        raise ModelLoadError(f"input {t.name!r} has dtype {t.dtype}: gradient ascent needs a float input",
                             "optimize an inner float tensor such as the embedding output (load(path, input=NAME), "
                             "--input-node NAME, or --input-node auto: the embedding lookup)")

    @property
    def param_count(self) -> int:
        """Number of weights (parameters and weight buffers) in the converted graph."""
        n = sum(p.numel() for p in self.module.parameters())
        n += sum(b.numel() for b in self.module.buffers() if b.is_floating_point())
        return n

    @property
    def probe_batch(self) -> int:
        """The batch of the probe that fills the layer table: 1, or the input's fixed batch size."""
        first = self.input if self.has_float_input else self.inputs[0]
        d = first.shape[0] if first.shape else 1
        return d if isinstance(d, int) and d > 0 else 1

    @property
    def natural_dims(self) -> tuple[int | str | None, ...]:
        """The optimized input's dims in the natural layout (N, C, H, W) or (N, C, L), whatever the graph's."""
        dims = self.input.shape
        return self.layout.natural(dims) if self.layout is not None else tuple(dims)

    @property
    def fixed_size(self) -> tuple[int, ...] | None:
        """The input's static spatial size (H, W) or (L,), if the model fixes it (else None: any size works)."""
        dims = self.natural_dims[2:]
        return tuple(dims) if dims and all(isinstance(d, int) and d > 0 for d in dims) else None

    @property
    def fixed_dims(self) -> tuple[int | None, ...] | None:
        """Per spatial dim, the size the model fixes (None where it is free), e.g. (32, None) for an OCR input
        `[1, 3, 32, 'w']`; None when no spatial dim is fixed."""
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in self.natural_dims[2:])
        return dims if any(d is not None for d in dims) else None

    def input_shape(self, batch: int = 1, size: int | Sequence[int] | None = None) -> tuple[int, ...]:
        """A concrete natural-layout input shape: symbolic batch -> `batch`, symbolic spatial dims -> `size` (an int,
        or one value per spatial dim such as (H, W)); default: the fixed size, else the 1-D model's receptive-field
        based length, else metadata `vizcore.size`, else 224. A dim the model fixes always keeps its size."""
        shape = list(self.natural_dims)
        fixed = self.fixed_size
        spatial = len(shape) - 2
        if size is None:
            meta = proto_check.metadata_size(self.metadata.get("vizcore.size"))[0]
            if fixed:
                hw = list(fixed)
            elif meta:
                hw = [meta] * spatial
            elif spatial == 1 and self.default_length:
                hw = [self.default_length]
            else:
                hw = [DEFAULT_SPATIAL] * spatial
        elif isinstance(size, int):
            hw = [size] * spatial
        else:
            hw = [int(v) for v in size]
            if len(hw) != spatial:
                raise TargetError(f"size {tuple(hw)} has {len(hw)} values but the input has {spatial} spatial "
                                  f"dimension{'s' if spatial != 1 else ''}", "give one value per dimension")
        out = []
        for i, d in enumerate(shape):
            if i == 0:
                out.append(batch)
            elif isinstance(d, int) and d > 0:
                out.append(d)
            elif i >= 2:
                out.append(hw[i - 2])
            else:
                raise ModelLoadError(f"input {self.input.name!r} has a symbolic channel dimension",
                                     "export the model with a fixed channel count")
        return tuple(out)

    def probe_input(self, batch: int = 1, size: int | Sequence[int] | None = None, seed: int = 0) -> torch.Tensor:
        """A seeded uniform random input of the model's shape (0..1, the usual image range)."""
        g = torch.Generator().manual_seed(seed)
        return torch.rand(self.input_shape(batch, size), generator=g)

    @property
    def device(self) -> torch.device:
        """Where the converted module's weights live (the engine may move them to CUDA)."""
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    def feeds(self, x: torch.Tensor, rest: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """All graph inputs for the natural-layout input `x` (N, C, ...): `x` in the graph's own layout, the other
        inputs zero (floats) or ones (integers, masks), on the module's device. `rest`: those other inputs, already
        made by `extra_feeds` (the render loop makes them once per chunk, not every step)."""
        dev = self.device
        g = self.layout.to_graph(x) if self.layout is not None else x
        if rest is None:
            rest = self.extra_feeds(x)
        if self.optimized is not None:
            return [*rest, g.to(dev)]
        it = iter(rest)
        return [g.to(dev) if t is self.input else next(it) for t in self.inputs]

    def extra_feeds(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The graph inputs other than the optimized one, for a batch shaped like `x`, on the module's device."""
        length = int(x.shape[-1]) if x.dim() == 3 else None
        return [self.default_feed(t, x.shape[0], length).to(self.device) for t in self.inputs if t is not self.input]

    def default_feed(self, t: TensorInfo, batch: int, length: int | None = None) -> torch.Tensor:
        """The value fed to graph input `t` when it is not optimized: `given` (expanded to the batch), else token
        ids 0, 1, ... (inputs that index an embedding), else ones (integer inputs, masks), else zeros. Symbolic
        non-batch dims take `length` (the optimized signal's length), else 16 for token inputs, else 1."""
        a = t.batch_axis
        if t.name in self.given:
            v = self.given[t.name]
            grow = v.dim() > a and v.shape[a] == 1 and batch > 1
            return v.expand(*v.shape[:a], batch, *v.shape[a + 1:]) if grow else v
        n = length or (16 if t.name in self.tokens or not t.is_float else 1)
        shape = [batch if i == a and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else n)
                 for i, d in enumerate(t.shape)]
        if t.name in self.tokens:
            ids = torch.arange(int(np.prod(shape[1:])) if len(shape) > 1 else 1) % max(self.tokens[t.name], 1)
            return ids.reshape(1, *shape[1:]).expand(*shape).to(getattr(torch, t.dtype, torch.int64)).contiguous()
        return _zeros_for(t, batch, shape)

    def run(self, x: torch.Tensor) -> Any:
        """The full converted graph on input `x` (other inputs, if any, zero)."""
        return self.module(*self.feeds(x))

    @property
    def has_float_input(self) -> bool:
        """Whether there is something to optimize (a float graph input, or an inner tensor given as `input`)."""
        return self.optimized is not None or any(t.is_float for t in self.inputs)


@dataclass(frozen=True, eq=False, kw_only=True)
class Model(Network):
    """A loaded ONNX model: file facts, the layer table and the converted graph. Immutable: built complete by
    `vizcore.loading.load` (the engine may move `module` to another device; that is the module, not the record)."""

    path: Path
    sha256: str
    producer: str
    opset: int
    ir_version: int
    layers: tuple[Layer, ...]
    #: every key a layer answers to: its name, its output tensor's name, the export's own node name
    by_key: dict[str, Layer] = field(default_factory=dict, repr=False)
    #: whether the graph runs at batch > 1 with per-sample results equal to batch 1 (measured at load)
    batch_ok: bool = False
    #: the natural-layout input shape the load ran the whole graph at (a render at that shape needs no size probe)
    probe_shape: tuple[int, ...] | None = None
    prepasses: tuple[tuple[str, int], ...] = ()
    #: nodes that were not converted: (layer name, op type, why), in graph order (see `vizcore inspect`)
    unreachable: tuple[tuple[str, str, str], ...] = ()
    #: the ONNX bytes onnxruntime compares against: the file as read (external data inlined), or the graph cut
    #: in front of the nodes that were not converted
    reference: bytes = field(default=b"", repr=False)
    #: what the load chose or did that the file does not say (the graph specialised on a given input, an input's
    #: batch axis, a sequence length, the embedding optimized, ...): one line each, also issued as warnings when
    #: the model is loaded
    choices: tuple[str, ...] = ()

    # -- addressing --------------------------------------------------------------------------------------------
    def layer(self, key: str | int | Layer) -> Layer:
        """The layer for a name, an output tensor name, an index (int or digit string) or a Layer."""
        if isinstance(key, Layer):
            return key
        if isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit() and key not in self.by_key):
            i = int(key)
            if not -len(self.layers) <= i < len(self.layers):
                raise LayerNotFoundError(f"layer index {i} is out of range: the model has {len(self.layers)} layers "
                                         f"(0..{len(self.layers) - 1})", "see `vizcore inspect MODEL --all`")
            return self.layers[i]
        if key in self.by_key:
            return self.by_key[key]
        hint = closest(key, [l.name for l in self.layers])
        raise LayerNotFoundError(
            f"no layer named {key!r}" + (f"; closest: {', '.join(hint)}" if hint else ""),
            "names and indices are listed by `vizcore inspect MODEL --all`")


    def logits_layer(self, output: str | None = None) -> Layer:
        """The layer producing a graph output; if it is a Softmax, the layer before it (the logits)."""
        names = [o.name for o in self.outputs]
        if output is None:
            output = names[0]
        elif output not in names:
            hint = closest(output, names)
            raise LayerNotFoundError(f"no output named {output!r}; outputs: {', '.join(names)}",
                                     f"did you mean {hint[0]!r}?" if hint else None)
        layer = self.layer(output)
        while (layer.op_type in ("Softmax", "LogSoftmax", "Identity") and layer.inputs
               and layer.inputs[0] in self.by_key):
            layer = self.by_key[layer.inputs[0]]
        return layer

    # -- cutting ------------------------------------------------------------------------------------------------
    def cut_at(self, keys: Iterable[str | int | Layer]) -> fx.GraphModule:
        """A module computing only what the given layers need; returns their outputs as a tuple (in order).

        It shares parameters with `self.module` (no copy) and never computes nodes after the deepest layer. A
        channel-last layer's output comes channel first, (N, C, L), as its `shape` says.
        """
        layers = [self.layer(k) for k in keys]
        want = {l.fx_name for l in layers}
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        nodes = {}
        for n in self.module.graph.nodes:
            if n.op == "output":
                break
            env[n] = g.node_copy(n, lambda a: env[a])
            nodes[n.name] = env[n]
            want.discard(n.name)
            if not want:
                break
        outs = []
        for l in layers:
            node = nodes[l.fx_name]
            if l.shape is None:  # multi-output node: take output 0
                node = g.call_function(_first, (node,))
            if l.channel_last:
                node = g.call_function(torch.transpose, (node, 1, 2))
            outs.append(node)
        g.output(tuple(outs))
        sub = fx.GraphModule(self.module, g)
        sub.graph.eliminate_dead_code()
        sub.delete_all_unused_submodules()
        sub.recompile()
        return sub


    def depends_on_input(self, key: str | int | Layer) -> bool:
        """Whether a layer's value depends on the optimized input (graph reachability in the converted graph)."""
        return self.layer(key).fx_name in self._reached

    def size_free(self, keys: Iterable[str | int | Layer]) -> bool:
        """Whether everything the given layers compute from is made of `SIZE_FREE_OPS`, so that the cut graph may
        run on a smaller picture than the model's fixed input (a check's short ascent at 32 px, not 224)."""
        ops = {l.fx_name: l.op_type for l in self.layers}
        todo = [self.layer(k).fx_name for k in keys]
        nodes = {n.name: n for n in self.module.graph.nodes}
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            n = nodes[name]
            if n.op == "call_module" and ops.get(name) not in SIZE_FREE_OPS:
                return False
            if n.op in ("call_function", "call_method"):
                return False
            todo += [a.name for a in n.all_input_nodes]
        return True

    def inputs_reaching(self, key: str | int | Layer) -> list[str]:
        """The graph inputs a layer's value depends on (graph reachability in the converted graph), in order."""
        fx_name = self.layer(key).fx_name
        placeholders = [n for n in self.module.graph.nodes if n.op == "placeholder"][:len(self.inputs)]
        out = []
        for t, p in zip(self.inputs, placeholders):
            reached = {p}
            for n in self.module.graph.nodes:
                if any(a in reached for a in n.all_input_nodes):
                    reached.add(n)
            if any(n.name == fx_name for n in reached):
                out.append(t.name)
        return out

    @cached_property
    def _reached(self) -> frozenset[str]:
        """fx node names reachable from the optimized input's placeholder."""
        placeholders = [n for n in self.module.graph.nodes if n.op == "placeholder"]
        i = len(self.inputs) if self.optimized is not None else self.inputs.index(self.input)
        reached = {placeholders[i]} if i < len(placeholders) else set()
        for n in self.module.graph.nodes:
            if any(a in reached for a in n.all_input_nodes):
                reached.add(n)
        return frozenset(n.name for n in reached)

    @property
    def nothing_converted(self) -> str | None:
        """Why no layer worth visualizing was converted, naming the nodes without a converter that everything
        else depends on; None when some layer was (or when nothing was cut: then the graph simply has none)."""
        if not self.unreachable or any(l.visual for l in self.layers):
            return None
        causes = [f"{why} in node {name!r}" for name, _, why in self.unreachable if not why.startswith("after ")]
        after = len(self.unreachable) - len(causes)
        rest = f"; the {after} node{'s' if after != 1 else ''} after it depend{'s' if after == 1 else ''} on it" \
            if after else ""
        return "no layer could be converted: " + "; ".join(causes[:3]) + rest

    def summary(self) -> dict[str, Any]:
        """Model facts as a JSON-ready dict (inspect --json, manifests, reports)."""
        return {"path": str(self.path), "sha256": self.sha256, "producer": self.producer, "opset": self.opset,
                "ir_version": self.ir_version, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs], "parameters": self.param_count,
                "metadata": self.metadata, "prepasses": [{"name": n, "changes": c} for n, c in self.prepasses],
                "layout": self.layout.name if self.layout is not None else None,
                "unreachable": [{"name": n, "op_type": o, "reason": r} for n, o, r in self.unreachable],
                "nothing_converted": self.nothing_converted, "choices": list(self.choices)}


def batch_axis(both: tuple[int, ...], one: tuple[int, ...]) -> int | None:
    """The axis that holds the batch: the one where a batch-2 output has 2 and the batch-1 output 1, all other
    dims equal (dim 0 first; time-major sequence outputs have it at 1). None if there is no such axis."""
    if len(both) != len(one):
        return None
    for a in range(len(both)):
        if both[a] == 2 and one[a] == 1 and all(b == o for i, (b, o) in enumerate(zip(both, one)) if i != a):
            return a
    return None


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (tuple, list)) else x


def _zeros_for(t: TensorInfo, batch: int, shape: Sequence[int] | None = None) -> torch.Tensor:
    if shape is None:
        shape = [batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else 1)
                 for i, d in enumerate(t.shape)]
    if t.is_float:
        return torch.zeros(shape, dtype=getattr(torch, t.dtype, torch.float32))
    if t.dtype == "bool":
        return torch.ones(shape, dtype=torch.bool)
    # ones, not zeros: masks then keep everything, and shapes/sizes fed as inputs stay valid
    return torch.ones(shape, dtype=getattr(torch, t.dtype, torch.int64))

