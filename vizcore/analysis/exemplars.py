"""Dataset exemplars: for every unit (channel) of the chosen layers, the user's inputs that drive it most, found in
one streaming pass over the data for all layers at once (a top-k merge per batch: only the current batch is ever in
memory), with where the unit fired (its arg-max position and the receptive-field box around it) and the
distribution of its activation over the data.

A unit's activation on an input is its channel's largest value over positions (its value, for a layer without
positions). Its distribution (`stats`): mean, max and fraction > 0 exactly; p99 from a reservoir of at most
`RESERVOIR` inputs (exact up to that many), the same seeded sample for every unit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OptionError
from ..inputspace import InputSpace, resolve
from ..model import Layer, Model
from ..samples import DataSet, is_image, open_data
from . import exemplar_cache, exemplar_ort
from .layers import default_layers
from .receptive import Field, receptive_fields

K = 9
RESERVOIR = 1024
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


@dataclass(frozen=True)
class Exemplar:
    """One top input of a unit: its file (name inside the data folder) and index inside an `.npy` (None for an
    image), the unit's activation on it, the arg-max position in the layer's output and the input box [lo, hi)
    per spatial dim that position sees (None without positions)."""

    file: str
    index: int | None
    activation: float
    position: tuple[int, ...] | None
    box: tuple[tuple[int, int], ...] | None
    number: int  # the example's number in its DataSet

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the manifest's form)."""
        return {"file": self.file, "index": self.index, "activation": self.activation,
                "position": None if self.position is None else list(self.position),
                "box": None if self.box is None else [list(b) for b in self.box]}


@dataclass(frozen=True)
class UnitExemplars:
    """A unit's top inputs (best first) and its activation's distribution over the data."""

    layer: str
    layer_index: int
    channel: int
    top: tuple[Exemplar, ...]
    stats: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """`{"stats": {...}, "top": [...]}`."""
        return {"stats": dict(self.stats), "top": [e.to_json() for e in self.top]}


