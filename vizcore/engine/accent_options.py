"""The start picture of a feature accentuation (`RenderOptions.init`) and the penalties it brings, checked when the
options are built: a path must be a readable file (it is decoded when the render knows its size), an array a
(H, W), (C, H, W) or (H, W, C) picture in 0..1 (uint8: 0..255).

Accentuation (Hamblin et al. 2024, "Feature Accentuation"): the ascent starts from the picture and is held near it
by two penalties, `init_pixel` (mean squared pixel distance to the picture, images in 0..1) and `init_feature`
(squared distance of the activations of the layer below the target to the picture's, relative to the picture's:
0 at the start, 1 when the change is as large as the activations themselves). ACCENT_PENALTIES are their weights
when the user gives none (bench/accent.py: the unit's value rises several times over while the picture stays
the photo).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError
from ..inputs import require_readable

#: The accentuation penalties' weights when a start picture is given and the user sets none (bench/accent.py,
#: MobileNetV2 96 px, 48 steps, chelsea.jpg, 4 units): pixel 256 + feature 0.05 rise 59 % as far as a render from
#: noise at pixel RMS 0.039 (noise: 0.218); pixel <= 16 left RMS >= 0.09 (the photo fades); feature >= 0.25 halved
#: the rise (a class logit 70 -> 13) for little visible gain.
ACCENT_PENALTIES = {"init_pixel": 256.0, "init_feature": 0.05}


def start_picture(value: Any) -> str | np.ndarray | None:
    """`init` checked: a readable file's path as text, or a read-only (C, H, W) float32 array in 0..1."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return str(require_readable(value, "--init image", OptionError))
    try:
        a = np.asarray(value)
    except Exception as exc:  # noqa: BLE001  anything that is no array
        raise OptionError(f"init must be an image path or an array, got {type(value).__name__}",
                          "e.g. init='photo.jpg'") from exc
    return _array_picture(a)


def _array_picture(a: np.ndarray) -> np.ndarray:
    """A (C, H, W) float32 copy of a picture array (grey, channel-first or channel-last; an alpha channel dropped)."""
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.number) or a.ndim not in (2, 3) or 0 in a.shape:
        raise OptionError(f"init must be a picture array (H, W), (C, H, W) or (H, W, C), got {a.dtype} "
                          f"{tuple(a.shape)}", "e.g. a float array in 0..1 of shape (3, 224, 224)")
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a[None]
    elif a.shape[0] not in (1, 3) and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].transpose(2, 0, 1)
    if a.shape[0] not in (1, 3):
        raise OptionError(f"init has {a.shape[0]} channels", "give a grey or RGB picture")
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise OptionError("init array values must be finite and in 0..1 (uint8: 0..255)", "divide by 255")
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def picture_name(init: str | np.ndarray | None) -> str | None:
    """What the manifest records of a start picture: its file name, or the array's shape and hash."""
    if init is None:
        return None
    if isinstance(init, str):
        return Path(init).name
    return f"array {'x'.join(map(str, init.shape))} sha256:{hashlib.sha256(init.tobytes()).hexdigest()[:12]}"


def accent_penalties(init: str | np.ndarray | None, regularizers: Mapping[str, float]) -> dict[str, float]:
    """`regularizers` plus the ACCENT_PENALTIES not given (a weight given, even 0, is kept) when there is a start
    picture; without one, an accentuation penalty is a one-line OptionError."""
    if init is None:
        bad = [k for k in ACCENT_PENALTIES if regularizers.get(k)]
        if bad:
            raise OptionError(f"the {bad[0]} penalty holds the render near a start picture, and none is given",
                              "give --init IMAGE (init= in Python)")
        return dict(regularizers)
    return {**ACCENT_PENALTIES, **regularizers}
