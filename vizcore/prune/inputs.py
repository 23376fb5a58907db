"""What prune feeds the model: the check's probes and data reader (`vizcore.samples`), mapped by the one
`InputSpace` and laid out as the graph takes them; the other graph inputs from `--feed` or seeded defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import samples
from ..errors import OptionError
from ..graph_inputs import batch_axes, check_feeds, primary_input, receptive_length
from ..inputspace import InputSpace, resolve_from
from ..layouts import Layout, detect
from ..proto_check import metadata_size
from .runtime import Feed

_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16:
          np.float16, onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32}
DEFAULT_SPATIAL = 224


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, numpy dtype and dims (None: free)."""

    name: str
    dtype: type
    dims: tuple[int | None, ...]
    #: the axis that holds the batch (`graph_inputs.batch_axes`: 1 for an LSTM state `[layers, batch, hidden]`)
    batch_axis: int = 0

    def shape(self, batch: int, size: int) -> tuple[int, ...]:
        """Concrete dims: the batch axis gets `batch`, free spatial dims `size`, other free dims 1."""
        return tuple(batch if i == self.batch_axis else d if d is not None else (size if i >= 2 else 1)
                     for i, d in enumerate(self.dims))

    @property
    def fixed_batch(self) -> int | None:
        return self.dims[0] if self.dims else None

    @property
    def is_float(self) -> bool:
        return bool(np.issubdtype(self.dtype, np.floating))


def specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    axes = batch_axes(model)
    out = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        out.append(InputSpec(i.name, _TYPES.get(tt.elem_type, np.float32), dims, axes.get(i.name, 0)))
    if not out:
        raise OptionError("the model has no inputs to feed", "prune needs a model that takes an input tensor")
    return out


