"""Resize (10, 11, 13, 18, 19) and Upsample (7, 9), exactly as the ONNX spec defines them, one axis at a time.

onnx2torch maps Resize onto F.interpolate and only warns when the coordinate mode differs (nearest with
half_pixel, asymmetric linear, ...), giving silently different pictures. This implementation follows the spec's
separable definition for every mode (nearest/linear/cubic, all coordinate transforms, antialias, axes,
keep_aspect_ratio_policy, exclude_outside, tf_crop_and_resize) with gathers that autograd differentiates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from .. import converter
from ._common import result, split_inputs

_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
           "tf_half_pixel_for_nn", "tf_crop_and_resize")


def _source_coords(mode: str, out: int, size: int, scale: float, roi: tuple[float, float] | None) -> torch.Tensor:
    y = torch.arange(out, dtype=torch.float64)
    if mode == "align_corners":
        return torch.zeros(out, dtype=torch.float64) if out == 1 else y * (size - 1) / (out - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "pytorch_half_pixel":
        return torch.full((out,), -0.5, dtype=torch.float64) if out == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        return size / 2 * (1 - adjustment) + (y + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if out == 1:
            return torch.full((out,), (end - start) * (size - 1) / 2 + start * (size - 1), dtype=torch.float64)
        return y * (end - start) * (size - 1) / (out - 1) + start * (size - 1)
    raise NotImplementedError(f"coordinate_transformation_mode {mode!r} is not supported")


def _filter(mode: str, a: float, x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    if mode == "linear":
        return (1 - x).clamp(min=0)
    x2, x3 = x * x, x * x * x
    near = (a + 2) * x3 - (a + 3) * x2 + 1
    far = a * x3 - 5 * a * x2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


class OnnxResize(nn.Module):
    """ONNX Resize; scales/sizes/roi are constants or run-time inputs (in the order given by `dynamic`)."""

    def __init__(self, mode: str, coord: str, nearest_mode: str, cubic_a: float, exclude_outside: bool,
                 extrapolation: float, antialias: bool, axes: Sequence[int] | None, policy: str,
                 scales: Sequence[float] | None, sizes: Sequence[int] | None, roi: Sequence[float] | None,
                 dynamic: Sequence[str]) -> None:
        super().__init__()
        if mode not in ("nearest", "linear", "cubic"):
            raise NotImplementedError(f"Resize mode {mode!r} is not supported")
        if coord not in _COORDS:
            raise NotImplementedError(f"coordinate_transformation_mode {coord!r} is not supported")
        self.mode, self.coord, self.nearest_mode, self.cubic_a = mode, coord, nearest_mode, cubic_a
        self.exclude_outside, self.extrapolation, self.antialias = exclude_outside, extrapolation, antialias
        self.axes, self.policy = None if axes is None else list(axes), policy
        self.scales = None if scales is None else [float(s) for s in scales]
        self.sizes = None if sizes is None else [int(s) for s in sizes]
        self.roi = None if roi is None else [float(r) for r in roi]
        self.dynamic = tuple(dynamic)

    def _plan(self, shape: Sequence[int], scales: list[float] | None, sizes: list[int] | None
              ) -> tuple[list[int], list[float]]:
        r = len(shape)
        axes = [a % r for a in self.axes] if self.axes is not None else list(range(r))
        if sizes:
            full = list(shape)
            for a, s in zip(axes, sizes):
                full[a] = int(s)
            scale = [full[i] / shape[i] if shape[i] else 1.0 for i in range(r)]
            if self.policy in ("not_larger", "not_smaller"):
                pick = min if self.policy == "not_larger" else max
                s = pick(scale[a] for a in axes)
                scale = [s if i in axes else 1.0 for i in range(r)]
                full = [int(s * shape[i] + 0.5) if i in axes else shape[i] for i in range(r)]
            return full, scale
        if not scales:
            raise ValueError("Resize needs scales or sizes")
        scale = [1.0] * r
        for a, s in zip(axes, scales):
            scale[a] = float(s)
        return [int(math.floor(shape[i] * scale[i])) for i in range(r)], scale

    def _axis(self, x: torch.Tensor, axis: int, out: int, scale: float, roi: tuple[float, float] | None
              ) -> torch.Tensor:
        size = x.shape[axis]
        src = _source_coords(self.coord, out, size, scale, roi)
        extrapolated = (src < 0) | (src > size - 1) if self.coord == "tf_crop_and_resize" else None
        if self.mode == "nearest":
            floor = torch.floor(src)
            frac = src - floor
            if self.nearest_mode == "round_prefer_floor":
                up = frac > 0.5
            elif self.nearest_mode == "round_prefer_ceil":
                up = frac >= 0.5
            elif self.nearest_mode == "ceil":
                up = frac > 0
            elif self.nearest_mode == "floor":
                up = torch.zeros_like(frac, dtype=torch.bool)
            else:
                raise NotImplementedError(f"nearest_mode {self.nearest_mode!r} is not supported")
            index = (floor + up.to(floor.dtype)).long().clamp(0, size - 1)
            y = x.index_select(axis, index.to(x.device))
        else:
            support = 1.0 if self.mode == "linear" else 2.0
            eff = min(scale, 1.0) if self.antialias else 1.0
            start = math.floor(-support / eff) + 1
            taps = torch.floor(src)[:, None] + start + torch.arange(2 - 2 * start, dtype=torch.float64)[None, :]
            weights = _filter(self.mode, self.cubic_a, (taps - src[:, None]) * eff)
            index = taps.long()
            if self.exclude_outside:
                weights = torch.where((index < 0) | (index >= size), torch.zeros_like(weights), weights)
            if self.antialias or self.exclude_outside:
                total = weights.sum(dim=1, keepdim=True)
                weights = weights / torch.where(total == 0, torch.ones_like(total), total)
            index = index.clamp(0, size - 1)
            view = [1] * x.dim()
            view[axis] = out
            y = None
            for k in range(index.shape[1]):
                w = weights[:, k].to(x.dtype).to(x.device).reshape(view)
                term = x.index_select(axis, index[:, k].to(x.device)) * w
                y = term if y is None else y + term
        if extrapolated is not None and bool(extrapolated.any()):
            view = [1] * x.dim()
            view[axis] = out
            y = torch.where(extrapolated.to(x.device).reshape(view), torch.full_like(y, self.extrapolation), y)
        return y

    def forward(self, x: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
        given = dict(zip(self.dynamic, args))
        scales = given["scales"].tolist() if given.get("scales") is not None else self.scales
        sizes = [int(s) for s in given["sizes"].tolist()] if given.get("sizes") is not None else self.sizes
        roi = given["roi"].tolist() if given.get("roi") is not None else self.roi
        scales = scales or None
        sizes = sizes or None
        r = x.dim()
        out, scale = self._plan(list(x.shape), scales, sizes)
        rois: list[tuple[float, float] | None] = [None] * r
        if roi and self.coord == "tf_crop_and_resize":
            axes = [a % r for a in self.axes] if self.axes is not None else list(range(r))
            k = len(axes)
            for i, a in enumerate(axes):
                rois[a] = (roi[i], roi[i + k])
        if self._fast(x, out, scale, sizes is not None):
            spatial = out[2:]
            if sizes is not None:
                return F.interpolate(x, size=spatial, mode="nearest")
            return F.interpolate(x, scale_factor=scale[2:], mode="nearest")
        for axis in range(r):
            same = out[axis] == x.shape[axis] and math.isclose(scale[axis], 1.0)
            if same and (rois[axis] is None or rois[axis] == (0.0, 1.0)):
                continue
            x = self._axis(x, axis, out[axis], scale[axis], rois[axis])
        return x

    def _fast(self, x: torch.Tensor, out: list[int], scale: list[float], by_size: bool) -> bool:
        """Nearest/asymmetric/floor on the spatial dims is exactly F.interpolate's 'nearest' (the torch exports)."""
        return (self.mode == "nearest" and self.coord == "asymmetric" and self.nearest_mode == "floor"
                and 3 <= x.dim() <= 5 and out[:2] == list(x.shape[:2]) and scale[:2] == [1.0, 1.0]
                and (by_size or all(math.floor(i * s) == o for i, s, o in zip(x.shape[2:], scale[2:], out[2:]))))


