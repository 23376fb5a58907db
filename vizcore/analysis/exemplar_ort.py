"""The exemplar pass in onnxruntime: the model's own graph with, per requested layer, its maximum over positions
and where it is, computed inside the graph (ArgMax, then GatherElements of that one value).

Why: the pass is forward-only, and onnxruntime's fused kernels run a CNN such as MobileNetV2 about 4x faster than
the converted torch graph on a CPU; the layers' tensors never leave onnxruntime, only (N, C) maxima and positions
do. Used when every layer is a channels-first tensor of the file (a layer of the converted graph only, an inner
optimized tensor or a channel-last layer: the torch pass is used instead, see `reducer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from .. import onnxfile
from ..errors import VizcoreError
from ..model import Layer, Model

Scores = list[tuple[np.ndarray, np.ndarray]]  # per layer: (N, C) maxima, (N, C, D) positions


def reducer(model: Model, layers: Sequence[Layer]) -> Callable[[list[torch.Tensor]], Scores] | None:
    """A function from the module's feeds to each layer's (maxima, positions), run in onnxruntime; None when the
    torch pass must do it (see the module docstring) or onnxruntime cannot run the extended graph."""
    if model.optimized is not None or not model.reference or onnxfile.runtime_version() is None:
        return None
    if any(lay.channel_last or not lay.shape or len(lay.shape) < 2 for lay in layers):
        return None
    proto = onnx.ModelProto.FromString(model.reference)
    produced = {o for n in proto.graph.node for o in n.output}
    if any(lay.output not in produced for lay in layers):
        return None
    outputs = _extend(proto, layers)
    try:
        sess = onnxfile.session(proto.SerializeToString(), threads=torch.get_num_threads())  # the caller's setting
    except (VizcoreError, ImportError):
        return None
    names = [t.name for t in model.inputs]
    fixed_one = [i.shape[0] == 1 for i in sess.get_inputs() if i.name in names]

    def run(feeds: list[torch.Tensor]) -> Scores:
        arrays = onnxfile.session_feeds(sess, {n: f.cpu().numpy() for n, f in zip(names, feeds)})
        n = len(next(iter(arrays.values())))
        if n > 1 and any(fixed_one):  # the file fixes batch 1: one sample at a time
            parts = [sess.run(outputs, {k: v[i:i + 1] for k, v in arrays.items()}) for i in range(n)]
            got = [np.concatenate(p) if j % 3 != 2 else p[0] for j, p in enumerate(zip(*parts))]
        else:
            got = sess.run(outputs, arrays)
        return [_unpack(got[3 * i:3 * i + 3], lay) for i, lay in enumerate(layers)]

    return run


def _extend(proto: onnx.ModelProto, layers: Sequence[Layer]) -> list[str]:
    """Add, per layer, its maxima over positions, their flat positions and its shape as graph outputs."""
    g = proto.graph
    g.initializer.append(helper.make_tensor("__vizcore_flat", TensorProto.INT64, [3], [0, 0, -1]))
    outputs = []
    for i, lay in enumerate(layers):
        flat, arg, peak, shape = (f"__vizcore_{kind}{i}" for kind in ("flat", "arg", "max", "shape"))
        if len(lay.shape or ()) == 2:
            g.node.append(helper.make_node("Identity", [lay.output], [peak]))
            g.node.append(helper.make_node("Identity", [lay.output], [arg]))
        else:
            g.node.extend([helper.make_node("Reshape", [lay.output, "__vizcore_flat"], [flat]),
                           helper.make_node("ArgMax", [flat], [arg], axis=2, keepdims=1),
                           helper.make_node("GatherElements", [flat, arg], [peak], axis=2)])
        g.node.append(helper.make_node("Shape", [lay.output], [shape]))
        outputs += [peak, arg, shape]
    have = {o.name for o in g.output}
    g.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in have)
    return outputs


def _unpack(got: list[np.ndarray], lay: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float32 maxima and (N, C, D) positions from one layer's three outputs."""
    peak, arg, shape = got
    n = peak.shape[0]
    if len(lay.shape or ()) == 2:
        v = peak.reshape(n, -1).astype(np.float32)
        return v, np.zeros((*v.shape, 0), np.int64)
    spatial = tuple(int(d) for d in shape[2:])
    pos = np.stack(np.unravel_index(arg[..., 0], spatial), -1).astype(np.int64)
    return peak[..., 0].astype(np.float32), pos
