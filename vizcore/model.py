"""ONNX file -> `Model`: validated, pre-passed, converted to a torch fx graph, with a layer table and graph cuts.

Nothing downstream touches ONNX protos: the engine, checks and reports see `Model.layers`, `Model.module` and
`Model.cut_at`.
"""

from __future__ import annotations

import hashlib
import operator
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto
from torch import fx

from . import graph_inputs as inputs_mod
from . import layouts, proto_check
from .errors import (
    LayerNotFoundError,
    ModelLoadError,
    OptionError,
    TargetError,
    UnsupportedOpError,
    VizcoreError,
    closest,
    oneline,
)
from .inputs import contained, read_regular, require_readable
from .onnx_compat import Converter, Prepass, loops, partial, registry
from .text import printable

#: Op types shown by default in `vizcore inspect`: the nodes people visualize.
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
#: Integer/bool input dtypes probed with default ids and masks when a model has no float input
_ID_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"})
#: Largest probe input (elements) that load/inspect will build: 64 Mi floats (256 MiB), e.g. 3 x 4096 x 5461.
MAX_PROBE_ELEMENTS = 64 * 2**20


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (ints, or strings for symbolic dims, None for unknown), dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str

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


@dataclass
class Model:
    """A loaded ONNX model: metadata, inputs/outputs, the layer table and the converted torch module (eval mode)."""

    path: Path
    sha256: str
    producer: str
    opset: int
    ir_version: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, str]
    layers: list[Layer]
    module: fx.GraphModule
    prepasses: list[tuple[str, int]] = field(default_factory=list)
    _by_key: dict[str, Layer] = field(default_factory=dict, repr=False)
    #: the optimized input's layout in the graph (None: natural, N C spatial...); see vizcore.layouts
    layout: layouts.Layout | None = None
    #: the probe length of a 1-D model without a fixed length (from its receptive field), else None
    default_length: int | None = None
    #: nodes that were not converted: (layer name, op type, why), in graph order (see `vizcore inspect`)
    unreachable: list[tuple[str, str, str]] = field(default_factory=list)
    #: the ONNX bytes onnxruntime compares against when the converted graph is not the whole file
    reference: bytes | None = field(default=None, repr=False)
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

    # -- addressing --------------------------------------------------------------------------------------------
    def layer(self, key: str | int | Layer) -> Layer:
        """The layer for a name, an output tensor name, an index (int or digit string) or a Layer."""
        if isinstance(key, Layer):
            return key
        if isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit() and key not in self._by_key):
            i = int(key)
            if not -len(self.layers) <= i < len(self.layers):
                raise LayerNotFoundError(f"layer index {i} is out of range: the model has {len(self.layers)} layers "
                                         f"(0..{len(self.layers) - 1})", "see `vizcore inspect MODEL --all`")
            return self.layers[i]
        if key in self._by_key:
            return self._by_key[key]
        hint = closest(key, [l.name for l in self.layers])
        raise LayerNotFoundError(
            f"no layer named {key!r}" + (f"; closest: {', '.join(hint)}" if hint else ""),
            "names and indices are listed by `vizcore inspect MODEL --all`")

    @property
    def input(self) -> TensorInfo:
        """The one float input that gradient ascent optimizes (an inner tensor if asked, else the first float input)."""
        if self.optimized is not None:
            return self.optimized
        for t in self.inputs:
            if t.is_float:
                return t
        t = self.inputs[0]
        raise ModelLoadError(f"input {t.name!r} has dtype {t.dtype}: gradient ascent needs a float input",
                             "optimize an inner float tensor such as the embedding output (load(path, input=NAME), "
                             "--input-node NAME)")

    @property
    def param_count(self) -> int:
        """Number of weights (parameters and weight buffers) in the converted graph."""
        n = sum(p.numel() for p in self.module.parameters())
        n += sum(b.numel() for b in self.module.buffers() if b.is_floating_point())
        return n

    @property
    def probe_batch(self) -> int:
        """The batch of the probe that fills the layer table: 1, or the input's fixed batch size."""
        first = self.optimized or next((t for t in self.inputs if t.is_float), self.inputs[0])
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
               and layer.inputs[0] in self._by_key):
            layer = self._by_key[layer.inputs[0]]
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

    # -- checks -------------------------------------------------------------------------------------------------
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
        if t.name in self.given:
            v = self.given[t.name]
            return v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 and batch > 1 else v
        n = length or (16 if t.name in self.tokens or not t.is_float else 1)
        shape = [batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else n)
                 for i, d in enumerate(t.shape)]
        if t.name in self.tokens:
            ids = torch.arange(int(np.prod(shape[1:])) if len(shape) > 1 else 1) % max(self.tokens[t.name], 1)
            return ids.reshape(1, *shape[1:]).expand(*shape).to(getattr(torch, t.dtype, torch.int64)).contiguous()
        return _zeros_for(t, batch, shape)

    def depends_on_input(self, key: str | int | Layer) -> bool:
        """Whether a layer's value depends on the optimized input (graph reachability in the converted graph)."""
        return self.layer(key).fx_name in self._reached

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

    def run(self, x: torch.Tensor) -> Any:
        """The full converted graph on input `x` (other inputs, if any, zero)."""
        return self.module(*self.feeds(x))

    @property
    def has_float_input(self) -> bool:
        """Whether there is something to optimize (a float graph input, or an inner tensor given as `input`)."""
        return self.optimized is not None or any(t.is_float for t in self.inputs)

    @cached_property
    def batch_ok(self) -> bool:
        """Whether the converted graph runs at batch > 1 and gives per-element results equal to batch 1."""
        if not self.has_float_input:  # token ids only: the same default ids in every sample
            try:
                with torch.no_grad():
                    both = _first_tensor(self.module(*[self.default_feed(t, 2) for t in self.inputs]))
                    one = _first_tensor(self.module(*[self.default_feed(t, 1) for t in self.inputs]))
                axis = batch_axis(tuple(both.shape), tuple(one.shape))
                return axis is not None and bool(torch.allclose(both.narrow(axis, 1, 1), one, atol=1e-4))
            except Exception:
                return False
        if isinstance(self.input.shape[0], int) and self.input.shape[0] > 0:
            return self.input.shape[0] > 1
        small = 64 if len(self.natural_dims) == 4 else None
        x = self.probe_input(batch=2, size=small if self.fixed_size is None else None)
        try:
            with torch.no_grad():
                both = _first_tensor(self.run(x))
                one = _first_tensor(self.run(x[1:2]))
            axis = batch_axis(tuple(both.shape), tuple(one.shape))
            if axis is None:
                return False
            # a graph that bakes batch 1 in fails or gives a different answer; GPU numerics (TF32, algorithm
            # choice per batch size) differ by far less, so compare relative to the output's scale
            scale = float(one.abs().max()) + 1e-6
            return float((both.narrow(axis, 1, 1).float() - one.float()).abs().max()) <= 1e-2 * scale
        except Exception:
            return False

    def fidelity(self, seed: int = 0, batch: int = 1, size: int | Sequence[int] | None = None) -> dict[str, Any]:
        """Max abs difference between the converted graph and onnxruntime on a seeded random input."""
        try:
            import onnxruntime as ort
        except ImportError:
            return {"available": False, "reason": "onnxruntime is not installed (pip install onnxruntime)"}
        if not self.has_float_input:
            x = None
            feeds = [self.default_feed(t, batch) for t in self.inputs]
        elif self.source is not None:  # an inner tensor is optimized: its value from the graph inputs onnxruntime gets
            natural = self.input_shape(batch, size)
            base = [self.default_feed(t, batch, natural[-1] if len(natural) == 3 else None) for t in self.inputs]
            with torch.no_grad():
                x = self.source(*base)
            feeds = [*base, x]
        else:
            x = self.probe_input(batch, size, seed)
            feeds = self.feeds(x)
        shown = list((x if x is not None else feeds[0]).shape)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            src = self.reference if self.reference is not None else str(self.path)
            sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
            arrays = _as_session_types(sess, {t.name: f.cpu().numpy() for t, f in zip(self.inputs, feeds)})
            try:
                ref = sess.run(None, arrays)
            except Exception:
                if batch == 1:
                    raise
                # the file fixes batch 1 (vizcore made it symbolic): compare sample by sample
                runs = [sess.run(None, {k: v[i:i + 1] for k, v in arrays.items()}) for i in range(batch)]
                ref = [np.concatenate(parts) for parts in zip(*runs)]
        except Exception as exc:
            why = oneline(exc, 300, typed=False)
            return {"available": False, "reason": f"onnxruntime could not run the model: {why}"}
        try:
            with torch.no_grad():
                got = self.module(*feeds)
        except Exception as exc:  # the converted graph itself fails (e.g. batch 1 baked in): a result, not a crash
            return {"available": True, "onnxruntime": ort.__version__, "input_shape": shown, "seed": seed,
                    "max_abs_diff": float("inf"), "per_output": {},
                    "error": f"the converted graph fails: {oneline(exc)}"}
        got = list(got) if isinstance(got, (tuple, list)) else [got]
        diffs = {}
        names = [o.name for o in sess.get_outputs()]
        for name, r, t in zip(names, ref, got):
            t = t.detach().float().cpu().numpy()
            if r.shape != t.shape:
                diffs[name] = float("inf")
            else:
                diffs[name] = float(np.max(np.abs(r.astype(np.float64) - t))) if r.size else 0.0
        worst = max(diffs.values()) if diffs else 0.0
        return {"available": True, "onnxruntime": ort.__version__, "input_shape": shown, "seed": seed,
                "max_abs_diff": worst, "per_output": diffs}

    def summary(self) -> dict[str, Any]:
        """Model facts as a JSON-ready dict (inspect --json, manifests, reports)."""
        return {"path": str(self.path), "sha256": self.sha256, "producer": self.producer, "opset": self.opset,
                "ir_version": self.ir_version, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs], "parameters": self.param_count,
                "metadata": self.metadata, "prepasses": [{"name": n, "changes": c} for n, c in self.prepasses],
                "layout": self.layout.name if self.layout is not None else None,
                "unreachable": [{"name": n, "op_type": o, "reason": r} for n, o, r in self.unreachable]}


