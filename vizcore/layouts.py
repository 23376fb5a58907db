"""Input layouts: the model's own (NHWC, NLC, a flat feature vector) vs the natural one vizcore optimizes in.

Optimization always runs on (N, C, H, W) images or (N, C, L) signals; `Layout.to_graph` hands the graph its own
layout, `Layout.natural` maps the graph's input dims to the natural ones. Detected from the ONNX input shape, from a
Transpose right after the input (the tf2onnx / Keras pattern in front of the first Conv), from metadata
(`vizcore.layout`), or given (`load(path, layout=...)`, `--layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from .errors import OptionError

if TYPE_CHECKING:
    import torch

Dim = int | str | None


@dataclass(frozen=True)
class Layout:
    """One input layout: `name`, and `perm` taking the natural dims to the graph's (None: a reshape, see NF)."""

    name: str
    rank: int
    perm: tuple[int, ...] | None

    @property
    def identity(self) -> bool:
        """Whether the graph takes the natural layout as it is."""
        return self.perm is not None and self.perm == tuple(range(self.rank))

    @property
    def natural_rank(self) -> int:
        """Rank of the natural layout (a flat feature vector becomes a 1-channel signal: rank 3)."""
        return 3 if self.name == "NF" else self.rank

    def to_graph(self, x: torch.Tensor) -> torch.Tensor:
        """A natural-layout tensor -> the graph's layout (torch tensors; numpy arrays take `transpose(perm)`)."""
        if self.name == "NF":
            return x.reshape(x.shape[0], -1)
        return x if self.identity else x.permute(*self.perm)

    def natural(self, dims: Sequence[Dim]) -> tuple[Dim, ...]:
        """The graph input's dims in natural order (N, C, spatial...)."""
        dims = tuple(dims)
        if self.name == "NF":
            return (dims[0], 1, dims[1])
        return tuple(dims[self.perm.index(i)] for i in range(self.rank))


LAYOUTS = {
    "NCHW": Layout("NCHW", 4, (0, 1, 2, 3)),
    "NHWC": Layout("NHWC", 4, (0, 2, 3, 1)),
    "NCL": Layout("NCL", 3, (0, 1, 2)),
    "NLC": Layout("NLC", 3, (0, 2, 1)),
    "NF": Layout("NF", 2, None),
}
ALIASES = {"NCW": "NCL", "NWC": "NLC", "NC": "NF", "NL": "NF", "CHANNELS_FIRST": None, "CHANNELS_LAST": None}


def parse(text: str, rank: int) -> Layout:
    """'NHWC', 'nlc', 'channels_last', ... for an input of `rank` dims -> Layout (OptionError if it cannot fit)."""
    key = text.strip().upper().replace("-", "_")
    if key in ALIASES:
        alias = ALIASES[key]
        key = alias if alias else {("CHANNELS_FIRST", 4): "NCHW", ("CHANNELS_LAST", 4): "NHWC",
                                   ("CHANNELS_FIRST", 3): "NCL", ("CHANNELS_LAST", 3): "NLC"}.get((key, rank), key)
    layout = LAYOUTS.get(key)
    if layout is None:
        raise OptionError(f"unknown layout {text!r}", f"valid: {', '.join(LAYOUTS)} (or channels_first/last)")
    if layout.rank != rank:
        raise OptionError(f"layout {layout.name} is for rank-{layout.rank} inputs, but the input has rank {rank}",
                          "valid for this input: " + ", ".join(n for n, l in LAYOUTS.items() if l.rank == rank))
    return layout


def default(rank: int) -> Layout | None:
    """The natural layout for an input rank (None: a rank vizcore cannot optimize)."""
    return {4: LAYOUTS["NCHW"], 3: LAYOUTS["NCL"], 2: LAYOUTS["NF"]}.get(rank)


def _transpose_after(graph: onnx.GraphProto, name: str) -> tuple[int, ...] | None:
    """The perm of a Transpose that is the only consumer of tensor `name` (through Cast/Identity), if any."""
    current = name
    for _ in range(3):
        users = [n for n in graph.node if current in n.input]
        if len(users) != 1:
            return None
        n = users[0]
        if n.op_type == "Transpose":
            for a in n.attribute:
                if a.name == "perm":
                    return tuple(a.ints)
            return None
        if n.op_type not in ("Cast", "Identity"):
            return None
        current = n.output[0]
    return None


def detect(graph: onnx.GraphProto, name: str, dims: Sequence[Dim], metadata: dict[str, str],
           override: str | None = None) -> Layout | None:
    """The layout of graph input `name` with `dims`: override > metadata > a Transpose after it > its shape."""
    rank = len(dims)
    if override:
        return parse(override, rank)
    if metadata.get("vizcore.layout"):
        return parse(metadata["vizcore.layout"], rank)
    if rank == 2:
        return LAYOUTS["NF"]
    perm = _transpose_after(graph, name)
    if rank == 4 and perm == (0, 3, 1, 2):
        return LAYOUTS["NHWC"]
    if rank == 3 and perm == (0, 2, 1):
        return LAYOUTS["NLC"]
    if rank == 3 and _features_last(graph, name):
        return LAYOUTS["NLC"]
    if rank == 3 and not isinstance(dims[1], int) and isinstance(dims[2], int) and dims[2] > 0:
        return LAYOUTS["NLC"]  # (N, L, C): a free length and a fixed channel count, never the other way round
    if rank in (3, 4):
        last, second = dims[-1], dims[1]
        small = (1, 2, 3, 4)
        if isinstance(last, int) and last in small and not (isinstance(second, int) and second in small):
            return LAYOUTS["NHWC" if rank == 4 else "NLC"]
    return default(rank)


def _features_last(graph: onnx.GraphProto, name: str) -> bool:
    """Whether the input feeds a MatMul / Gemm / LayerNormalization (features on the last axis: (N, L, C))."""
    return any(n.op_type in ("MatMul", "Gemm", "LayerNormalization") and n.input and n.input[0] == name
               for n in graph.node)
