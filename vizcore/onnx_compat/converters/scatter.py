"""ScatterND (11-18, every reduction incl. max/min of 18) and ScatterElements (11-18), out of place so that
autograd flows to both the data and the updates."""

from __future__ import annotations

import math
import warnings

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import result

_REDUCE = {"mul": "prod", "max": "amax", "min": "amin", "add": "sum"}


class ScatterND(nn.Module):
    """ONNX ScatterND: indices (..., k) address the first k dims of data."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        if reduction not in ("none", *_REDUCE):
            raise NotImplementedError(f"ScatterND reduction {reduction!r} is not supported")
        self.reduction = reduction

    def forward(self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        k = indices.shape[-1]
        idx = indices.reshape(-1, k).long()
        lead = data.shape[:k]
        idx = torch.where(idx < 0, idx + torch.tensor(lead, device=idx.device), idx)
        upd = updates.reshape(-1, *data.shape[k:])
        if self.reduction in ("none", "add"):
            return data.index_put(tuple(idx.T), upd, accumulate=self.reduction == "add")
        strides = torch.tensor([math.prod(lead[j + 1:]) for j in range(k)], device=idx.device)
        flat = data.reshape(-1, *data.shape[k:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "index_reduce() is in beta"
            out = flat.index_reduce(0, (idx * strides).sum(dim=1), upd, _REDUCE[self.reduction], include_self=True)
        return out.reshape(data.shape)


class ScatterElements(nn.Module):
    """ONNX ScatterElements: torch.scatter / scatter_reduce along `axis`."""

    def __init__(self, axis: int, reduction: str) -> None:
        super().__init__()
        if reduction not in ("none", *_REDUCE):
            raise NotImplementedError(f"ScatterElements reduction {reduction!r} is not supported")
        self.axis, self.reduction = axis, reduction

    def forward(self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        axis = self.axis % data.dim()
        idx = indices.long()
        idx = torch.where(idx < 0, idx + data.shape[axis], idx)
        if self.reduction == "none":
            return data.scatter(axis, idx, updates)
        return data.scatter_reduce(axis, idx, updates, _REDUCE[self.reduction], include_self=True)


@converter("ScatterND", 11, 13, 16, override=True)
@converter("ScatterND", 18)
def convert_scatter_nd(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ScatterND with reduction none/add/mul/max/min."""
    return result(ScatterND(node.attributes.get("reduction", "none")), node)


@converter("ScatterElements", 11, 13, 16, 18)
@converter("Scatter", 9)
def convert_scatter_elements(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ScatterElements (and the deprecated Scatter@9) with reduction none/add/mul/max/min."""
    return result(ScatterElements(int(node.attributes.get("axis", 0)), node.attributes.get("reduction", "none")), node)
