"""Least-squares reconstruction after pruning (He et al. 2017 "Channel Pruning"; ThiNet, Luo et al. 2017): the
layers that *read* pruned channels (dense Conv, Gemm) are re-fitted so that their output on calibration inputs
matches the original model's output at that layer as closely as possible with the input channels that are left.

A Conv is a linear map of its unfolded input patches (im2col), so each reader is a ridge regression, solved in
closed form in float64: rows are seeded sample positions (image, output pixel), X the *pruned* model's input
patches there (earlier readers already re-fitted: errors are compensated in graph order, in one forward pass
whose pre-hooks solve each reader before it runs), Y the *original* model's output there (its kept output
channels). The ridge pulls towards the current weights, so a reader with few rows (a classifier) moves little.
Depthwise convs cannot re-mix channels: their channels are re-fitted at the next dense conv (the projection of an
inverted residual). The fitted weights are written into the ONNX initializers, so onnxruntime sees them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from .graph import Graph, attr
from .torchgraph import graph_inputs, load_proto

#: calibration inputs the regressions are fitted on (one forward pass: they are all in memory at once)
IMAGES = 64
#: sample positions (rows) per reader
ROWS = 8192
#: ridge strength, relative to the mean diagonal of X'X (towards the current weights)
RIDGE = 1e-3
#: a reader is re-fitted only with at least this many rows per weight of an output (fewer: it would fit the
#: calibration inputs rather than the layer; a classifier read once per image is left as it is)
ROWS_PER_INPUT = 2


def readers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The dense readers of channels: Conv with group 1 and Gemm (without transA), constant weights."""
    g = Graph(model)
    out = []
    for n in model.graph.node:
        if len(n.input) < 2 or not g.is_const(n.input[1]):
            continue
        if (n.op_type == "Conv" and int(attr(n, "group", 1)) == 1) or (n.op_type == "Gemm" and
                                                                         not attr(n, "transA", 0)):
            out.append(n)
    return out


def _module(m, out_name: str) -> torch.nn.Module | None:
    """The torch module computing the ONNX tensor `out_name`, if it is a Conv2d (groups 1) or a Linear."""
    layer = m.by_key.get(out_name)
    if layer is None:
        return None
    target = next((n.target for n in m.module.graph.nodes if n.name == layer.fx_name and n.op == "call_module"),
                  None)
    mod = m.module.get_submodule(str(target)) if target is not None else None
    if isinstance(mod, torch.nn.Conv2d) and mod.groups == 1 and mod.padding_mode == "zeros" \
            and not isinstance(mod.padding, str):
        return mod
    return mod if isinstance(mod, torch.nn.Linear) else None


def _patches(mod: torch.nn.Module, x: torch.Tensor, pos: np.ndarray, per: int) -> np.ndarray:
    """The rows of `mod`'s linear map at output positions `pos` (flat over images x output pixels): (rows, K)."""
    if isinstance(mod, torch.nn.Linear):
        return x.reshape(x.shape[0], -1)[torch.from_numpy(pos)].double().numpy()
    img, loc = pos // per, pos % per
    rows = []
    for i in np.unique(img):
        xi = x[int(i):int(i) + 1]
        if mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.padding == (0, 0):
            cols = xi[0].reshape(xi.shape[1], -1)
        else:
            cols = torch.nn.functional.unfold(xi, mod.kernel_size, mod.dilation, mod.padding, mod.stride)[0]
        rows.append(cols[:, torch.from_numpy(loc[img == i])].T.double().numpy())
    return np.concatenate(rows)


def _outputs(y: torch.Tensor, pos: np.ndarray) -> np.ndarray:
    """A reader's output (N, C, ...) at the flat positions `pos`: (rows, C)."""
    n, c = y.shape[:2]
    flat = y.reshape(n, c, -1).permute(0, 2, 1).reshape(-1, c)
    return flat[torch.from_numpy(pos)].double().numpy()


