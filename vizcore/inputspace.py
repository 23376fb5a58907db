"""The model's input space: value range and normalization, resolved once (options > ONNX metadata > defaults with a
warning) and applied the same way from torch (render, check) and numpy (prune, onnxruntime).

A wrong input range fails silently (Lucid's "most common cause of feature visualization bugs"), so every guess
comes with a warning that the caller shows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import OptionError

if TYPE_CHECKING:
    from torch import nn

    from .model import Model

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GUESS_NORM = ("the model does not say how it normalizes its input: assuming ImageNet mean/std on a 0..1 image "
              "(pass --preprocess and --range to be sure)")
GUESS_RANGE = "the model does not say its input range: assuming 0..1 (pass --range 0,255 or -1,1 if not)"


@dataclass(frozen=True)
class InputSpace:
    """Maps an image in 0..1 to the model's input: x -> (lo + x*(hi-lo) - mean) / std, per channel."""

    lo: float = 0.0
    hi: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    source: str = "default"
    warnings: tuple[str, ...] = ()

    def per_channel(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per channel: model input = x01 * scale + shift."""
        mean, std = (_spread(v, channels, what) for v, what in ((self.mean, "mean"), (self.std, "std")))
        scale = (self.hi - self.lo) / std
        return scale, (self.lo - mean) / std

    def to_model(self, x01: np.ndarray) -> np.ndarray:
        """0..1 images (N, C, ...) as float32 model inputs (numpy: onnxruntime, prune)."""
        scale, shift = self.per_channel(int(x01.shape[1]))
        shape = (1, -1) + (1,) * (x01.ndim - 2)
        return (x01 * scale.reshape(shape) + shift.reshape(shape)).astype(np.float32)

    def box(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the smallest and largest model input a 0..1 image can give."""
        scale, shift = self.per_channel(channels)
        a, b = shift, scale + shift
        return np.minimum(a, b), np.maximum(a, b)

    def module(self, channels: int) -> nn.Module:
        """A torch module applying this mapping to (N, C, ...) tensors with `channels` channels (float32
        arithmetic, as the render has always done it; torch is imported only here)."""
        return _normalize_class()(self, channels)

    def to_json(self) -> dict[str, object]:
        """The settings as they go into a manifest or report."""
        return {"range": [self.lo, self.hi], "mean": list(self.mean), "std": list(self.std), "source": self.source}

    @classmethod
    def from_json(cls, data: object) -> InputSpace | None:
        """The space `to_json` wrote (a render's `settings["preprocess"]`), None for anything else."""
        if not isinstance(data, dict) or "range" not in data:
            return None
        lo, hi = (float(v) for v in data["range"])
        return cls(lo, hi, tuple(float(v) for v in data.get("mean", [0.0])),
                   tuple(float(v) for v in data.get("std", [1.0])), str(data.get("source", "render")))

    def flags(self) -> dict[str, str]:
        """The space as the `preprocess` and `value_range` options that give it back exactly."""
        nums = lambda v: ",".join(f"{x:.9g}" for x in v)  # noqa: E731
        return {"value_range": nums((self.lo, self.hi)), "preprocess": f"mean={nums(self.mean)};std={nums(self.std)}"}

    def describe(self) -> str:
        """One line for reports: the range, mean/std and where they came from."""
        norm = "none" if self.mean == (0.0,) and self.std == (1.0,) else (
            "imagenet" if (self.mean, self.std) == IMAGENET else f"mean={_short(self.mean)};std={_short(self.std)}")
        return f"range {self.lo:g}..{self.hi:g}, normalization {norm} (from {self.source})"


@functools.cache
def _normalize_class() -> type:
    import torch
    from torch import nn

    class Normalize(nn.Module):
        def __init__(self, space: InputSpace, channels: int) -> None:
            super().__init__()
            mean, std = (torch.tensor(_spread(v, channels, what).tolist(), dtype=torch.float32)
                         for v, what in ((space.mean, "mean"), (space.std, "std")))
            self.register_buffer("scale", (space.hi - space.lo) / std, persistent=False)
            self.register_buffer("shift", (space.lo - mean) / std, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return x * self.scale.view(shape).to(x.dtype) + self.shift.view(shape).to(x.dtype)

    return Normalize


def _short(v: Sequence[float]) -> str:
    return ",".join(f"{x:.4g}" for x in v[:4]) + (",…" if len(v) > 4 else "")


def _spread(v: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise OptionError(f"{what} has {len(v)} values but the model input has {channels} channels",
                          "give one value per channel, or one for all")
    return np.asarray(v, dtype=np.float64)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in str(text).replace(";", ",").split(",") if v.strip())
    except ValueError as exc:
        raise OptionError(f"cannot read {what} {text!r}", "write comma-separated numbers, e.g. 0.485,0.456,0.406") \
            from exc
    if not vals:
        raise OptionError(f"empty {what}", "write comma-separated numbers")
    if not all(math.isfinite(v) for v in vals):
        raise OptionError(f"{what} {text!r} is not finite", "write finite numbers")
    return vals


def parse_range(text: str) -> tuple[float, float]:
    """'0,1' | '0,255' | '-1,1' | any 'LO,HI' -> (lo, hi)."""
    vals = _floats(text, "range")
    if len(vals) != 2 or vals[1] <= vals[0]:
        raise OptionError(f"bad range {text!r}", "use LO,HI with LO < HI, e.g. 0,1 or 0,255 or -1,1")
    return vals[0], vals[1]


def parse_norm(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """'imagenet' | 'none' | 'mean=A,B,C;std=D,E,F' -> (mean, std)."""
    t = text.strip().lower()
    if t == "imagenet":
        return IMAGENET
    if t == "none":
        return (0.0,), (1.0,)
    parts = dict(part.split("=", 1) for part in text.split(";") if "=" in part) if "=" in t else {}
    if not parts or set(parts) - {"mean", "std"}:
        raise OptionError(f"bad --preprocess {text!r}", "use imagenet, none, or mean=A,B,C;std=D,E,F")
    return _floats(parts.get("mean", "0"), "mean"), _floats(parts.get("std", "1"), "std")


def table_span(table: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std that map 0..1 onto each feature's range in an embedding table (rows: tokens): what the optimized
    embedding can take, feature by feature, instead of a guessed image range."""
    t = np.asarray(table, dtype=np.float64)
    lo, hi = t.min(0), t.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return tuple((-lo / span).tolist()), tuple((1.0 / span).tolist())


def resolve_from(metadata: Mapping[str, str], channels: int, preprocess: str | None = None,
                 value_range: str | None = None, embedding: Any = None) -> InputSpace:
    """The one rule: explicit options > ONNX metadata (`vizcore.range`, `vizcore.mean`, `vizcore.std`) > an
    embedding table's span > ImageNet for 3 channels, else none; every guess adds a warning. A range that is
    stated (option or metadata) without a normalization is what the graph input takes: no mean/std is guessed."""
    sources: list[str] = []
    warns: list[str] = []
    lo, hi = 0.0, 1.0
    stated = value_range is not None or "vizcore.range" in metadata
    if stated:
        lo, hi = parse_range(value_range if value_range is not None else metadata["vizcore.range"])
        sources.append("option" if value_range is not None else "metadata")
    mean, std = (0.0,), (1.0,)
    if preprocess is not None:
        mean, std = parse_norm(preprocess)
        sources.append("option")
    elif "vizcore.mean" in metadata or "vizcore.std" in metadata:
        mean = _floats(metadata.get("vizcore.mean", "0"), "metadata vizcore.mean")
        std = _floats(metadata.get("vizcore.std", "1"), "metadata vizcore.std")
        sources.append("metadata")
    elif embedding is not None and not stated:
        mean, std = table_span(embedding)
        sources.append("embedding table")
    elif channels == 3 and not stated:  # a stated range is what the graph input takes: nothing to guess
        mean, std = IMAGENET
        warns.append(GUESS_NORM)
    if not stated and not warns and "embedding table" not in sources:
        warns.append(GUESS_RANGE)
    if any(s == 0 for s in std):
        raise OptionError("std contains 0", "give non-zero standard deviations")
    return InputSpace(lo, hi, mean, std, "+".join(dict.fromkeys(sources)) or "default", tuple(warns))


def resolve(model: Model, preprocess: str | None = None, value_range: str | None = None) -> InputSpace:
    """The input space of a loaded model (`resolve_from` on its metadata, input channels and embedding table)."""
    return resolve_from(model.metadata, model.input_shape()[1], preprocess, value_range, model.embedding)
