"""Pre-pass `half_to_float`: fp16 / bf16 graphs -> float32 graphs, so that gradient ascent runs in float32.

Initializers, Constant/ConstantOfShape values, Cast targets (and the dtype attribute of the random/EyeLike ops)
and the declared types of inputs, outputs and value_info all become float32, in subgraphs too. A model from
`onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)` keeps its float32 interface (its
boundary Casts become identities); one with fp16 inputs is then declared float32: `analysis.fidelity` casts its
feeds back to what onnxruntime expects from the original file. The result computes the same function without
the rounding to 11 (fp16) or 8 (bf16) significant bits after every op, so it differs from onnxruntime on the
original file by about that rounding, not by a conversion error.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..hookspecs import hookimpl
from . import Prepass

HALF = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
_DTYPE_OPS = {"Cast": "to", "RandomNormal": "dtype", "RandomUniform": "dtype", "RandomNormalLike": "dtype",
              "RandomUniformLike": "dtype", "EyeLike": "dtype"}


def _float_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def _value_infos(g: onnx.GraphProto) -> int:
    n = 0
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.elem_type in HALF:
            tt.elem_type = TensorProto.FLOAT
            n += 1
    return n


def _node(node: onnx.NodeProto) -> int:
    n = 0
    key = _DTYPE_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    for a in node.attribute:
        if key and a.name == key and a.type == onnx.AttributeProto.INT and a.i in HALF:
            a.i = TensorProto.FLOAT
            n += 1
        elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in HALF:
            a.t.CopyFrom(_float_tensor(a.t))
            n += 1
        elif a.type == onnx.AttributeProto.GRAPH:
            n += _graph(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            n += sum(_graph(sub) for sub in a.graphs)
    return n


def _graph(g: onnx.GraphProto) -> int:
    n = _value_infos(g)
    for i, t in enumerate(g.initializer):
        if t.data_type in HALF:
            g.initializer[i].CopyFrom(_float_tensor(t))
            n += 1
    return n + sum(_node(node) for node in g.node)


def half_to_float(model: onnx.ModelProto) -> int:
    """Rewrite every fp16/bf16 tensor, attribute and declared type to float32; returns the number of rewrites."""
    return _graph(model.graph)


@hookimpl
def vizcore_add_prepasses() -> list[Prepass]:
    return [Prepass("half_to_float", 5, half_to_float)]
