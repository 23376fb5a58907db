"""Built-in ModelProto rewrites that make exported graphs convertible, applied in `order` before conversion."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..hookspecs import hookimpl
from . import Prepass


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn `Constant` nodes and `Identity` nodes over initializers back into initializers.

    onnx2torch's Conv/ConvTranspose read weights from initializers only: the TorchScript exporter's de-duplicated
    weights (Identity) and Paddle's weights (Constant) would otherwise fail with KeyError (onnx2torch #156).
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    keep, changes = [], 0
    for node in g.node:
        out = node.output[0] if node.output else ""
        if out in graph_outputs:
            keep.append(node)
            continue
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            arr = None
            if attr.name == "value":
                arr = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_float", "value_floats"):
                arr = np.asarray(onnx.helper.get_attribute_value(attr), dtype=np.float32)
            elif attr.name in ("value_int", "value_ints"):
                arr = np.asarray(onnx.helper.get_attribute_value(attr), dtype=np.int64)
            if arr is not None:
                t = numpy_helper.from_array(arr, out)
                g.initializer.append(t)
                inits[out] = t
                changes += 1
                continue
        if node.op_type == "Identity" and node.input and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = out
            g.initializer.append(t)
            inits[out] = t
            changes += 1
            continue
        keep.append(node)
    if changes:
        del g.node[:]
        g.node.extend(keep)
    return changes


@hookimpl
def vizcore_add_prepasses() -> list[Prepass]:
    return [Prepass("constants_to_initializers", 10, constants_to_initializers)]
