"""The inputs a command runs a model on, built one way for check, prune and the atlas: seeded noise, the sample
photos scikit-image ships, and the user's `--data` (images or `.npy` arrays, regular files only, read in batches).

Everything here is numpy: images come back in 0..1 as (N, C, *spatial) float32 (an `InputSpace` maps them to
the model's input), `.npy` arrays as they are, in the model's own units. Nothing downloads.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptionError, oneline
from .inputs import open_npy, require_readable

#: scikit-image sample photos used as natural-image probes (files shipped inside the package).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "ihc.png",
                  "hubble_deep_field.jpg", "retina.jpg", "camera.png", "coins.png", "brick.png", "grass.png",
                  "page.png", "color.png")
#: Natural probe photos shipped in the package, used when scikit-image is not installed.
SHIPPED_PHOTOS = Path(__file__).resolve().parent / "data" / "probes"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_USER_IMAGES = 256
MAX_PIXELS = 64_000_000  # a larger image file is refused before decoding (decompression bombs)
MAX_ARRAY_EXAMPLES = 1024  # examples read from a --data folder's .npy files
MAX_ARRAY_VALUES = 1 << 27  # values in all of them together (512 MiB of float32)
#: the caps of a streamed pass (`open_data(..., stream=True)`: exemplars), which never holds more than one batch
STREAM_LIMITS = (1_000_000, 100_000_000, 1 << 62)  # images, .npy examples, .npy values


def is_image(shape: Sequence[int]) -> bool:
    """Whether an input of this (N, C, H, W) shape takes pictures: 1 or 3 channels, two spatial dims."""
    return len(shape) == 4 and shape[1] in (1, 3)


def _resize_axis(z: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation along one axis (half-pixel centres, edges clamped: torch's align_corners=False)."""
    n = z.shape[axis]
    if n == size:
        return z
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0).reshape([-1 if a == axis else 1 for a in range(z.ndim)])
    return np.take(z, i0, axis=axis) * (1 - w) + np.take(z, i1, axis=axis) * w


