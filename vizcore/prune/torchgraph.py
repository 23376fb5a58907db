"""The differentiable torch graph of an ONNX proto (`vizcore.load` of a temporary copy) for the importance estimate
and the recovery; which torch parameter holds which ONNX initializer, and writing tuned values back."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import ModelLoadError
from ..model import Model
from .runtime import select

#: ops whose float initializers recovery tunes (and must be able to write back): the inputs that are weights
TUNED_OPS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "BatchNormalization": (1, 2)}


def load_proto(model: onnx.ModelProto, size: Sequence[int] | None) -> Model:
    """`vizcore.load` of the proto (written to a temporary file that is removed after loading)."""
    from ..api import load

    with tempfile.TemporaryDirectory(prefix="vizcore-prune-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path))
        return load(path, size=tuple(size) if size else None)


def graph_inputs(m: Model, feed: dict[str, np.ndarray], idx: np.ndarray | slice, device: Any = "cpu"
                 ) -> list[torch.Tensor]:
    """The module's arguments (graph inputs in order) for the samples `idx` of an onnxruntime feed."""
    part = select(feed, idx)
    return [torch.from_numpy(np.ascontiguousarray(part[t.name])).to(device) for t in m.inputs]


def _params_of(m: Model, node: onnx.NodeProto) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters of the module that computes `node`, and the initializers it reads as constants (onnx2torch
    keeps those as buffers read by `get_attr`: made parameters here, so that they can be tuned)."""
    layer = m.by_key.get(node.output[0]) if node.output else None
    if layer is None:
        return []
    mods = dict(m.module.named_modules())
    out: list[tuple[str, torch.nn.Parameter]] = []
    for n in m.module.graph.nodes:
        if n.name != layer.fx_name or n.op != "call_module" or n.target not in mods:
            continue
        out += [(f"{n.target}.{k}", p) for k, p in mods[n.target].named_parameters()]
        for a in n.args:
            if isinstance(a, torch.fx.Node) and a.op == "get_attr":
                owner, _, attr = str(a.target).rpartition(".")
                holder = m.module.get_submodule(owner) if owner else m.module
                v = getattr(holder, attr)
                if attr in holder._buffers and v.is_floating_point():
                    del holder._buffers[attr]
                    holder.register_parameter(attr, torch.nn.Parameter(v.detach().clone(), requires_grad=False))
                out.append((str(a.target), getattr(holder, attr)))
    return out


def weight_map(proto: onnx.ModelProto, m: Model) -> dict[str, tuple[torch.nn.Parameter, bool]]:
    """ONNX initializer name -> (the torch parameter holding it, stored transposed), for every float initializer
    read by a Conv/Gemm/MatMul/BatchNormalization. A parameter is matched by its node (onnx2torch keeps the node's
    output name on the layer) and by equal values; an initializer that cannot be matched is refused loudly."""
    inits = {t.name: t for t in proto.graph.initializer}
    out: dict[str, tuple[torch.nn.Parameter, bool]] = {}
    for node in proto.graph.node:
        if node.op_type not in TUNED_OPS:
            continue
        names = [node.input[k] for k in TUNED_OPS[node.op_type] if k < len(node.input) and node.input[k] in inits
                 and inits[node.input[k]].data_type == onnx.TensorProto.FLOAT]
        params = _params_of(m, node)
        for name in names:
            if name in out:
                continue
            want = numpy_helper.to_array(inits[name])
            hit = _match(want, params)
            if hit is None:
                raise ModelLoadError(f"recovery cannot map initializer {name!r} of {node.op_type} "
                                     f"{node.name or node.output[0]} to a parameter of the torch graph",
                                     "prune without --recover (the weights could not be written back)")
            out[name] = hit
    return out


def _match(want: np.ndarray, params: list[tuple[str, torch.nn.Parameter]]) -> tuple[torch.nn.Parameter, bool] | None:
    for _, p in params:
        have = p.detach().cpu().numpy()
        if have.shape == want.shape and np.array_equal(have, want):
            return p, False
        if have.ndim == 2 and have.shape == want.T.shape and np.array_equal(have, want.T):
            return p, True
    return None


def write_back(proto: onnx.ModelProto, mapping: dict[str, tuple[torch.nn.Parameter, bool]]) -> onnx.ModelProto:
    """A copy of `proto` whose mapped initializers hold the parameters' current values."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for t in m.graph.initializer:
        if t.name in mapping:
            p, transposed = mapping[t.name]
            v = p.detach().cpu().numpy().astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(v.T if transposed else v), t.name))
    return m