def batch_axis(both: tuple[int, ...], one: tuple[int, ...]) -> int | None:
    """The axis that holds the batch: the one where a batch-2 output has 2 and the batch-1 output 1, all other
    dims equal (dim 0 first; time-major sequence outputs have it at 1). None if there is no such axis."""
    if len(both) != len(one):
        return None
    for a in range(len(both)):
        if both[a] == 2 and one[a] == 1 and all(b == o for i, (b, o) in enumerate(zip(both, one)) if i != a):
            return a
    return None


def _as_session_types(sess: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds cast to the element types the onnxruntime session declares (an fp16 file that vizcore runs in
    float32 still wants float16 inputs)."""
    want = {i.name: i.type for i in sess.get_inputs()}
    return {k: v.astype(np.float16) if want.get(k) == "tensor(float16)" else v for k, v in arrays.items()}


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (tuple, list)) else x


def _first_tensor(x: Any) -> torch.Tensor:
    while isinstance(x, (tuple, list)):
        x = x[0]
    return x


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


# -- loading -----------------------------------------------------------------------------------------------------
def _read(path: Path) -> tuple[onnx.ModelProto, bytes]:
    require_readable(path, "model file")  # not a FIFO, a device or a folder: checked before any read
    data = read_regular(path)
    if not data:
        raise ModelLoadError(f"{path} is empty", "re-export the model")
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not an ONNX model (it could not be parsed: {type(exc).__name__})",
                             "is the file truncated, or a different format?") from exc
    if not proto.graph.node and not proto.graph.input:
        raise ModelLoadError(f"{path} is not an ONNX model (no graph in it)", "is it a different format?")
    proto_check.repair_text(proto)  # invalid UTF-8 names come back as bytes: make them \xNN text
    return proto, data


def _load_external(proto: onnx.ModelProto, path: Path) -> None:
    """Read every external-data reference (initializers, sparse tensors, attributes, subgraphs) after checking
    that it stays inside the model's folder."""
    base = path.parent.resolve()
    from onnx.external_data_helper import load_external_data_for_tensor

    for owner, t in proto_check.external_tensors(proto):
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        contained(base, loc, owner, path.name)
        try:
            load_external_data_for_tensor(t, str(base))
        except Exception as exc:
            raise ModelLoadError(f"{path.name}: cannot read external data {loc!r} for tensor {t.name!r}: {exc}",
                                 "is the .data file truncated?") from exc
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]


