"""ONNX file -> `Model`: validated, pre-passed, converted to a torch fx graph, with a layer table and graph cuts.

Nothing downstream touches ONNX protos: the engine, checks and reports see `Model.layers`, `Model.module` and
`Model.cut_at`.
"""

from __future__ import annotations

import hashlib
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

from . import proto_check
from .errors import LayerNotFoundError, ModelLoadError, OptionError, UnsupportedOpError, VizcoreError, closest
from .inputs import contained, read_regular, require_readable
from .onnx_compat import Converter, Prepass, registry
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
                "shape": list(self.shape) if self.shape is not None else None, "channels": self.channels}


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
        """The one float input that gradient ascent optimizes (the first float input)."""
        for t in self.inputs:
            if t.is_float:
                return t
        t = self.inputs[0]
        raise ModelLoadError(f"input {t.name!r} has dtype {t.dtype}: gradient ascent needs a float input",
                             "export the model with a float32 image input")

    @property
    def param_count(self) -> int:
        """Number of weights (parameters and weight buffers) in the converted graph."""
        n = sum(p.numel() for p in self.module.parameters())
        n += sum(b.numel() for b in self.module.buffers() if b.is_floating_point())
        return n

    @property
    def probe_batch(self) -> int:
        """The batch of the probe that fills the layer table: 1, or the input's fixed batch size."""
        d = self.input.shape[0] if self.input.shape else 1
        return d if isinstance(d, int) and d > 0 else 1

    @property
    def fixed_size(self) -> tuple[int, ...] | None:
        """The input's static spatial size, if the model fixes it (else None: any size works)."""
        dims = self.input.shape[2:]
        return tuple(dims) if dims and all(isinstance(d, int) and d > 0 for d in dims) else None

    def input_shape(self, batch: int = 1, size: int | Sequence[int] | None = None) -> tuple[int, ...]:
        """A concrete input shape: symbolic batch -> `batch`, symbolic spatial dims -> `size` (default 224)."""
        shape = list(self.input.shape)
        fixed = self.fixed_size
        spatial = len(shape) - 2
        if size is None:
            meta = proto_check.metadata_size(self.metadata.get("vizcore.size"))[0]
            hw = list(fixed) if fixed else [meta or DEFAULT_SPATIAL] * spatial
        elif isinstance(size, int):
            hw = [size] * spatial
        else:
            hw = list(size)
        out = []
        for i, d in enumerate(shape):
            if i == 0:
                out.append(batch)
            elif isinstance(d, int) and d > 0 and (i < 2 or fixed):
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

        It shares parameters with `self.module` (no copy) and never computes nodes after the deepest layer.
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
            outs.append(node)
        g.output(tuple(outs))
        sub = fx.GraphModule(self.module, g)
        sub.graph.eliminate_dead_code()
        sub.delete_all_unused_submodules()
        sub.recompile()
        return sub

    # -- checks -------------------------------------------------------------------------------------------------
    def probe_input(self, batch: int = 1, size: int | None = None, seed: int = 0) -> torch.Tensor:
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

    def feeds(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All graph inputs for input `x` (other inputs zero), on the module's device."""
        dev = self.device
        return [x.to(dev) if t is self.input else _zeros_for(t, x.shape[0]).to(dev) for t in self.inputs]

    def run(self, x: torch.Tensor) -> Any:
        """The full converted graph on input `x` (other inputs, if any, zero)."""
        return self.module(*self.feeds(x))

    @cached_property
    def batch_ok(self) -> bool:
        """Whether the converted graph runs at batch > 1 and gives per-element results equal to batch 1."""
        if isinstance(self.input.shape[0], int) and self.input.shape[0] > 0:
            return self.input.shape[0] > 1
        x = self.probe_input(batch=2, size=64 if self.fixed_size is None else None)
        try:
            with torch.no_grad():
                both = _first_tensor(self.run(x))
                one = _first_tensor(self.run(x[1:2]))
            if both.shape[0] != 2:
                return False
            # a graph that bakes batch 1 in fails or gives a different answer; GPU numerics (TF32, algorithm
            # choice per batch size) differ by far less, so compare relative to the output's scale
            scale = float(one.abs().max()) + 1e-6
            return float((both[1:2].float() - one.float()).abs().max()) <= 1e-2 * scale
        except Exception:
            return False

    def fidelity(self, seed: int = 0, batch: int = 1, size: int | None = None) -> dict[str, Any]:
        """Max abs difference between the converted graph and onnxruntime on a seeded random input."""
        try:
            import onnxruntime as ort
        except ImportError:
            return {"available": False, "reason": "onnxruntime is not installed (pip install onnxruntime)"}
        x = self.probe_input(batch, size, seed)
        feeds = self.feeds(x)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
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
            return {"available": False, "reason": f"onnxruntime could not run the model: {str(exc).splitlines()[0]}"}
        try:
            with torch.no_grad():
                got = self.module(*feeds)
        except Exception as exc:  # the converted graph itself fails (e.g. batch 1 baked in): a result, not a crash
            return {"available": True, "onnxruntime": ort.__version__, "input_shape": list(x.shape), "seed": seed,
                    "max_abs_diff": float("inf"), "per_output": {},
                    "error": f"the converted graph fails: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        got = list(got) if isinstance(got, (tuple, list)) else [got]
        diffs = {}
        for info, r, t in zip(self.outputs, ref, got):
            t = t.detach().float().cpu().numpy()
            if r.shape != t.shape:
                diffs[info.name] = float("inf")
            else:
                diffs[info.name] = float(np.max(np.abs(r.astype(np.float64) - t))) if r.size else 0.0
        worst = max(diffs.values()) if diffs else 0.0
        return {"available": True, "onnxruntime": ort.__version__, "input_shape": list(x.shape), "seed": seed,
                "max_abs_diff": worst, "per_output": diffs}

    def summary(self) -> dict[str, Any]:
        """Model facts as a JSON-ready dict (inspect --json, manifests, reports)."""
        return {"path": str(self.path), "sha256": self.sha256, "producer": self.producer, "opset": self.opset,
                "ir_version": self.ir_version, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs], "parameters": self.param_count,
                "metadata": self.metadata, "prepasses": [{"name": n, "changes": c} for n, c in self.prepasses]}


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


def _zeros_for(t: TensorInfo, batch: int) -> torch.Tensor:
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
        why = f" ({_WHY[n.op_type]})" if n.op_type in _WHY else ""
        name = names[i] if names is not None else (n.name or "(unnamed)")
        raise UnsupportedOpError(f"no converter for {_op_label(n, opsets)}{why} in node {name!r}{more}",
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
            msg = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
            raise UnsupportedOpError(f"cannot convert {label} in node {name!r}: {type(cause).__name__}"
                                     + (f": {msg}" if msg else ""), CONVERTER_HINT) from exc
        raise ModelLoadError(f"conversion to torch failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
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


def load(path: str | os.PathLike[str], *, size: int | None = None, prepasses: Sequence[Prepass] = (),
         converters: Sequence[Converter] = ()) -> Model:
    """Load, validate, pre-pass and convert an ONNX file; raise `ModelLoadError` with a one-line cause if it can't.

    `size` is the spatial size of the probe input used to fill the layer table's shapes (default: the model's
    fixed size, else 224); a size whose probe input would exceed MAX_PROBE_ELEMENTS is refused. `prepasses` and
    `converters` are applied as given (`vizcore.load` passes those of a plugin manager); onnx2torch's converter
    table is left as it was found. Any unexpected exception from a malformed file becomes a `ModelLoadError` with
    its first line (the cause stays chained).
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise OptionError(f"size must be a positive number of pixels, not {size!r}", "e.g. --size 224")
    try:
        return _load(Path(path), size, prepasses, converters)
    except VizcoreError:
        raise
    except (Exception, MemoryError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelLoadError(f"cannot load {printable(Path(path).name[:200])}: {type(exc).__name__}"
                             + (f": {printable(first)}" if first else ""),
                             "the file is malformed; run with --debug for the traceback") from exc


def _check_probe(model: Model, size: int | None) -> tuple[int, ...]:
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


def _load(path: Path, size: int | None, prepasses: Sequence[Prepass], converters: Sequence[Converter]) -> Model:
    proto, data = _read(path)
    _load_external(proto, path)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path.name} is not a valid ONNX model: {first[:300]}",
                             "re-export it, or check it with onnx.checker") from exc
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown"
    metadata = {p.key: p.value for p in proto.metadata_props}
    bad_size = proto_check.metadata_size(metadata.get("vizcore.size"))[1]
    if bad_size:  # a hint, not the model: the model stays usable at the default or --size
        warnings.warn(bad_size, UserWarning, stacklevel=3)
    if not [vi for vi in proto.graph.input if vi.name not in {t.name for t in proto.graph.initializer}]:
        raise ModelLoadError(f"{path.name} has no inputs", "a model to visualize needs an input")

    done = _apply_prepasses(proto, prepasses)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [TensorInfo(vi.name, *_shape_of(vi)) for vi in proto.graph.input if vi.name not in inits]
    outputs = [TensorInfo(vi.name, *_shape_of(vi)) for vi in proto.graph.output]
    nodes = list(proto.graph.node)
    names = _display_names(nodes, inits)
    originals = [n.name for n in nodes]
    outs_of = [list(n.output) for n in nodes]
    ins_of = [list(n.input) for n in nodes]
    ops = [n.op_type for n in nodes]
    for i, n in enumerate(nodes):
        n.name = f"n{i}"  # predictable fx names; the model's own names stay in the layer table
    gm = _convert(proto, names, converters)

    model = Model(path=path, sha256=hashlib.sha256(data).hexdigest(), producer=producer,
                  opset=_opset(proto), ir_version=int(proto.ir_version), inputs=inputs, outputs=outputs,
                  metadata=metadata, layers=[], module=gm, prepasses=done)
    _check_probe(model, size)
    try:
        shapes = _shapes(gm, model.feeds(model.probe_input(model.probe_batch, size)))
    except Exception as exc:
        shape = list(model.input_shape(model.probe_batch, size))
        raise ModelLoadError(f"the converted graph does not run on a {shape} input: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                             "pass the size the model expects, or run with --debug") from exc
    fx_names = {n.target.rsplit("/", 1)[-1]: n.name for n in gm.graph.nodes if n.op == "call_module"}
    layers, aliases = [], []
    for i, name in enumerate(names):
        fxn = fx_names.get(f"n{i}")
        if fxn is None:
            continue
        shape = shapes.get(fxn)
        layers.append(Layer(index=len(layers), name=name, op_type=ops[i], output=outs_of[i][0] if outs_of[i] else "",
                            fx_name=fxn, shape=shape, inputs=tuple(ins_of[i])))
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
    return model