def noise(shape: Sequence[int], count: int, seed: int = 0) -> np.ndarray:
    """`count` seeded noise images in 0..1: smooth to fine spatial scales, low to full contrast, plus flat grey."""
    c, *sp = (int(d) for d in shape[1:])
    rng = np.random.default_rng(seed)
    out = []
    scales, contrasts = (1, 2, 4, 8, 16, 32), (1.0, 0.5, 0.2)
    for k in range(count):
        if k == count - 1 and count > 3:
            out.append(np.full((c, *sp), 0.5, dtype=np.float32))  # a flat image: a constant unit still answers it
            continue
        s = scales[k % len(scales)]
        amp = contrasts[(k // len(scales)) % len(contrasts)]
        z = rng.random((c, *[max(1, d // s) for d in sp]))
        for axis, d in enumerate(sp, start=1):
            z = _resize_axis(z, axis, d)
        out.append(np.clip(0.5 + amp * (z - 0.5), 0, 1).astype(np.float32))
    return np.stack(out) if out else np.zeros((0, c, *sp), dtype=np.float32)


def signed_noise(shape: Sequence[int], count: int, seed: int = 0) -> np.ndarray:
    """Noise of both signs, about -2..2, in the model's own units: probes for inputs that are not images."""
    return (noise(shape, count, seed) - 0.5) * 4.0


def fit(img: Any, c: int, hw: tuple[int, int]) -> np.ndarray:
    """A PIL image as a (c, h, w) float32 array in 0..1: centre-cropped to the aspect ratio, resized, grey or RGB."""
    from PIL import Image

    im = img.convert("L" if c == 1 else "RGB")
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
    return np.ascontiguousarray(a)


def photos(shape: Sequence[int]) -> tuple[np.ndarray | None, str | None]:
    """The scikit-image sample photos at the probe shape, or (None, why not)."""
    got, why = _photos(tuple(int(d) for d in shape))
    return (got.copy() if got is not None else None), why


@functools.lru_cache(maxsize=4)
def _photos(shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    if not is_image(shape):
        return None, "sample photos skipped: the input is not a 1- or 3-channel image"
    try:
        import skimage.data

        folder, names = Path(os.path.dirname(skimage.data.__file__)), SKIMAGE_PHOTOS
    except ImportError:  # the few photos shipped with vizcore (data/probes/LICENSE.txt)
        folder = SHIPPED_PHOTOS
        names = tuple(sorted(p.name for p in folder.glob("*.jpg")))
    from PIL import Image

    imgs = []
    for name in names:
        p = folder / name
        if p.is_file():
            with Image.open(p) as im:
                imgs.append(fit(im, shape[1], (shape[2], shape[3])))
    if not imgs:
        return None, f"no sample photos in {folder}: probes use noise only"
    return np.stack(imgs), None


def _decoded(path: Path, flag: str, convert: Callable[[Any], np.ndarray]) -> np.ndarray:
    """`convert(image)` of one image file; a huge (refused unread: decompression bombs) or unreadable file is a
    one-line OptionError. The one place vizcore opens an image a user or a report handed it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise OptionError(f"{flag}: {path.name} is {w}x{h} pixels, more than {MAX_PIXELS:,} (refused unread)",
                                  "resize it, or remove it from the folder")
            return convert(im)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise OptionError(f"{flag}: cannot read {path.name}: {oneline(exc, 200, typed=False)}",
                          "remove it or convert it") from exc


def read_image(p: Path, shape: Sequence[int], flag: str) -> np.ndarray:
    """One image file at the probe shape (C, H, W), in 0..1."""
    return _decoded(p, flag, lambda im: fit(im, shape[1], (shape[2], shape[3])))


def read_picture(path: Path, flag: str = "picture") -> np.ndarray:
    """An image file at its own size as (C, H, W) float32 in 0..1 (grey stays one channel, anything else RGB)."""
    def array(im: Any) -> np.ndarray:
        a = np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"), dtype=np.float32) / 255.0
        return (a[..., None] if a.ndim == 2 else a).transpose(2, 0, 1)

    return _decoded(path, flag, array)


def _regular_files(path: Path, flag: str, suffixes: Sequence[str]) -> list[Path]:
    """The files with one of `suffixes` in a folder (not recursive, sorted by name), or the one file given; each
    must be a readable regular file (a FIFO, a device or a folder so named is a one-line OptionError)."""
    if not path.exists():
        raise OptionError(f"{flag} {path}: no such file or folder", "pass a folder of images or .npy arrays")
    files = [f for f in (sorted(path.iterdir()) if path.is_dir() else [path]) if f.suffix.lower() in suffixes]
    for f in files:  # a FIFO would block the read, a device stream forever: refused by name, unread
        require_readable(f, f"{flag} file", OptionError)
    return files


def user_images(folder: str | os.PathLike[str], shape: Sequence[int]) -> np.ndarray:
    """The images in `folder` (not recursive, sorted by name, at most 256) at the probe shape, in 0..1."""
    d = Path(folder)
    if not d.is_dir():
        raise OptionError(f"--images {d}: not a folder", "pass a folder of .png/.jpg images")
    if not is_image(shape):
        raise OptionError(f"--images needs a 1- or 3-channel image input; the model's is {list(shape)}")
    files = _regular_files(d, "--images", IMAGE_SUFFIXES)
    if not files:
        raise OptionError(f"--images {d}: no images in it", "supported: " + ", ".join(IMAGE_SUFFIXES))
    return np.stack([read_image(p, shape, "--images") for p in files[:MAX_USER_IMAGES]])


@dataclass(frozen=True)
class Batch:
    """Examples read together: `x` (N, C, ...) float32, 0..1 images when `images` (map them with an `InputSpace`)
    else arrays in the model's units, and each example's number in its `DataSet` (`DataSet.source` names it)."""

    x: np.ndarray
    images: bool
    numbers: np.ndarray  # int64 (N,)
    stop: int  # the number after the last example this batch covered (skipped files included): where to go on


@dataclass
class DataSet:
    """A `--data` folder (or one file): its image files (read in 0..1 at the model's shape) and `.npy` arrays (in
    the model's own units), opened and checked up front, read batch by batch. Examples are numbered in order:
    the images (sorted by name), then each array's examples. An image that cannot be read is skipped, named in
    `skipped` and in a warning; the pass goes on."""

    path: Path
    shape: tuple[int, ...]
    image_files: list[Path] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)  # memory-mapped, already cut to the example cap
    array_files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why each file a batch skipped was (names it)

    @property
    def files(self) -> dict[str, int]:
        """File counts per kind, for reports."""
        return {"images": len(self.image_files), "npy": len(self.array_files)}

    @property
    def count(self) -> int:
        """Examples in all."""
        return len(self.image_files) + sum(int(a.shape[0]) for a in self.arrays)

    def batches(self, batch: int, start: int = 0) -> Iterator[Batch]:
        """Every example from number `start` on, `batch` at a time: the images, then the arrays (a batch never
        mixes the two, nor two arrays)."""
        yield from self._image_batches(batch, start)
        offset = len(self.image_files)
        for a in self.arrays:
            n = int(a.shape[0])
            for s in range(max(0, start - offset), n, batch):
                m = min(batch, n - s)
                yield Batch(np.asarray(a[s:s + m], dtype=np.float32), False, np.arange(offset + s, offset + s + m),
                            offset + s + m)
            offset += n

    def _image_batches(self, batch: int, start: int) -> Iterator[Batch]:
        for s in range(start, len(self.image_files), batch):
            got, nums = [], []
            for i, p in enumerate(self.image_files[s:s + batch], start=s):
                try:
                    got.append(read_image(p, self.shape, "--data"))
                    nums.append(i)
                except OptionError as exc:  # named and skipped: one bad file does not stop a pass over many
                    why = exc.message.removeprefix("--data: ")
                    self.skipped.append(why)
                    warnings.warn(f"--data: skipped, {why}", stacklevel=3)
            if got:
                stop = min(s + batch, len(self.image_files))
                yield Batch(np.stack(got), True, np.asarray(nums, dtype=np.int64), stop)

    def image_batches(self, batch: int) -> Iterator[np.ndarray]:
        """The images, `batch` at a time, in 0..1 (N, C, H, W); unreadable files are skipped (see `skipped`), and
        when none can be read it is a one-line OptionError naming the first."""
        read = 0
        for b in self._image_batches(batch, 0):
            read += len(b.numbers)
            yield b.x
        if self.image_files and not read:
            raise OptionError(f"--data {self.path}: no image could be read: {self.skipped[0]}"
                              + (f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""),
                              "remove or convert the files")

    def array_batches(self, batch: int) -> Iterator[np.ndarray]:
        """The arrays' examples, `batch` at a time, as float32 in the model's units."""
        for b in self.batches(batch, len(self.image_files)):
            yield b.x

    def source(self, number: int) -> tuple[str, int | None]:
        """Example `number`'s file (its name inside the folder) and its index inside an `.npy` (None: an image)."""
        if number < len(self.image_files):
            return self.image_files[number].name, None
        n = number - len(self.image_files)
        for f, a in zip(self.array_files, self.arrays):
            if n < a.shape[0]:
                return f.name, n
            n -= int(a.shape[0])
        raise IndexError(f"example {number} of {self.count}")

    def example(self, number: int) -> tuple[np.ndarray, bool]:
        """Example `number` read again, (C, ...), and whether it is a 0..1 image."""
        if number < len(self.image_files):
            return read_image(self.image_files[number], self.shape, "--data"), True
        n = number - len(self.image_files)
        for a in self.arrays:
            if n < a.shape[0]:
                return np.asarray(a[n], dtype=np.float32), False
            n -= int(a.shape[0])
        raise IndexError(f"example {number} of {self.count}")

    def fingerprint(self) -> str:
        """A hash of what the data is: every file's name, size and modification time, the examples used of each
        and the shape images are read at (a changed or added file changes it; contents are not read)."""
        h = hashlib.sha256(repr(self.shape).encode())
        used = [(p, 1) for p in self.image_files] + [(p, int(a.shape[0])) for p, a in zip(self.array_files,
                                                                                         self.arrays)]
        for p, n in used:
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\0{n}\n".encode())
        return h.hexdigest()


def open_data(path: str | os.PathLike[str], shape: Sequence[int], flag: str = "--data", *,
              stream: bool = False) -> DataSet:
    """A `DataSet` for a folder of images and/or `.npy` arrays (or one such file), checked against the model's
    input shape (N, C, ...): one-line errors for a missing folder, nothing usable, a wrong shape or dtype.
    `stream`: the caller reads it batch by batch and keeps nothing (exemplars): `STREAM_LIMITS` instead of the
    caps of a pass that holds what it reads (`MAX_USER_IMAGES`, `MAX_ARRAY_EXAMPLES`, `MAX_ARRAY_VALUES`)."""
    p = Path(path)
    caps = STREAM_LIMITS if stream else (MAX_USER_IMAGES, MAX_ARRAY_EXAMPLES, MAX_ARRAY_VALUES)
    files = _regular_files(p, flag, (*IMAGE_SUFFIXES, ".npy"))
    imgs = [f for f in files if f.suffix.lower() != ".npy"][:caps[0]]
    arrs = [f for f in files if f.suffix.lower() == ".npy"]
    if not imgs and not arrs:
        raise OptionError(f"{flag} {p}: no images or .npy arrays in it",
                          "supported: .npy, " + ", ".join(IMAGE_SUFFIXES))
    if imgs and not is_image(shape):
        raise OptionError(f"{flag} {p}: images need a 1- or 3-channel image input; the model's is {list(shape)}",
                          "save your examples as .npy arrays instead")
    ds = DataSet(p, tuple(int(d) for d in shape), imgs)
    _open_arrays(ds, arrs, flag, caps[1], caps[2])
    return ds


def _open_arrays(ds: DataSet, files: Sequence[Path], flag: str, max_examples: int = MAX_ARRAY_EXAMPLES,
                 max_values: int = MAX_ARRAY_VALUES) -> None:
    """Memory-map each `.npy` (one example (C, ...) or a batch (N, C, ...)); caps on examples and values."""
    want = ds.shape[1:]
    n = values = 0
    for p in files:
        a = open_npy(p, f"{flag}:", max_values, mmap=True)
        if a.ndim == len(want):
            a = a[None]
        if a.ndim != len(want) + 1 or a.shape[1] != want[0] or (ds.arrays and a.shape[1:] != ds.arrays[0].shape[1:]):
            raise OptionError(f"{flag}: {p.name} has shape {list(a.shape)}; the model's input is "
                              f"(N, {', '.join(map(str, want))})", "save one example (C, ...) or a batch (N, C, ...)")
        a = a[:max_examples - n]
        values += int(a.size)
        if values > max_values:
            raise OptionError(f"{flag}: more than {max_values:,} values in the .npy files",
                              "pass a smaller sample of your data")
        ds.arrays.append(a)
        ds.array_files.append(p)
        n += a.shape[0]
        if n >= max_examples:
            break


#: What the probes may hold at once (float32): all probe images, and one batch of them.
MAX_PROBE_BYTES, MAX_BATCH_BYTES = 4 * 2**30, 2**30


def refuse_probe_memory(shape: Sequence[int], noise_count: int, batch: int, *, use_photos: bool = True,
                        images: object = None, flag: str = "--noise-probes") -> None:
    """An OptionError, before any probe is made, when the probes `probe_set` would make for an input of `shape`
    (at most: noise, the sample photos, a full `--images` folder) or one batch of them would not fit in memory."""
    per = 4 * math.prod(int(d) for d in shape[1:])
    count = noise_count + (len(SKIMAGE_PHOTOS) if use_photos else 0) + (MAX_USER_IMAGES if images else 0)
    for what, need, cap, hint in (("the probes", count * per, MAX_PROBE_BYTES, f"fewer {flag}"),
                                  ("one probe batch", batch * per, MAX_BATCH_BYTES, "a smaller --batch")):
        if need > cap:
            raise OptionError(f"{what} at {'x'.join(map(str, shape[2:]))} would hold {need / 2**30:,.1f} GiB "
                              f"(at most {cap / 2**30:g} GiB)", f"pass a smaller --size or {hint}")


@dataclass
class ProbeSet:
    """Probe images in 0..1 (N, C, *spatial), signed noise in the model's units for inputs that are not images,
    and where each group came from (for the report)."""

    images: np.ndarray
    sources: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: np.ndarray | None = None


def probe_set(shape: Sequence[int], *, noise_count: int = 12, use_photos: bool = True,
              images: str | os.PathLike[str] | None = None, seed: int = 0) -> ProbeSet:
    """Every built-in probe for an input of `shape` (N, C, ...), with a count per source: noise, the sample photos,
    the `--images` folder, and signed noise when the input is not an image."""
    parts = [noise(shape, noise_count, seed)]
    sources, notes = {"noise": noise_count}, []
    if use_photos:
        ph, why = photos(shape)
        if ph is not None:
            parts.append(ph)
            sources["skimage"] = ph.shape[0]
        elif why:
            notes.append(why)
    if images is not None:
        ui = user_images(images, shape)
        parts.append(ui)
        sources["images"] = ui.shape[0]
    x = np.concatenate(parts)
    raw = None
    if not is_image(shape) and noise_count:
        raw = signed_noise(shape, noise_count, seed + 1)
        sources["signed noise"] = noise_count
    if x.shape[0] == 0:
        raise OptionError("no probe inputs: noise-probes is 0 and there are no photos or --images",
                          "set noise-probes >= 1 or pass --images DIR")
    return ProbeSet(x, sources, notes, raw)