def _shape_of(vi: onnx.ValueInfoProto) -> tuple[tuple[int | str | None, ...], str]:
    tt = vi.type.tensor_type
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "unknown"
    except (KeyError, ValueError, TypeError):  # an elem_type onnx does not know (e.g. 99)
        dtype = f"unknown({tt.elem_type})"
    if tt.elem_type == TensorProto.BFLOAT16:
        dtype = "bfloat16"
    return tuple(dims), dtype


def _opset(proto: onnx.ModelProto, domain: str = "") -> int:
    for o in proto.opset_import:
        if o.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(o.version)
    return 0


#: Why some ops have no converter, for the one-line error (the hint always says how to add one).
_WHY = {
    "If": "data-dependent control flow", "Loop": "data-dependent control flow", "Scan": "a loop over a subgraph",
    "RNN": "recurrent layer",
}
CONVERTER_HINT = ("add a converter in a plugin (hook vizcore_add_onnx_converters, see vizcore/hookspecs.py), "
                  "or re-export the model without this op")


def _why(node: onnx.NodeProto) -> str:
    """' (what kind of op it is)' for ops known to lack a converter; for a Loop, why it was not unrolled."""
    refused = loops.refusal(node) if node.op_type == "Loop" else None
    if refused:
        return f" (control flow not unrolled: {printable(refused)})"
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
        raise UnsupportedOpError(f"no converter for {_op_label(n, opsets)}{_why(n)} in node {name!r}{more}",
                                 CONVERTER_HINT)


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


