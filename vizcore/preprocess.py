"""The model's expected input: value range and normalization, applied inside the graph to 0..1 images.

Read from ONNX metadata_props (`vizcore.range`, `vizcore.mean`, `vizcore.std`) when present; else the options;
else a documented default with a warning, since a wrong range fails silently (Lucid's "most common cause of
feature visualization bugs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import OptionError

if TYPE_CHECKING:
    from .model import Model

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RANGES = {"0,1": (0.0, 1.0), "0,255": (0.0, 255.0), "-1,1": (-1.0, 1.0)}


@dataclass
class Preprocess:
    """Maps an image in 0..1 to the model's input: x -> (lo + x*(hi-lo) - mean) / std, per channel."""

    lo: float = 0.0
    hi: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    source: str = "default"
    warnings: list[str] = field(default_factory=list)

    def module(self, channels: int) -> nn.Module:
        """A module applying this preprocessing to (N, C, ...) tensors with `channels` channels."""
        return _Normalize(self, channels)

    def to_json(self) -> dict[str, object]:
        """The settings as they go into a manifest."""
        return {"range": [self.lo, self.hi], "mean": list(self.mean), "std": list(self.std), "source": self.source}


class _Normalize(nn.Module):
    def __init__(self, p: Preprocess, channels: int) -> None:
        super().__init__()

        def per_channel(v: tuple[float, ...], what: str) -> torch.Tensor:
            if len(v) == 1:
                v = v * channels
            if len(v) != channels:
                raise OptionError(f"{what} has {len(v)} values but the model input has {channels} channels",
                                  "give one value per channel, or one for all")
            return torch.tensor(v, dtype=torch.float32)

        mean, std = per_channel(p.mean, "mean"), per_channel(p.std, "std")
        scale = (p.hi - p.lo) / std
        shift = (p.lo - mean) / std
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape).to(x.dtype) + self.shift.view(shape).to(x.dtype)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError as exc:
        raise OptionError(f"cannot read {what} {text!r}", "write comma-separated numbers, e.g. 0.485,0.456,0.406") \
            from exc
    if not vals:
        raise OptionError(f"empty {what}", "write comma-separated numbers")
    return vals


def parse_range(text: str) -> tuple[float, float]:
    """'0,1' | '0,255' | '-1,1' | any 'LO,HI' -> (lo, hi)."""
    vals = _floats(text, "range")
    if len(vals) != 2 or vals[1] <= vals[0]:
        raise OptionError(f"bad range {text!r}", "use LO,HI with LO < HI, e.g. 0,1 or 0,255 or -1,1")
    return vals[0], vals[1]


def _table_span(table: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std that map 0..1 onto each feature's range in an embedding table (rows: tokens): what the optimized
    embedding can take, feature by feature, instead of a guessed image range."""
    import numpy as np

    t = np.asarray(table, dtype=np.float64)
    lo, hi = t.min(0), t.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return tuple((-lo / span).tolist()), tuple((1.0 / span).tolist())


def resolve(model: Model, preprocess: str | None = None, value_range: str | None = None) -> Preprocess:
    """The preprocessing for `model`: explicit options > ONNX metadata > default (with a warning)."""
    meta = model.metadata
    channels = model.input_shape()[1]
    p = Preprocess()
    sources = []
    if value_range is not None:
        p.lo, p.hi = parse_range(value_range)
        sources.append("option")
    elif "vizcore.range" in meta:
        p.lo, p.hi = parse_range(meta["vizcore.range"])
        sources.append("metadata")
    if preprocess is not None:
        sources.append("option")
        text = preprocess.strip().lower()
        if text == "imagenet":
            p.mean, p.std = IMAGENET
        elif text == "none":
            p.mean, p.std = (0.0,), (1.0,)
        else:
            parts = dict(part.split("=", 1) for part in preprocess.split(";") if "=" in part) if "=" in text else {}
            if not parts or set(parts) - {"mean", "std"}:
                raise OptionError(f"bad --preprocess {preprocess!r}",
                                  "use imagenet, none, or mean=A,B,C;std=D,E,F")
            p.mean = _floats(parts.get("mean", "0"), "mean")
            p.std = _floats(parts.get("std", "1"), "std")
    elif "vizcore.mean" in meta or "vizcore.std" in meta:
        p.mean = _floats(meta.get("vizcore.mean", "0"), "metadata vizcore.mean")
        p.std = _floats(meta.get("vizcore.std", "1"), "metadata vizcore.std")
        sources.append("metadata")
    elif model.embedding is not None and value_range is None and "vizcore.range" not in meta:
        p.mean, p.std = _table_span(model.embedding)
        sources.append("embedding table")
    elif channels == 3:
        p.mean, p.std = IMAGENET
        p.warnings.append("the model does not say how it normalizes its input: assuming ImageNet mean/std on a 0..1 "
                          "image (pass --preprocess and --range to be sure)")
    if value_range is None and "vizcore.range" not in meta and not p.warnings and "embedding table" not in sources:
        p.warnings.append("the model does not say its input range: assuming 0..1 (pass --range 0,255 or -1,1 if not)")
    p.source = "+".join(dict.fromkeys(sources)) or "default"
    if any(s == 0 for s in p.std):
        raise OptionError("std contains 0", "give non-zero standard deviations")
    return p
