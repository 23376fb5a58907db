"""Probe inputs and the activation statistics they give: seeded noise at several scales, the scikit-image sample
photos (when scikit-image is installed) and a user's own images; per channel the peak value and how much the
output changes from one input to another (zero for a unit that does not depend on its input).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OptionError, oneline
from ..model import Model
from .layers import CheckedLayer

#: scikit-image sample photos used as natural-image probes (files shipped inside the package: nothing downloads).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "ihc.png",
                  "hubble_deep_field.jpg", "retina.jpg", "camera.png", "coins.png", "brick.png", "grass.png",
                  "page.png", "color.png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_USER_IMAGES = 256
MAX_PIXELS = 64_000_000  # a larger image file is refused before decoding (decompression bombs)
MAX_ARRAY_EXAMPLES = 1024  # examples read from a --data folder's .npy files
MAX_ARRAY_VALUES = 1 << 27  # values in all of them together (512 MiB of float32)


@dataclass
class ProbeSet:
    """Probe images in 0..1 (N, C, *spatial) and where each group came from (for the report)."""

    images: torch.Tensor
    sources: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: torch.Tensor | None = None  # signed noise in the model's own input units (inputs that are not images)


def noise(shape: Sequence[int], count: int, seed: int = 0) -> torch.Tensor:
    """`count` seeded noise images in 0..1: smooth to fine spatial scales, low to full contrast, plus flat grey."""
    c, *sp = shape[1:]
    g = torch.Generator().manual_seed(seed)
    out = []
    scales = (1, 2, 4, 8, 16, 32)
    contrasts = (1.0, 0.5, 0.2)
    for k in range(count):
        if k == count - 1 and count > 3:
            out.append(torch.full((c, *sp), 0.5))  # a flat image: a constant unit still answers it
            continue
        s = scales[k % len(scales)]
        amp = contrasts[(k // len(scales)) % len(contrasts)]
        small = [max(1, d // s) for d in sp]
        z = torch.rand((1, c, *small), generator=g)
        if small != list(sp):
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(sp), "nearest")
            z = F.interpolate(z, size=tuple(sp), mode=mode, align_corners=False)
        out.append((0.5 + amp * (z[0] - 0.5)).clamp(0, 1))
    return torch.stack(out) if out else torch.zeros((0, c, *sp))


def _fit(img: object, c: int, hw: tuple[int, int]) -> torch.Tensor:
    """A PIL image as a (c, h, w) tensor in 0..1: centre-cropped to the aspect ratio, resized, grey or RGB."""
    from PIL import Image

    im = img.convert("L" if c == 1 else "RGB")  # type: ignore[attr-defined]
    h, w = hw
    W, H = im.size
    scale = max(w / W, h / H)
    cw, ch = round(w / scale), round(h / scale)
    left, top = (W - cw) // 2, (H - ch) // 2
    im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if a.shape[0] != c:
        a = np.repeat(a[:1], c, axis=0)
    return torch.from_numpy(np.ascontiguousarray(a))


def skimage_photos(shape: Sequence[int]) -> tuple[torch.Tensor | None, str | None]:
    """The scikit-image sample photos at the probe shape, or (None, why not)."""
    photos, why = _photos(tuple(shape))
    return (photos.clone() if photos is not None else None), why


@functools.lru_cache(maxsize=4)
def _photos(shape: tuple[int, ...]) -> tuple[torch.Tensor | None, str | None]:
    if len(shape) != 4 or shape[1] not in (1, 3):
        return None, "sample photos skipped: the input is not a 1- or 3-channel image"
    try:
        import skimage.data
    except ImportError:
        return None, "scikit-image is not installed: probes use noise (and --images) only"
    from PIL import Image

    folder = Path(os.path.dirname(skimage.data.__file__))
    imgs = []
    for name in SKIMAGE_PHOTOS:
        p = folder / name
        if p.is_file():
            with Image.open(p) as im:
                imgs.append(_fit(im, shape[1], (shape[2], shape[3])))
    if not imgs:
        return None, "scikit-image ships no sample photos in this install: probes use noise only"
    return torch.stack(imgs), None


def user_images(folder: str | os.PathLike[str], shape: Sequence[int]) -> torch.Tensor:
    """The images in `folder` (not recursive, sorted by name, at most 256) at the probe shape."""
    from PIL import Image, UnidentifiedImageError

    d = Path(folder)
    if not d.is_dir():
        raise OptionError(f"--images {d}: not a folder", "pass a folder of .png/.jpg images")
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise OptionError(f"--images needs a 1- or 3-channel image input; the model's is {list(shape)}")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise OptionError(f"--images {d}: no images in it", "supported: " + ", ".join(IMAGE_SUFFIXES))
    return torch.stack([_read_image(p, shape, "--images", Image, UnidentifiedImageError)
                        for p in files[:MAX_USER_IMAGES]])


def _read_image(p: Path, shape: Sequence[int], flag: str, Image: Any, Unidentified: type) -> torch.Tensor:
    """One image file at the probe shape; a huge or unreadable file is a one-line OptionError."""
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise OptionError(f"{flag}: {p.name} is {w}x{h} pixels, more than {MAX_PIXELS:,} (refused unread)",
                                  "resize it, or remove it from the folder")
            return _fit(im, shape[1], (shape[2], shape[3]))
    except (Unidentified, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise OptionError(f"{flag}: cannot read {p.name}: {oneline(exc, 200, typed=False)}",
                          "remove it or convert it") from exc


@dataclass
class UserData:
    """A --data folder: images in 0..1 (preprocessed like the built-in probes) and/or arrays in the model's own
    input units (.npy, any input shape), with the file counts."""

    images: torch.Tensor | None
    arrays: torch.Tensor | None
    files: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(int(t.shape[0]) for t in (self.images, self.arrays) if t is not None)


def _read_arrays(files: Sequence[Path], shape: Sequence[int]) -> torch.Tensor:
    """.npy files of one example (C, *spatial) or a batch (N, C, *spatial), as one float32 batch."""
    want = tuple(shape[1:])
    parts, n, values = [], 0, 0
    for p in files:
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OptionError(f"--data: cannot read {p.name}: {oneline(exc, 200, typed=False)}",
                              "save it with numpy.save (no pickled objects)") from exc
        if a.ndim == len(want):
            a = a[None]
        if a.ndim != len(want) + 1 or a.shape[1] != want[0] or (parts and a.shape[1:] != parts[0].shape[1:]):
            raise OptionError(f"--data: {p.name} has shape {list(a.shape)}; the model's input is "
                              f"(N, {', '.join(map(str, want))})", "save one example (C, ...) or a batch (N, C, ...)")
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise OptionError(f"--data: {p.name} holds {a.dtype} values, not real numbers")
        a = a[:MAX_ARRAY_EXAMPLES - n]
        values += int(a.size)
        if values > MAX_ARRAY_VALUES:
            raise OptionError(f"--data: more than {MAX_ARRAY_VALUES:,} values in the .npy files",
                              "pass a smaller sample of your data")
        parts.append(np.asarray(a, dtype=np.float32))
        n += a.shape[0]
        if n >= MAX_ARRAY_EXAMPLES:
            break
    return torch.from_numpy(np.concatenate(parts))


def user_data(folder: str | os.PathLike[str], shape: Sequence[int]) -> UserData:
    """The images (.png, .jpg ...) and arrays (.npy) in `folder` (not recursive, sorted by name)."""
    from PIL import Image, UnidentifiedImageError

    d = Path(folder)
    if not d.is_dir():
        raise OptionError(f"--data {d}: not a folder", "pass a folder of images or .npy arrays")
    files = sorted(p for p in d.iterdir() if p.is_file())
    imgs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES][:MAX_USER_IMAGES]
    arrs = [p for p in files if p.suffix.lower() == ".npy"]
    if not imgs and not arrs:
        raise OptionError(f"--data {d}: no images or .npy arrays in it",
                          "supported: .npy, " + ", ".join(IMAGE_SUFFIXES))
    images = None
    if imgs:
        if len(shape) != 4 or shape[1] not in (1, 3):
            raise OptionError(f"--data {d}: images need a 1- or 3-channel image input; the model's is "
                              f"{list(shape)}", "save your examples as .npy arrays instead")
        images = torch.stack([_read_image(p, shape, "--data", Image, UnidentifiedImageError) for p in imgs])
    arrays = _read_arrays(arrs, shape) if arrs else None
    return UserData(images, arrays, {"images": len(imgs), "npy": len(arrs)})


def probe_set(model: Model, size: int | None = None, *, noise_count: int = 12, photos: bool = True,
              images: str | os.PathLike[str] | None = None, seed: int = 0) -> ProbeSet:
    """All probe images for a model at one size (0..1), with a count per source."""
    shape = model.input_shape(1, size)
    parts = [noise(shape, noise_count, seed)]
    sources = {"noise": noise_count}
    notes = []
    if photos:
        ph, why = skimage_photos(shape)
        if ph is not None:
            parts.append(ph)
            sources["skimage"] = ph.shape[0]
        elif why:
            notes.append(why)
    if images is not None:
        ui = user_images(images, shape)
        parts.append(ui)
        sources["images"] = ui.shape[0]
    x = torch.cat(parts)
    raw = None
    if not (len(shape) == 4 and shape[1] in (1, 3)) and noise_count:  # a signal, not an image: both signs
        raw = (noise(shape, noise_count, seed + 1) - 0.5) * 4.0
        sources["signed noise"] = noise_count
    if x.shape[0] == 0:
        raise OptionError("no probe inputs: noise-probes is 0 and there are no photos or --images",
                          "set noise-probes >= 1 or pass --images DIR")
    return ProbeSet(x, sources, notes, raw)


def to_model_input(model: Model, x01: torch.Tensor) -> torch.Tensor:
    """0..1 images -> what the model expects (range and normalization), exactly as the render engine does it."""
    from ..preprocess import resolve

    return resolve(model, None, None).module(x01.shape[1])(x01)


@dataclass
class LayerStats:
    """Per channel of one layer, over all probes: `peak` (largest value anywhere), `spread` (largest change of the
    output at one position from one input to another), `nonfinite` (NaN/Inf seen) and `scale` (the layer's
    largest finite |value|)."""

    peak: np.ndarray
    spread: np.ndarray
    nonfinite: np.ndarray
    scale: float
    apoz: np.ndarray | None = None  # fraction of outputs <= 0 per channel (Hu et al. 2016), over every position
    count: int = 0  # inputs seen


class _Acc:
    """Running per-position max and min over the probe batch (everything else derives from those two)."""

    def __init__(self) -> None:
        self.hi: torch.Tensor | None = None
        self.lo: torch.Tensor | None = None
        self.zeros: torch.Tensor | None = None
        self.values = 0
        self.count = 0

    def add(self, a: torch.Tensor) -> None:
        a = a.detach()
        if a.dim() < 2:
            a = a.reshape(a.shape[0], 1)
        z = (a <= 0).transpose(0, 1).reshape(a.shape[1], -1).sum(1).double().cpu()
        self.zeros = z if self.zeros is None else self.zeros + z
        self.values += a.numel() // a.shape[1]
        self.count += a.shape[0]
        hi, lo = a.amax(0).float(), a.amin(0).float()
        if self.hi is None or self.lo is None:
            self.hi, self.lo = hi, lo
        else:
            self.hi = torch.maximum(self.hi, hi)
            self.lo = torch.minimum(self.lo, lo)

    def result(self) -> LayerStats:
        assert self.hi is not None and self.lo is not None
        c = self.hi.shape[0]
        hi, lo = self.hi.reshape(c, -1), self.lo.reshape(c, -1)
        bad = ~(torch.isfinite(hi).all(1) & torch.isfinite(lo).all(1))
        peak = hi.amax(1)
        spread = (hi - lo).amax(1)
        fin_hi = torch.where(torch.isfinite(hi), hi.abs(), torch.zeros_like(hi))
        fin_lo = torch.where(torch.isfinite(lo), lo.abs(), torch.zeros_like(lo))
        scale = float(torch.maximum(fin_hi.amax(), fin_lo.amax())) if hi.numel() else 0.0
        apoz = (self.zeros / max(self.values, 1)).numpy() if self.zeros is not None else None
        return LayerStats(peak.double().cpu().numpy(), spread.double().cpu().numpy(), bad.cpu().numpy(), scale, apoz,
                          self.count)


def layer_stats(model: Model, layers: Sequence[CheckedLayer], probes: torch.Tensor, batch: int = 8,
                progress: Callable[[int], None] | None = None, raw: bool = False,
                extra: Sequence[Any] = ()) -> dict[int, LayerStats]:
    """Run the probes through the graph cut at `layers` (never past the deepest) and collect per-channel stats,
    keyed by layer index. `raw`: the probes are already model inputs (not 0..1 images); `extra`: more layers to
    measure (e.g. the nodes before the gates)."""
    keys = [c.layer for c in layers] + [lay for lay in extra if lay is not None]
    keys = list({lay.index: lay for lay in keys}.values())
    cut = model.cut_at(keys)
    accs = {lay.index: _Acc() for lay in keys}
    bs = batch if model.batch_ok else 1
    with torch.no_grad():
        for s in range(0, probes.shape[0], bs):
            x = probes[s:s + bs] if raw else to_model_input(model, probes[s:s + bs])
            outs = cut(*model.feeds(x))
            for lay, a in zip(keys, outs):
                accs[lay.index].add(a)
            if progress:
                progress(min(bs, probes.shape[0] - s))
    return {i: a.result() for i, a in accs.items()}