def _apply_prepasses(proto: onnx.ModelProto, passes: Sequence[Prepass]) -> list[tuple[str, int]]:
    done = []
    for p in sorted(passes, key=lambda p: (p.order, p.name)):
        try:
            n = int(p.fn(proto) or 0)
        except Exception as exc:
            raise ModelLoadError(f"pre-pass {p.name!r} failed: {type(exc).__name__}: {exc}",
                                 "report this with the model, or disable the plugin that provides it") from exc
        done.append((p.name, n))
    return done


def _convert(proto: onnx.ModelProto, names: Sequence[str] | None, converters: Sequence[Converter]) -> fx.GraphModule:
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


def _display_names(nodes: Sequence[onnx.NodeProto], inits: set[str] = frozenset()) -> list[str]:
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


def _shapes(gm: fx.GraphModule, feeds: list[torch.Tensor]) -> dict[str, tuple[int, ...] | None]:
    shapes: dict[str, tuple[int, ...] | None] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            shapes[n.name] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            return out

    with torch.no_grad():
        Recorder(gm).run(*feeds)
    return shapes


def _channel_last(model: Model, gm: fx.GraphModule, shapes: dict[str, tuple[int, ...] | None],
                  size: int | Sequence[int] | None) -> set[str]:
    """fx names of the rank-3 tensors laid out (N, L, C) in a sequence model: probed at a second length, their dim 1
    follows the length and dim 2 stays (a text encoder's hidden states, the Dense layers of an NLC signal model)."""
    batch = model.probe_batch
    if model.has_float_input:
        if model.layout is None or model.layout.natural_rank != 3 or model.fixed_size:
            return set()
        length = int(model.input_shape(batch, size)[-1])
        make = lambda: model.feeds(model.probe_input(batch, length + 8))  # noqa: E731
    elif model.tokens:
        make = lambda: [model.default_feed(t, batch, 24) for t in model.inputs]  # noqa: E731  (the first: 16)
    else:
        return set()
    try:
        other = _shapes(gm, make())
    except Exception:  # a graph that runs at one length only: its tensors keep dim 1 as the channel axis
        return set()
    return {k for k, a in shapes.items() if a is not None and len(a) == 3 and (b := other.get(k)) is not None
            and len(b) == 3 and a[0] == b[0] and a[1] != b[1] and a[2] == b[2]}


