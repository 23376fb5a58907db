"""Pad at every version since 2: `axes` (18), mode `wrap` (19), negative pads (crops), and edge/reflect/wrap on
any axis, not only the last ones torch's F.pad allows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import as_list, ints_attr, result, split_inputs

MODES = ("constant", "reflect", "edge", "wrap")


def _source_index(n: int, begin: int, end: int, mode: str, device: torch.device) -> torch.Tensor:
    i = torch.arange(-begin, n + end, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return torch.remainder(i, n)
    period = 2 * (n - 1)
    j = torch.remainder(i, period)
    return torch.where(j > n - 1, period - j, j)


def pad(x: torch.Tensor, pairs: dict[int, tuple[int, int]], mode: str, value: float | torch.Tensor = 0.0
        ) -> torch.Tensor:
    """Pad (or crop, for negative amounts) axis -> (begin, end) of `x` with an ONNX mode."""
    pairs = {a % max(x.dim(), 1): p for a, p in pairs.items() if p != (0, 0)}
    if not pairs:
        return x
    if mode == "constant":
        flat: list[int] = []
        for axis in range(x.dim() - 1, min(pairs) - 1, -1):
            flat.extend(pairs.get(axis, (0, 0)))
        v = float(value) if not isinstance(value, torch.Tensor) else float(value.reshape(-1)[0])
        return F.pad(x, flat, value=v)
    for axis, (begin, end) in pairs.items():
        x = x.index_select(axis, _source_index(x.shape[axis], begin, end, mode, x.device))
    return x


class OnnxPad(nn.Module):
    """ONNX Pad with constant or run-time pads/value/axes."""

    def __init__(self, mode: str, pads: Sequence[int] | None, value: float | None,
                 axes: Sequence[int] | None, dynamic: Sequence[str]) -> None:
        super().__init__()
        if mode not in MODES:
            raise NotImplementedError(f"Pad mode {mode!r} is not supported")
        self.mode, self.pads, self.value = mode, None if pads is None else list(pads), value
        self.axes, self.dynamic = None if axes is None else list(axes), tuple(dynamic)

    def forward(self, x: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
        given = dict(zip(self.dynamic, args))
        pads = as_list(given["pads"]) if given.get("pads") is not None else self.pads
        value = given.get("value")
        value = self.value if value is None else value
        axes = as_list(given["axes"]) if given.get("axes") is not None else self.axes
        if axes is None:
            axes = list(range(x.dim()))
        k = len(axes)
        pairs = {a: (pads[i], pads[i + k]) for i, a in enumerate(axes)}
        return pad(x, pairs, self.mode, 0.0 if value is None else value)


@converter("Pad", 2, 11, 13, override=True)
@converter("Pad", 18, 19, 21, 23)
def convert_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Pad: constant inputs are baked in, the others are passed at run time."""
    mode = node.attributes.get("mode", "constant")
    if "pads" in node.attributes:  # Pad@2: everything is an attribute
        module = OnnxPad(mode, ints_attr(node, "pads"), float(node.attributes.get("value", 0.0)), None, ())
        return result(module, node, node.input_values[:1])
    inputs, dynamic, values = split_inputs(node, graph, ((1, "pads"), (2, "value"), (3, "axes")))
    pads = as_list(values["pads"]) if "pads" in values else None
    value = float(values["value"].reshape(-1)[0]) if "value" in values and values["value"].size else None
    axes = as_list(values["axes"]) if "axes" in values else None
    return result(OnnxPad(mode, pads, value, axes, dynamic), node, inputs)