def _floats(a: object) -> list[float] | None:
    return None if a is None or getattr(a, "size", 1) == 0 else [float(v) for v in a.reshape(-1).tolist()]


def _convert(node: OnnxNode, graph: OnnxGraph, legacy: bool) -> OperationConverterResult:
    attrs = node.attributes
    mode = attrs.get("mode", "nearest")
    mode = "linear" if mode in ("bilinear", "trilinear") else mode
    if legacy:  # Upsample and Resize@10: (X, scales), asymmetric coordinates, floor rounding
        coord, nearest = "asymmetric", "floor"
        slots: tuple[tuple[int, str], ...] = () if "scales" in attrs else ((1, "scales"),)
    else:
        coord = attrs.get("coordinate_transformation_mode", "half_pixel")
        nearest = attrs.get("nearest_mode", "round_prefer_floor")
        slots = ((1, "roi"), (2, "scales"), (3, "sizes"))
    inputs, dynamic, values = split_inputs(node, graph, slots)
    scales = _floats(values.get("scales")) if "scales" in values else (
        [float(s) for s in attrs["scales"]] if "scales" in attrs else None)
    sizes = _floats(values.get("sizes"))
    module = OnnxResize(
        mode, coord, nearest, float(attrs.get("cubic_coeff_a", -0.75)), bool(attrs.get("exclude_outside", 0)),
        float(attrs.get("extrapolation_value", 0.0)), bool(attrs.get("antialias", 0)),
        attrs.get("axes"), attrs.get("keep_aspect_ratio_policy", "stretch"), scales,
        None if sizes is None else [int(s) for s in sizes], _floats(values.get("roi")), dynamic)
    return result(module, node, inputs)


@converter("Resize", 11, 13, override=True)
@converter("Resize", 18, 19)
def convert_resize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Resize@11+: (X, roi, scales, sizes); constants are baked in, the others are passed at run time."""
    return _convert(node, graph, legacy=False)


@converter("Resize", 10, override=True)
@converter("Upsample", 7, 9)
def convert_upsample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Resize@10 and Upsample: scales only, asymmetric coordinates, nearest rounds down."""
    return _convert(node, graph, legacy=True)