def _cut_unconvertible(proto: onnx.ModelProto, names: list[str],
                       converters: Sequence[Converter]) -> tuple[list[tuple[str, str, str]], bytes | None]:
    """Cut the graph in front of nodes without a converter, if layers worth visualizing remain before them.

    Returns the removed nodes (display name, op type, why) and the cut graph's bytes for onnxruntime (None if
    nothing was cut). Raises UnsupportedOpError (as `_check_supported`) when nothing visual would be left.
    """
    opsets = {o.domain if o.domain != "ai.onnx" else "": int(o.version) for o in proto.opset_import}

    def ok(n: onnx.NodeProto) -> bool:
        dom = n.domain if n.domain != "ai.onnx" else ""
        return registry.find(n.op_type, opsets.get(dom, 0), dom) is not None

    def why(n: onnx.NodeProto) -> str:
        return f"no converter for {_op_label(n, opsets)}{_why(n)}"

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


def _outputs_one_to_one(gm: fx.GraphModule, proto: onnx.ModelProto) -> None:
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


def _optimize_inner(model: Model, proto: onnx.ModelProto, name: str, ops: list[str], outs_of: list[list[str]],
                    layout: str | None, node_names: Sequence[Sequence[str]]) -> None:
    """Make inner tensor `name` (or the output of the node so named) the optimized input: rewire the module, probe
    its shape (symbolic dims where it changes with the token length), detect its layout."""
    at = next((i for i, outs in enumerate(outs_of) if name in outs), None)
    if at is None:
        at = next((i for names in node_names for i, n in enumerate(names) if n == name and outs_of[i]), None)
        name = outs_of[at][0] if at is not None else name
    fx_node = {n.target.rsplit("/", 1)[-1]: n.name for n in model.module.graph.nodes
               if n.op == "call_module"}.get(f"n{at}") if at is not None else None
    if fx_node is None or len(outs_of[at]) != 1:
        known = [o for outs in outs_of for o in outs]
        hint = closest(name, known)
        raise TargetError(f"no single-output node makes tensor {name!r}",
                          f"did you mean {hint[0]!r}?" if hint else "tensor names: `vizcore inspect MODEL --all`")
    source = inputs_mod.tap(model.module, fx_node)
    with torch.no_grad():
        a, b = (source(*[model.default_feed(t, 1, n) for t in model.inputs]) for n in (16, 24))
    if not (isinstance(a, torch.Tensor) and a.is_floating_point()):
        raise TargetError(f"tensor {name!r} is not a float tensor: gradient ascent cannot optimize it",
                          "pick a float tensor, such as an embedding output")
    dims = tuple("batch" if i == 0 else (int(x) if x == y else "len") for i, (x, y) in enumerate(zip(a.shape, b.shape)))
    model.optimized = TensorInfo(name, dims, "float32")
    model.source = source
    if ops[at] == "Gather":
        model.embedding = inputs_mod.embedding_table(proto, proto.graph.node[at])
    if layout is None and len(dims) == 3 and ops[at] == "Gather":
        layout = "NLC"  # an embedding lookup: (N, tokens, features)
    model.layout = layouts.detect(proto.graph, name, dims, {}, layout)
    inputs_mod.rewire(model.module, fx_node)


def _detect_layout(proto: onnx.ModelProto, inputs: list[TensorInfo], metadata: dict[str, str],
                   layout: str | None) -> layouts.Layout | None:
    first = next((t for t in inputs if t.is_float), None)
    if first is None:
        return None
    return layouts.detect(proto.graph, first.name, first.shape, metadata, layout)