class _Top:
    """One layer's running state: per channel the k best (activation, example number, position), and the sums,
    maximum, positive count and reservoir of the activation's distribution."""

    NAMES = ("vals", "nums", "pos", "total", "positive", "peak", "res")

    def __init__(self, channels: int, k: int, ndim: int) -> None:
        self.vals = np.full((channels, k), -np.inf, np.float32)
        self.nums = np.full((channels, k), -1, np.int64)
        self.pos = np.zeros((channels, k, ndim), np.int64)
        self.total = np.zeros(channels, np.float64)
        self.positive = np.zeros(channels, np.int64)
        self.peak = np.full(channels, -np.inf, np.float32)
        self.res = np.full((channels, RESERVOIR), np.nan, np.float32)

    def add(self, score: np.ndarray, pos: np.ndarray, nums: np.ndarray, slots: np.ndarray) -> None:
        """Fold in one batch: `score` (N, C), `pos` (N, C, D), `nums` (N,), reservoir `slots` (N,) (-1: none)."""
        s = np.where(np.isnan(score), -np.inf, score).astype(np.float32)
        self._merge(s.T, pos.transpose(1, 0, 2), nums)
        fin = np.where(np.isfinite(s), s, 0.0)
        self.total += fin.sum(0, dtype=np.float64)
        self.positive += (s > 0).sum(0)
        self.peak = np.maximum(self.peak, s.max(0))
        took = np.flatnonzero(slots >= 0)
        if took.size:  # in order: a later example replaces an earlier one in the same slot
            _, last = np.unique(slots[took][::-1], return_index=True)
            keep = took[::-1][last]
            self.res[:, slots[keep]] = score[keep].T

    def _merge(self, st: np.ndarray, where: np.ndarray, nums: np.ndarray) -> None:
        """The top k per channel with the batch's (C, N) scores: only the channels where a new input beats the k-th
        best are re-sorted (a tie keeps the earlier example, and every new example comes later)."""
        rows = np.flatnonzero((st > self.vals[:, -1:]).any(1))
        if not rows.size:
            return
        k = self.vals.shape[1]
        vals = np.concatenate([self.vals[rows], st[rows]], 1)
        cand = np.concatenate([self.nums[rows], np.broadcast_to(nums[None, :], (rows.size, len(nums)))], 1)
        at = np.concatenate([self.pos[rows], where[rows]], 1)
        order = np.lexsort((cand, -vals), axis=1)[:, :k]  # best first; ties: the earlier example
        self.vals[rows] = np.take_along_axis(vals, order, 1)
        self.nums[rows] = np.take_along_axis(cand, order, 1)
        self.pos[rows] = np.take_along_axis(at, order[:, :, None], 1)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{n}": getattr(self, n) for n in self.NAMES}

    def restore(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        for n in self.NAMES:
            setattr(self, n, np.array(arrays[f"{prefix}{n}"]))  # writable: merged in place


def _slots(nums: np.ndarray) -> np.ndarray:
    """Reservoir sampling (Algorithm R) with a hash of the example number as its random draw: the same examples
    are kept whatever the batches, so a resumed pass samples as an uninterrupted one."""
    z = nums.astype(np.uint64) + _MIX[0]
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX[1]
        z = (z ^ (z >> np.uint64(27))) * _MIX[2]
        z = z ^ (z >> np.uint64(31))
    draw = (z % (nums.astype(np.uint64) + np.uint64(1))).astype(np.int64)
    return np.where(nums < RESERVOIR, nums, np.where(draw < RESERVOIR, draw, -1))


@dataclass
class Exemplars:
    """The result of a pass: per layer, per unit, the top inputs and the activation's distribution."""

    layers: tuple[Layer, ...]
    k: int
    count: int  # inputs seen
    skipped: tuple[str, ...]  # files that could not be read (named, skipped)
    fields: dict[str, dict[int, Field | None]]  # receptive fields by input kind ("images", "arrays") and layer
    data: DataSet | None = field(default=None, repr=False)
    tops: dict[int, _Top] = field(default_factory=dict, repr=False)
    resumed: int = 0  # inputs a cached state already held when this call began
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "fields" (receptive-field probe), "pass"
    engine: str = "torch"  # what ran the pass: "onnxruntime" (CPU, a file's channels-first layers) or "torch"

    def layer(self, key: str | int | Layer) -> Layer:
        """One of the pass's layers by Layer, index, name or output tensor name."""
        for lay in self.layers:
            if key is lay or key in (lay.index, lay.name, lay.output) or str(key) == str(lay.index):
                return lay
        raise OptionError(f"layer {getattr(key, 'name', key)!r} was not in the exemplar pass",
                          "pass it in `layers`")

    def unit(self, layer: str | int | Layer, channel: int) -> UnitExemplars:
        """The exemplars of one unit (best first; fewer than k when the data has fewer inputs)."""
        lay = self.layer(layer)
        t = self.tops[lay.index]
        if not 0 <= channel < t.vals.shape[0]:
            raise OptionError(f"channel {channel} is out of range for {lay.name!r} ({t.vals.shape[0]} channels)")
        top = []
        for j in range(self.k):
            num = int(t.nums[channel, j])
            if num < 0:
                break
            file, index = self.data.source(num) if self.data is not None else ("?", None)
            pos = tuple(int(v) for v in t.pos[channel, j]) if t.pos.shape[2] else None
            f = self.fields.get("images" if index is None else "arrays", {}).get(lay.index)
            top.append(Exemplar(file, index, float(t.vals[channel, j]), pos,
                                f.box(pos) if f is not None and pos is not None else None, num))
        return UnitExemplars(lay.name, lay.index, channel, tuple(top), self.stats(lay, channel))

    def stats(self, layer: str | int | Layer, channel: int) -> dict[str, float]:
        """mean, p99, max and fraction > 0 of one unit's activation over the inputs (`count`: how many)."""
        t = self.tops[self.layer(layer).index]
        n = max(self.count, 1)
        sample = t.res[channel][np.isfinite(t.res[channel])]
        return {"count": self.count, "mean": float(t.total[channel] / n),
                "p99": float(np.percentile(sample, 99)) if sample.size else float("nan"),
                "max": float(t.peak[channel]), "fraction_positive": float(t.positive[channel] / n)}

    def crops(self, layer: str | int | Layer, channel: int, size: int = 64, context: float = 0.25) -> list[np.ndarray]:
        """The unit's exemplars cut to their boxes, as uint8 (size, size, C) pictures (read again from the data;
        arrays are shown min-max scaled); a box smaller than `context` of the input's side grows to it, about
        the same centre. Empty for inputs that are not images."""
        if self.data is None or not is_image(self.data.shape):
            return []
        out = []
        for e in self.unit(layer, channel).top:
            x, img = self.data.example(e.number)
            out.append(_crop(x, img, _grown(e.box, x.shape[1:], context), size))
        return out

    def heat_crops(self, model: Model, layer: str | int | Layer, channel: int, space: InputSpace | None,
                   size: int = 64, context: float = 0.25) -> list[np.ndarray]:
        """`crops` with the unit's activation map over each (blended as `vizcore explain` shows it, one scale
        for all: the unit's top activation): one forward of the exemplars through the graph cut at the layer.
        Empty for inputs that are not 2-D images."""
        lay = self.layer(layer)
        if self.data is None or not is_image(self.data.shape) or len(self.data.shape) != 4:
            return []
        from .explain import blend

        top = self.unit(lay, channel).top
        read = [self.data.example(e.number) for e in top]
        if not read or not all(img for _, img in read):  # an .npy example is in model units: no heat over it
            return self.crops(lay, channel, size, context)
        xs = [x for x, _ in read]
        x = torch.from_numpy(np.stack(xs).astype(np.float32))
        with torch.no_grad():
            (a,) = model.cut_at([lay])(*model.feeds(space.module(int(x.shape[1]))(x) if space is not None else x))
        if a.dim() != 4:  # no positions (a logit): nothing to map
            return self.crops(lay, channel, size, context)
        maps = torch.nn.functional.interpolate(a[:, channel:channel + 1].float(), size=tuple(x.shape[2:]),
                                               mode="bilinear", align_corners=False)[:, 0].numpy()
        peak = float(max(e.activation for e in top))
        out = []
        for xi, m, e in zip(xs, maps, top):
            hot = blend(xi, np.maximum(m, 0), True, peak, opacity=0.6).transpose(2, 0, 1).astype(np.float32) / 255.0
            out.append(_crop(hot, True, _grown(e.box, xi.shape[1:], context), size))
        return out

    def to_json(self) -> dict[str, Any]:
        """Every unit's exemplars (large: one entry per unit of every layer)."""
        return {"count": self.count, "k": self.k, "skipped": list(self.skipped),
                "layers": [{"index": lay.index, "name": lay.name,
                            "units": [self.unit(lay, c).to_json() for c in range(self.tops[lay.index].vals.shape[0])]}
                           for lay in self.layers]}


def _grown(box: tuple[tuple[int, int], ...] | None, shape: Sequence[int],
           context: float) -> tuple[tuple[int, int], ...] | None:
    """`box` grown to at least `context` of each side (kept inside, about the same centre)."""
    if box is None:
        return None
    out = []
    for (lo, hi), n in zip(box, shape):
        want = min(n, max(hi - lo, round(context * n)))
        lo = min(max(0, (lo + hi - want) // 2), n - want)
        out.append((lo, lo + want))
    return tuple(out)


def _crop(x: np.ndarray, is_img: bool, box: tuple[tuple[int, int], ...] | None, size: int) -> np.ndarray:
    from PIL import Image

    if not is_img:
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if box is not None and len(box) == 2:
        (y0, y1), (x0, x1) = box
        x = x[:, y0:y1, x0:x1]
    a = (np.clip(np.nan_to_num(x), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    img = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.NEAREST)
    out = np.zeros((size, size, a.shape[2]), np.uint8)
    arr = np.asarray(img).reshape(img.height, img.width, a.shape[2])
    top, left = (size - img.height) // 2, (size - img.width) // 2
    out[top:top + img.height, left:left + img.width] = arr
    return out


def pick_layers(model: Model, layers: Sequence[str | int | Layer] | None) -> list[Layer]:
    """The layers named (names, output names, indices; closest names in the error), or every layer the check
    measures by default; each must have a channel dimension."""
    chosen = [c.layer for c in default_layers(model)] if not layers else [model.layer(k) for k in layers]
    for lay in chosen:
        if not lay.channels:
            raise OptionError(f"layer {lay.name!r} ({lay.op_type}) has no channel dimension",
                              "choose a layer with an (N, C, ...) output; see `vizcore inspect MODEL`")
    if not chosen:
        raise OptionError("no layers for exemplars: the model has no Conv or dense layer with an activation",
                          "name some layers")
    return list({lay.index: lay for lay in chosen}.values())


Progress = Callable[[int, int], None]


def exemplars(model: Model, data: DataSet | str | os.PathLike[str], layers: Sequence[str | int | Layer] | None = None,
              *, k: int = K, space: InputSpace | None = None, size: int | Sequence[int] | None = None,
              batch: int = 16, cache_dir: str | os.PathLike[str] | bool | None = None,
              progress: Progress | None = None, checkpoint_every: int = 8) -> Exemplars:
    """One pass over `data` (a folder or file of images / `.npy` arrays, or an open `DataSet`) for all `layers`
    (default: the layers `vizcore check` measures): each unit's top-`k` inputs and activation distribution.

    Images are read at the model's input shape (`size` for a free one) and mapped by `space` (default: the model's
    input space); arrays go in as they are. `cache_dir` (default `exemplar_cache.default_dir()`; False: none):
    the state is saved every `checkpoint_every` batches, so a killed pass resumes and a finished one is not run
    again. `progress(done, total)` after each batch (inputs)."""
    if k < 1 or batch < 1 or checkpoint_every < 1:
        raise OptionError("k, batch and checkpoint_every must be at least 1")
    chosen = pick_layers(model, layers)
    ds = data if isinstance(data, DataSet) else open_data(data, model.input_shape(1, size), stream=True)
    space = space if space is not None else resolve(model)
    store = None
    if cache_dir is not False:
        key = exemplar_cache.cache_key({"model": model.sha256, "data": ds.fingerprint(), "k": k,
                                        "layers": [[lay.index, lay.name] for lay in chosen],
                                        "space": space.to_json(), "feeds": sorted(model.given)})
        root = exemplar_cache.default_dir() if cache_dir in (None, True) else Path(cache_dir)  # type: ignore[arg-type]
        store = exemplar_cache.Store(root, key)
    return _Pass(model, chosen, ds, space, k, store).run(batch, progress, checkpoint_every)


class _Pass:
    """The pass's state (fresh or resumed from `store`) and its loop."""

    def __init__(self, model: Model, layers: list[Layer], ds: DataSet, space: InputSpace, k: int,
                 store: exemplar_cache.Store | None) -> None:
        self.model, self.layers, self.ds, self.space, self.k, self.store = model, layers, ds, space, k, store
        self.next = self.count = 0
        self.tops: dict[int, _Top] = {}
        self.timings: dict[str, float] = {}
        self.engine = "torch"
        saved = store.load() if store is not None else None
        if saved is not None:
            meta, arrays = saved
            self.next, self.count, self.fields = int(meta["next"]), int(meta["count"]), _fields_from(meta)
            ds.skipped[:0] = [s for s in meta.get("skipped", []) if s not in ds.skipped]
        else:
            t0 = time.perf_counter()
            self.fields = self._measure_fields()
            self.timings["fields"] = time.perf_counter() - t0
        self.resumed = self.count
        for lay in layers:
            dims = len(lay.shape or ()) - 2
            self.tops[lay.index] = t = _Top(int(lay.channels or 0), k, max(dims, 0))
            if saved is not None:
                t.restore(saved[1], f"{lay.index}.")

    def _measure_fields(self) -> dict[str, dict[int, Field | None]]:
        out = {}
        if self.ds.image_files:
            out["images"] = receptive_fields(self.model, self.layers, self.ds.shape, self.space)
        if self.ds.arrays:
            out["arrays"] = receptive_fields(self.model, self.layers, (1, *self.ds.arrays[0].shape[1:]), None)
        return out

    def _save(self) -> None:
        if self.store is None:
            return
        arrays = {name: a for i, t in self.tops.items() for name, a in t.arrays(f"{i}.").items()}
        meta = {"next": self.next, "count": self.count, "skipped": list(self.ds.skipped),
                "fields": {kind: {str(i): f.to_json() if f is not None else None for i, f in fs.items()}
                           for kind, fs in self.fields.items()}}
        self.store.save(meta, arrays)

    def _scorer(self) -> Callable[[list[torch.Tensor]], list[tuple[np.ndarray, np.ndarray]]]:
        """Per layer, each input's maximum per channel and where it is: onnxruntime where it can run the layers
        (`exemplar_ort`, about 4x faster than the torch graph on a CPU), else the torch graph cut at them."""
        if self.model.device.type == "cpu":
            fast = exemplar_ort.reducer(self.model, self.layers)
            if fast is not None:
                self.engine = "onnxruntime"
                return fast
        cut = self.model.cut_at(self.layers)
        self.engine = "torch"
        return lambda feeds: [_scores(a) for a in cut(*feeds)]

    def _fold(self, b: Any, outs: Future[Any], done: int, every: int, progress: Progress | None) -> int:
        """Merge one batch's scores into the top k and the distributions; checkpoint every `every` batches."""
        slots = _slots(b.numbers)
        for lay, (score, pos) in zip(self.layers, outs.result()):
            self.tops[lay.index].add(score, pos, b.numbers, slots)
        self.next, self.count, done = b.stop, self.count + len(b.numbers), done + 1
        if done % every == 0:
            self._save()
        if progress:
            progress(self.next, self.ds.count)
        return done

    def run(self, batch: int, progress: Progress | None, every: int) -> Exemplars:
        total, t0 = self.ds.count, time.perf_counter()
        if self.next < total:
            scores = self._scorer()
            norm = self.space.module(int(self.ds.shape[1]))
            bs, done = (batch if self.model.batch_ok else 1), 0
            # one batch runs (onnxruntime or torch, both release the GIL) while the one before is merged and the
            # next is read: the pass's numpy and decoding overlap the network
            with ThreadPoolExecutor(1, thread_name_prefix="vizcore-exemplars") as pool:
                pending: tuple[Any, Future[Any]] | None = None
                for b in self.ds.batches(bs, self.next):
                    x = torch.from_numpy(np.array(b.x, dtype=np.float32))  # a copy: data may be read-only
                    running = (b, pool.submit(_no_grad, scores, self.model.feeds(norm(x) if b.images else x)))
                    if pending is not None:
                        done = self._fold(*pending, done, every, progress)
                    pending = running
                if pending is not None:
                    self._fold(*pending, done, every, progress)
            self.next = total
            self._save()
        self.timings["pass"] = time.perf_counter() - t0
        if self.count == 0:
            raise OptionError(f"--data {self.ds.path}: no input could be read",
                              "; ".join(self.ds.skipped[:3]) or "pass images or .npy arrays")
        return Exemplars(tuple(self.layers), self.k, self.count, tuple(self.ds.skipped), self.fields, self.ds,
                         self.tops, self.resumed, [f"input space: {w}" for w in self.space.warnings], self.timings,
                         self.engine)


def _no_grad(fn: Callable[[Any], Any], arg: Any) -> Any:
    with torch.no_grad():  # no_grad is per thread: the worker's own
        return fn(arg)


def _scores(a: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per input and channel, the largest value over positions (N, C) and where it is (N, C, D)."""
    a = a.detach().float()
    if a.dim() <= 2:
        v = a.reshape(a.shape[0], -1)
        return v.cpu().numpy(), np.zeros((*v.shape, 0), np.int64)
    v, i = a.flatten(2).max(2)
    pos = np.stack(np.unravel_index(i.cpu().numpy(), tuple(a.shape[2:])), -1).astype(np.int64)
    return v.cpu().numpy(), pos


def _fields_from(meta: dict[str, Any]) -> dict[str, dict[int, Field | None]]:
    return {kind: {int(i): Field.from_json(f) if f is not None else None for i, f in fs.items()}
            for kind, fs in meta.get("fields", {}).items()}