def solve(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: np.ndarray | None, ridge: float = RIDGE
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """min |x w' + b - y|^2 + lam |w - w0|^2 in float64 (x: (R, K), y: (R, O), w0: (O, K), b0: (O,) or None for
    no bias); lam = `ridge` x the mean diagonal of x'x. The weights (O, K) and bias."""
    k = x.shape[1]
    if b0 is not None:
        x = np.hstack([x, np.ones((len(x), 1))])
    a = x.T @ x
    lam = ridge * float(np.trace(a[:k, :k])) / max(k, 1) + 1e-12
    reg = np.zeros(len(a))
    reg[:k] = lam
    prior = w0.T if b0 is None else np.vstack([w0.T, b0[None]])
    rhs = x.T @ y + reg[:, None] * prior
    try:
        sol = np.linalg.solve(a + np.diag(reg), rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(a + np.diag(reg), rhs, rcond=None)[0]
    return sol[:k].T, (sol[k] if b0 is not None else None)


@dataclass
class Reconstructor:
    """The original model's outputs at every dense reader on seeded sample positions of `IMAGES` calibration
    inputs; calling it on a pruned model re-fits that model's readers (see the module doc)."""

    original: onnx.ModelProto
    size: Sequence[int] | None
    feed: dict[str, np.ndarray]
    seed: int = 0
    images: int = IMAGES
    rows: int = ROWS
    ridge: float = RIDGE
    scope: str = "pruned"  # "pruned": readers whose input lost channels; "all": every reader
    idx: np.ndarray = field(init=False)
    targets: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(init=False)  # out -> (positions, Y, C_in)
    calls: int = 0
    fitted: int = 0  # readers re-fitted, over every call
    seconds: float = 0.0

    def __post_init__(self) -> None:
        n = len(next(iter(self.feed.values())))
        rng = np.random.default_rng([self.seed, 23])
        self.idx = np.sort(rng.choice(n, min(n, self.images), replace=False))
        t0 = time.monotonic()
        self.targets = self._capture()
        self.seconds += time.monotonic() - t0

    def _capture(self) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """One forward pass of the original: the sampled outputs of every reader."""
        m = load_proto(self.original, self.size)
        got: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        hooks = []
        for k, node in enumerate(readers(self.original)):
            mod = _module(m, node.output[0])
            if mod is None:
                continue

            def hook(mod, inp, y, name=node.output[0], k=k) -> None:
                total = y.shape[0] * int(np.prod(y.shape[2:]))
                rng = np.random.default_rng([self.seed, k])
                pos = np.sort(rng.choice(total, min(total, self.rows), replace=False))
                got[name] = (pos, _outputs(y, pos), _fan_in(mod))

            hooks.append(mod.register_forward_hook(hook))
        self._forward(m)
        for h in hooks:
            h.remove()
        return got

    def _forward(self, m) -> None:
        with torch.no_grad():
            m.module.eval()
            m.module(*graph_inputs(m, self.feed, self.idx))

    def __call__(self, model: onnx.ModelProto, origin: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
        """`model` (a pruned copy of the original) with its readers re-fitted; `origin`: tensor -> the original
        channel index of each of its channels (identity where missing)."""
        t0 = time.monotonic()
        try:
            return self._refit(model, origin)
        finally:
            self.calls += 1
            self.seconds += time.monotonic() - t0

    def _refit(self, model: onnx.ModelProto, origin: dict[str, np.ndarray] | None) -> onnx.ModelProto:
        m = load_proto(model, self.size)
        fitted: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        hooks = []
        for node in readers(model):
            out = node.output[0]
            mod = _module(m, out)
            if mod is None or out not in self.targets:
                continue
            pos, y, fan_in = self.targets[out]
            keep = (origin or {}).get(out, np.arange(y.shape[1]))
            if len(keep) != _fan_out(mod) or (self.scope == "pruned" and _fan_in(mod) == fan_in) or \
                    len(pos) < ROWS_PER_INPUT * _inputs(mod):
                continue
            hooks.append(mod.register_forward_pre_hook(self._hook(out, pos, y[:, keep], fitted)))
        if not hooks:
            return model
        self._forward(m)
        for h in hooks:
            h.remove()
        self.fitted += len(fitted)
        return _write(model, fitted)

    def to_json(self) -> dict:
        return {"images": len(self.idx), "rows": self.rows, "ridge": self.ridge, "scope": self.scope,
                "calls": self.calls, "readers_fitted": self.fitted, "seconds": self.seconds}

    def _hook(self, out: str, pos: np.ndarray, y: np.ndarray, fitted: dict):
        def pre(mod, inp) -> None:
            x = inp[0]
            per = 1 if isinstance(mod, torch.nn.Linear) else _pixels(mod, x)
            rows = _patches(mod, x, pos, per)
            w0 = mod.weight.detach().double().reshape(mod.weight.shape[0], -1).numpy()
            b0 = None if mod.bias is None else mod.bias.detach().double().numpy()
            w, b = solve(rows, y, w0, b0, self.ridge)
            mod.weight.copy_(torch.from_numpy(w.reshape(mod.weight.shape)).to(mod.weight.dtype))
            if b is not None:
                mod.bias.copy_(torch.from_numpy(b).to(mod.bias.dtype))
            fitted[out] = (w.reshape(mod.weight.shape).astype(np.float32), None if b is None else
                           b.astype(np.float32))
        return pre


def _fan_in(mod: torch.nn.Module) -> int:
    return int(mod.in_channels if isinstance(mod, torch.nn.Conv2d) else mod.in_features)


def _inputs(mod: torch.nn.Module) -> int:
    """Weights per output of a reader (input channels x kernel size)."""
    return int(np.prod(mod.weight.shape[1:]))


def _fan_out(mod: torch.nn.Module) -> int:
    return int(mod.out_channels if isinstance(mod, torch.nn.Conv2d) else mod.out_features)


def _pixels(mod: torch.nn.Conv2d, x: torch.Tensor) -> int:
    """Output pixels per image of a Conv2d on input `x`."""
    size = 1
    for d in range(2):
        k = mod.dilation[d] * (mod.kernel_size[d] - 1) + 1
        size *= (x.shape[2 + d] + 2 * mod.padding[d] - k) // mod.stride[d] + 1
    return size


def _write(model: onnx.ModelProto, fitted: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> onnx.ModelProto:
    """A copy of `model` with the fitted readers' weights (ONNX layout: Gemm with transB=0 stores (K, O))."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = Graph(out)
    for node in list(out.graph.node):
        if not node.output or node.output[0] not in fitted:
            continue
        w, b = fitted[node.output[0]]
        if node.op_type == "Gemm":
            alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
            w = (w if attr(node, "transB", 0) else w.T) / alpha
            b = None if b is None else b / beta
        g.set_input_const(node, 1, np.ascontiguousarray(w, dtype=np.float32))
        if b is not None and len(node.input) > 2 and node.input[2]:
            old = g.const(node.input[2])
            if old is not None and old.size == b.size:
                g.set_input_const(node, 2, b.reshape(old.shape).astype(np.float32))
    return out