def load(path: str | os.PathLike[str], *, size: int | Sequence[int] | None = None, prepasses: Sequence[Prepass] = (),
         converters: Sequence[Converter] = (), layout: str | None = None,
         input_shapes: dict[str, Sequence[int]] | None = None, input: str | None = None,  # noqa: A002
         feeds: dict[str, Any] | None = None) -> Model:
    """Load, validate, pre-pass and convert an ONNX file; raise `ModelLoadError` with a one-line cause if it can't.

    `size` is the spatial size of the probe input used to fill the layer table's shapes, one int or one value
    per spatial dim such as (H, W) (default: the model's fixed size, else 224; 1-D models: from their receptive
    field); a size whose probe input would exceed MAX_PROBE_ELEMENTS is refused. `prepasses` and `converters` are
    applied as given (`vizcore.load` passes those of a plugin manager); onnx2torch's converter table is left as it
    was found. Any unexpected exception from a malformed file becomes a `ModelLoadError` with its first line (the
    cause stays chained).
    `layout` overrides the detected input layout (NCHW, NHWC, NCL, NLC, NF); `input_shapes` ({name: dims}) fixes
    graph input dims (symbolic ones the weights do not determine). Nodes without a converter, and what depends
    on them, are left out when visual layers remain before them (`Model.unreachable` lists them).
    `input` names an inner float tensor to optimize instead of a graph input (a text model's embedding output);
    `feeds` ({input name: array}) gives the other graph inputs (default: token ids 0, 1, ..., masks of ones).
    """
    if size is not None:
        size = inputs_mod.parse_size(size, "size", least=1)
    try:
        return _load(Path(path), size, prepasses, converters, layout=layout, input_shapes=input_shapes, input=input,
                     feeds=feeds)
    except VizcoreError:
        raise
    except (Exception, MemoryError, RecursionError) as exc:
        raise ModelLoadError(f"cannot load {printable(Path(path).name[:200])}: {printable(oneline(exc))}",
                             "the file is malformed; run with --debug for the traceback") from exc


def _check_probe(model: Model, size: int | Sequence[int] | None) -> tuple[int, ...]:
    """The probe input's shape, refused when it would be larger than MAX_PROBE_ELEMENTS."""
    shape = model.input_shape(model.probe_batch, size)
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    if n > MAX_PROBE_ELEMENTS:
        raise OptionError(f"the probe input {list(shape)} would hold {n:,} values ({n * 4 / 2**30:,.1f} GiB as "
                          f"float32), more than the {MAX_PROBE_ELEMENTS:,} vizcore allows",
                          "pass a smaller --size" if size else "the model's fixed input is too large to probe")
    return shape


