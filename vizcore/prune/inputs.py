"""Model inputs for the evidence and the verification: seeded noise, a user's images or .npy files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import OptionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16:
          np.float16, onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32}


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, numpy dtype and dims (None: free)."""

    name: str
    dtype: type
    dims: tuple[int | None, ...]

    def shape(self, batch: int, size: int) -> tuple[int, ...]:
        """Concrete dims: a free batch dim gets `batch`, free spatial dims `size`."""
        out = []
        for i, d in enumerate(self.dims):
            out.append(d if d is not None else (batch if i == 0 else size if i >= 2 else 1))
        return tuple(out)

    @property
    def fixed_batch(self) -> int | None:
        return self.dims[0] if self.dims else None


def specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        out.append(InputSpec(i.name, _TYPES.get(tt.elem_type, np.float32), dims))
    if not out:
        raise OptionError("the model has no inputs to feed", "prune needs a model that takes an input tensor")
    return out


def preprocessing(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """mean, std, range from `vizcore.*` metadata_props, else ImageNet mean/std on 0..1."""
    meta = {p.key: p.value for p in model.metadata_props}

    def floats(key: str, default: list[float]) -> np.ndarray:
        try:
            return np.array([float(v) for v in meta[key].split(",")], dtype=np.float32)
        except (KeyError, ValueError):
            return np.array(default, dtype=np.float32)

    lo, hi = floats("vizcore.range", [0.0, 1.0])[:2] if "vizcore.range" in meta else (0.0, 1.0)
    return floats("vizcore.mean", [0.485, 0.456, 0.406]), floats("vizcore.std", [0.229, 0.224, 0.225]), (lo, hi)


def to_model(images01: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    """0..1 images (N, C, H, W) -> the model's input space."""
    mean, std, (lo, hi) = preprocessing(model)
    c = images01.shape[1]
    x = lo + images01 * (hi - lo)
    if c in (1, 3) and len(mean) in (1, c):
        shape = (1, -1) + (1,) * (images01.ndim - 2)
        scale = hi - lo
        x = (x - (mean * scale).reshape(shape)) / (std * scale).reshape(shape)
    return x.astype(np.float32)


def noise(spec: InputSpec, n: int, size: int, seed: int, model: onnx.ModelProto) -> np.ndarray:
    """`n` seeded inputs: half uniform 0..1 images in the model's input space, half standard normal."""
    rng = np.random.default_rng(seed)
    shape = (n,) + spec.shape(1, size)[1:]
    if not np.issubdtype(spec.dtype, np.floating):
        return rng.integers(0, 2, size=shape).astype(spec.dtype)
    x = rng.standard_normal(shape).astype(np.float32)
    half = n // 2
    if len(shape) == 4 and half:
        x[:half] = to_model(rng.random((half,) + shape[1:]).astype(np.float32), model)
    return x.astype(spec.dtype)


def load_data(path: str | Path, spec: InputSpec, size: int, model: onnx.ModelProto) -> np.ndarray:
    """A folder of images / .npy files, or one .npy file: model-ready arrays (.npy taken as they are)."""
    p = Path(path)
    if not p.exists():
        raise OptionError(f"--data {p}: no such file or folder", "pass a folder of images or .npy files")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES + (".npy",)) if p.is_dir() else [p]
    if not files:
        raise OptionError(f"--data {p}: no images or .npy files in it", "supported: " + ", ".join(IMAGE_SUFFIXES))
    shape = spec.shape(1, size)
    arrays = []
    for f in files[:256]:
        arrays.append(_npy(f, shape) if f.suffix.lower() == ".npy" else _image(f, shape, model))
    x = np.concatenate(arrays).astype(spec.dtype)
    return x


def _npy(f: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OptionError(f"--data: cannot read {f.name}: {exc}", "pass arrays saved with numpy.save") from exc
    if a.shape == shape[1:]:
        a = a[None]
    if a.shape[1:] != shape[1:]:
        raise OptionError(f"--data: {f.name} has shape {list(a.shape)}, the model takes {list(shape)}",
                          "save arrays of the model's input shape (with or without the batch axis)")
    return a


def _image(f: Path, shape: tuple[int, ...], model: onnx.ModelProto) -> np.ndarray:
    from PIL import Image

    if len(shape) != 4 or shape[1] not in (1, 3):
        raise OptionError(f"--data: images need a 1- or 3-channel image input; the model takes {list(shape)}",
                          "pass .npy arrays instead")
    try:
        with Image.open(f) as im:
            im = im.convert("L" if shape[1] == 1 else "RGB").resize((shape[3], shape[2]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as exc:
        raise OptionError(f"--data: cannot read {f.name}: {exc}", "remove it or convert it") from exc
    a = a[None, None] if a.ndim == 2 else a.transpose(2, 0, 1)[None]
    return to_model(a, model)