@dataclass(frozen=True)
class Feeder:
    """How prune makes every graph input: the probed input (`specs[0]`: the float input the most weighted layers
    depend on, as the load chooses) from probes or data (natural layout, model units, put into the graph's layout),
    the others from `given` (--feed) or seeded defaults."""

    specs: list[InputSpec]
    space: InputSpace
    layout: Layout | None
    natural: tuple[int, ...]  # the first input's natural shape at batch 1, e.g. (1, 3, 224, 224)
    given: Mapping[str, np.ndarray] = field(default_factory=dict)
    chosen: str | None = None  # why the probed input is not the first graph input (several float inputs)

    @property
    def fixed_batch(self) -> int | None:
        return self.specs[0].fixed_batch

    @property
    def notes(self) -> list[str]:
        """One line per input whose batch is not on axis 0 (how prune feeds it)."""
        axes = [f"input {s.name!r} [{', '.join('?' if d is None else str(d) for d in s.dims)}] holds its batch on "
                f"axis {s.batch_axis}: fed that way" for s in self.specs if s.batch_axis]
        return ([self.chosen] if self.chosen else []) + axes

    def probes(self, count: int, seed: int, photos: bool = True) -> tuple[np.ndarray, dict[str, int]]:
        """The check's probes for the first input (noise, sample photos; signed noise for inputs that are not
        images) in model units, natural layout, with their counts per source."""
        first = self.specs[0]
        if not first.is_float:  # ids / masks: seeded 0/1 values, as the check's default feeds
            rng = np.random.default_rng(seed)
            return rng.integers(0, 2, size=(count, *self.natural[1:])).astype(first.dtype), {"ids": count}
        ps = samples.probe_set(self.natural, noise_count=count, use_photos=photos, seed=seed)
        parts = [self.space.to_model(ps.images)] + ([ps.raw.astype(np.float32)] if ps.raw is not None else [])
        return np.concatenate(parts), ps.sources

    def data(self, path: str | os.PathLike[str], flag: str) -> np.ndarray:
        """A `--data` folder (or file) as model inputs: images through the input space, `.npy` arrays as they are."""
        if not self.specs[0].is_float:
            raise OptionError(f"{flag}: the model's first input {self.specs[0].name!r} is not a float tensor",
                              "prune with the default probes")
        ds = samples.open_data(path, self.natural, flag)
        parts = [self.space.to_model(b) for b in ds.image_batches(64)] + list(ds.array_batches(1024))
        return np.concatenate(parts).astype(np.float32)

    def feed(self, first: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """Every graph input for a batch of first inputs (natural layout), each batched on its own axis."""
        n = len(first)
        out = {self.specs[0].name: self._to_graph(first).astype(self.specs[0].dtype)}
        for i, s in enumerate(self.specs[1:], start=1):
            if s.name in self.given:
                v, a = self.given[s.name], s.batch_axis
                grown = (*v.shape[:a], n, *v.shape[a + 1:]) if v.ndim > a and v.shape[a] == 1 else v.shape
                out[s.name] = np.ascontiguousarray(np.broadcast_to(v, grown))
            else:
                out[s.name] = _default(s, n, self.natural, seed + 17 * i)
        return Feed(out, {s.name: s.batch_axis for s in self.specs})

    def _to_graph(self, x: np.ndarray) -> np.ndarray:
        if self.layout is None or self.layout.identity:
            return x
        if self.layout.perm is None:  # NF: a 1-channel signal back to a flat vector
            return x.reshape(x.shape[0], -1)
        return np.ascontiguousarray(np.transpose(x, self.layout.perm))


def _default(s: InputSpec, n: int, natural: Sequence[int], seed: int) -> np.ndarray:
    """A seeded value for an input nobody gave: 0/1 for integers, standard normal for floats."""
    rng = np.random.default_rng(seed)
    size = natural[-1] if len(natural) >= 3 else 1
    shape = s.shape(n, size)
    if not s.is_float:
        return rng.integers(0, 2, size=shape).astype(s.dtype)
    return rng.standard_normal(shape).astype(s.dtype)


def feeder(model: onnx.ModelProto, *, size: int | Sequence[int] | None = None, preprocess: str | None = None,
           value_range: str | None = None, layout: str | None = None,
           feeds: Mapping[str, object] | None = None) -> Feeder:
    """The `Feeder` for a model and the input flags (--size, --preprocess, --range, --layout, --feed), resolved
    once by the same rules as every other command."""
    sp = specs(model)
    main, why = primary_input(model, [s.name for s in sp if s.is_float])
    sp = sorted(sp, key=lambda s: s.name != main)  # the probed input first (feeds are by name)
    meta = {p.key: p.value for p in model.metadata_props}
    first = sp[0]
    lay = detect(model.graph, first.name, first.dims, meta, layout) if first.is_float else None
    dims = lay.natural(first.dims) if lay is not None else first.dims
    natural = _natural_shape(dims, size, meta, model)
    channels = natural[1] if len(natural) > 1 else 1
    space = resolve_from(meta, channels, preprocess, value_range)
    return Feeder(sp, space, lay, natural, check_feeds(model, feeds or {}), f"probing input {main!r}: {why}" if why
                  else None)


def _natural_shape(dims: Sequence[int | None], size: int | Sequence[int] | None, meta: Mapping[str, str],
                   model: onnx.ModelProto) -> tuple[int, ...]:
    """Batch 1, the fixed dims kept, free spatial dims from `size`, else metadata `vizcore.size`, else (1-D) the
    length the receptive field asks for, else 224: the rule of `Model.input_shape`, read by the same helpers."""
    spatial = max(len(dims) - 2, 0)
    if size is None:
        size = (metadata_size(meta.get("vizcore.size"))[0]
                or (receptive_length(model) if spatial == 1 else None) or DEFAULT_SPATIAL)
    hw = [size] * spatial if isinstance(size, int) else [int(v) for v in size]
    if len(hw) != spatial:
        raise OptionError(f"--size has {len(hw)} values but the input has {spatial} spatial dimensions",
                          "give one value per dimension")
    out = [1]
    for i, d in enumerate(dims[1:], start=1):
        out.append(d if d is not None else (hw[i - 2] if i >= 2 else 1))
    return tuple(int(v) for v in out)