def _load(path: Path, size: int | Sequence[int] | None, prepasses: Sequence[Prepass],
          converters: Sequence[Converter], *,
          layout: str | None, input_shapes: dict[str, Sequence[int]] | None, input: str | None,  # noqa: A002
          feeds: dict[str, Any] | None) -> Model:
    proto, data = _read(path)
    _load_external(proto, path)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a valid ONNX model: {oneline(exc, 300, typed=False)}",
                             "re-export it, or check it with onnx.checker") from exc
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown"
    metadata = {p.key: p.value for p in proto.metadata_props}
    bad_size = proto_check.metadata_size(metadata.get("vizcore.size"))[1]
    if bad_size:  # a hint, not the model: the model stays usable at the default or --size
        warnings.warn(bad_size, UserWarning, stacklevel=3)
    if not [vi for vi in proto.graph.input if vi.name not in {t.name for t in proto.graph.initializer}]:
        raise ModelLoadError(f"{path.name} has no inputs", "a model to visualize needs an input")
    if input_shapes:
        inputs_mod.apply_shapes(proto, input_shapes)
    inputs_mod.infer_dims(proto)

    done = _apply_prepasses(proto, prepasses)
    inits = {t.name for t in proto.graph.initializer}
    names = _display_names(list(proto.graph.node), inits)
    unreachable, reference = _cut_unconvertible(proto, names, converters)
    inputs = [TensorInfo(vi.name, *_shape_of(vi)) for vi in proto.graph.input if vi.name not in inits]
    outputs = [TensorInfo(vi.name, *_shape_of(vi)) for vi in proto.graph.output]
    found_layout = _detect_layout(proto, inputs, metadata, layout)
    nodes = list(proto.graph.node)
    originals = [n.name for n in nodes]
    outs_of = [list(n.output) for n in nodes]
    ins_of = [list(n.input) for n in nodes]
    ops = [n.op_type for n in nodes]
    for i, n in enumerate(nodes):
        n.name = f"n{i}"  # predictable fx names; the model's own names stay in the layer table
    gm = _convert(proto, names, converters)
    _outputs_one_to_one(gm, proto)

    model = Model(path=path, sha256=hashlib.sha256(data).hexdigest(), producer=producer,
                  opset=_opset(proto), ir_version=int(proto.ir_version), inputs=inputs, outputs=outputs,
                  metadata=metadata, layers=[], module=gm, prepasses=done, layout=found_layout,
                  unreachable=unreachable, reference=reference, tokens=inputs_mod.token_inputs(proto),
                  given={k: torch.as_tensor(v) for k, v in inputs_mod.check_feeds(proto, feeds or {}).items()})
    if input is not None:
        _optimize_inner(model, proto, input, ops, outs_of, layout, [originals, names])
    if model.layout is not None and model.layout.natural_rank == 3 and model.fixed_size is None:
        model.default_length = inputs_mod.receptive_length(proto)
    has_float = model.has_float_input
    if has_float:
        _check_probe(model, size)
    elif not all(t.dtype in _ID_TYPES for t in inputs):
        model.input  # noqa: B018  raises: a dtype that is neither float nor ids/masks (strings, unknown types)
    try:
        probe = (model.feeds(model.probe_input(model.probe_batch, size)) if has_float else
                 [model.default_feed(t, model.probe_batch) for t in inputs])
        shapes = _shapes(gm, probe)
    except Exception as exc:
        shape = list(model.input_shape(model.probe_batch, size)) if has_float else "default"
        raise ModelLoadError(f"the converted graph does not run on a {shape} input: "
                             f"{oneline(exc)}",
                             "pass the size the model expects, or run with --debug") from exc
    _fill_layers(model, shapes, _channel_last(model, gm, shapes, size), names, ops, outs_of, ins_of, originals)
    return model


def _fill_layers(model: Model, shapes: dict[str, tuple[int, ...] | None], last: set[str], names: list[str],
                 ops: list[str], outs_of: list[list[str]], ins_of: list[list[str]], originals: list[str]) -> None:
    """The layer table (one Layer per converted node, channel-last ones shown channels first) and its lookup
    by name, output tensor name and the export's own node name."""
    fx_names = {n.target.rsplit("/", 1)[-1]: n.name for n in model.module.graph.nodes if n.op == "call_module"}
    layers, aliases = [], []
    for i, name in enumerate(names):
        fxn = fx_names.get(f"n{i}")
        if fxn is None:
            continue
        shape = shapes.get(fxn)
        shape = (shape[0], shape[2], shape[1]) if fxn in last and shape else shape
        layers.append(Layer(index=len(layers), name=name, op_type=ops[i], output=outs_of[i][0] if outs_of[i] else "",
                            fx_name=fxn, shape=shape, inputs=tuple(ins_of[i]), channel_last=fxn in last))
        aliases.append(originals[i])
    model.layers = layers
    by_key: dict[str, Layer] = {}
    for l in layers:
        by_key.setdefault(l.name, l)
    for l in layers:
        by_key.setdefault(l.output, l)
    for l, original in zip(layers, aliases):  # a dynamo export's own node names (node_Conv_12) stay addressable
        if original:
            by_key.setdefault(original, l)
    model._by_key = by_key
