"""onnxruntime sessions: the model as it is, or with intermediate tensors exposed as extra outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import onnx

from .. import onnxfile


def session(model: onnx.ModelProto, extra: Sequence[str] = (), threads: int = 0, timed: bool = False) -> Any:
    """A CPU onnxruntime session of `model` with the tensors `extra` added as outputs; `timed`: for latency runs,
    without the run watchdog (`onnxfile.Session`)."""
    return onnxfile.session(model, extra, threads, limit=None if timed else onnxfile.RUN_LIMIT_S)


def intermediates(model: onnx.ModelProto) -> list[str]:
    """Every node output name (in graph order)."""
    return [o for n in model.graph.node for o in n.output if o]


class Feed(dict):
    """Graph inputs by name; `axes` says the axis each input holds its batch on (0 where it says nothing: an LSTM
    state `[layers, batch, hidden]` has it on 1)."""

    def __init__(self, values: Any = (), axes: dict[str, int] | None = None) -> None:
        super().__init__(values)
        self.axes = dict(axes or {})


def select(feed: dict[str, np.ndarray], idx: slice | np.ndarray) -> Feed:
    """Samples `idx` of every input, each taken along its own batch axis."""
    axes = getattr(feed, "axes", {})
    return Feed({k: v[(slice(None),) * axes.get(k, 0) + (idx,)] for k, v in feed.items()}, axes)


def head(feed: dict[str, np.ndarray], n: int) -> Feed:
    """The first `n` samples of every input."""
    return select(feed, slice(0, n))


def chunks(inputs: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    """The inputs in batches of `size` (the first input's axis 0; the others along their own batch axis)."""
    n = len(next(iter(inputs.values())))
    for lo in range(0, n, size):
        yield select(inputs, slice(lo, lo + size))


def shapes(model: onnx.ModelProto, feed: dict[str, np.ndarray], values: dict | None = None
           ) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype kind of every tensor on one run of `feed`; small integer tensors' values go to `values`."""
    names = intermediates(model)
    sess = session(model, names)
    outs = sess.get_outputs()
    vals = sess.run(None, feed)
    got = {o.name: (tuple(int(d) for d in v.shape), v.dtype.kind) for o, v in zip(outs, vals)
           if isinstance(v, np.ndarray)}
    if values is not None:
        values.update({o.name: v for o, v in zip(outs, vals)
                       if isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.size <= 16})
    for k, v in feed.items():
        got[k] = (tuple(v.shape), v.dtype.kind)
    return got


def run_all(sess, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """Each batch's outputs by name."""
    names = [o.name for o in sess.get_outputs()]
    for b in batches:
        yield dict(zip(names, sess.run(None, b)))


def outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray], batch: int, names: Sequence[str] = (),
            as_dict: bool = False) -> Any:
    """The model's outputs (or the tensors `names`) on every input of `feed`, run in batches and concatenated: a
    list in the graph's output order, or with `as_dict` a dict by name."""
    sess = session(model, names)
    want = list(names) or [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in want}
    for b in chunks(feed, batch):
        for n, v in zip(want, sess.run(want, b)):
            parts[n].append(v)
    got = {n: np.concatenate(v) for n, v in parts.items()}
    return got if as_dict else [got[n] for n in want]


def means(model: onnx.ModelProto, feed: dict[str, np.ndarray], batch: int, names: Sequence[str]
          ) -> dict[str, np.ndarray]:
    """Per-channel means (over samples and positions, float64) of the tensors `names`, shaped (1, C, 1, ...) to
    broadcast against them; run in batches, nothing but the sums kept."""
    sess = session(model, names)
    sums: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for b in chunks(feed, batch):
        for n, v in zip(names, sess.run(list(names), b)):
            axes = tuple(i for i in range(v.ndim) if i != 1)
            sums[n] = sums.get(n, 0.0) + v.sum(axis=axes, dtype=np.float64, keepdims=True)
            count[n] = count.get(n, 0) + v.size // max(v.shape[1], 1)
    return {n: sums[n] / max(count[n], 1) for n in sums}
