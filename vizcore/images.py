"""The pictures of a render, and the project's one PNG encoder: a unit's image (a line plot for a 1-D signal), a
labelled contact sheet, PNG bytes. Imports numpy and PIL only, so every writer of pictures can use it."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Line colours of a signal plot, one per input channel.
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
LABEL_HEIGHT = 28


def plot_signal(sig: np.ndarray, width: int = 320, height: int = 120) -> Image.Image:
    """A line plot of a 1-D signal (L, C) with values in 0..255, one colour per channel."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    length = sig.shape[0]
    for c in range(sig.shape[1]):
        pts = [(i * (width - 1) / max(1, length - 1), (height - 1) * (1 - sig[i, c] / 255.0)) for i in range(length)]
        draw.line(pts, fill=COLOURS[c % len(COLOURS)], width=1)
    return img


def unit_image(arr: np.ndarray, size: int | None = None, *, signal: bool | None = None) -> Image.Image:
    """One unit's picture from its uint8 array: (H, W, C) an image, optionally resized to `size` pixels wide;
    (L, C) a 1-D signal (`signal` None: decided by the number of axes), drawn as a line plot `size` wide."""
    a = np.asarray(arr)
    if signal if signal is not None else a.ndim == 2:
        return plot_signal(a, width=size or 320)
    a = a.astype(np.uint8, copy=False)
    img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a[..., :3])
    if size and img.width != size:
        img = img.resize((size, round(img.height * size / img.width)), Image.BILINEAR)
    return img


def grid(pictures: Sequence[Image.Image], captions: Sequence[tuple[str, str]] | None = None,
         cols: int | None = None, cell: int = 160) -> Image.Image:
    """A contact sheet of pictures already `cell` wide, each with an optional two-line caption (name, value)."""
    n = len(pictures)
    if n == 0:
        return Image.new("RGB", (8, 8), "white")
    cols = cols or max(1, min(n, int(np.ceil(np.sqrt(n)))))
    rows = int(np.ceil(n / cols))
    label_h = LABEL_HEIGHT if captions is not None else 0
    ch = pictures[0].height
    sheet = Image.new("RGB", (cols * (cell + 4) + 4, rows * (ch + label_h + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for i, pic in enumerate(pictures):
        r, c = divmod(i, cols)
        x, y = 4 + c * (cell + 4), 4 + r * (ch + label_h + 4)
        sheet.paste(pic.convert("RGB"), (x, y))
        if captions is not None:
            name, value = captions[i]
            draw.text((x, y + ch + 1), name[-26:], fill=(0, 0, 0))
            draw.text((x, y + ch + 14), value, fill=(90, 90, 90))
    return sheet


def png_bytes(picture: Image.Image | np.ndarray, *, optimize: bool = False) -> bytes:
    """PNG bytes of a picture (an array goes through `unit_image` first)."""
    img = picture if isinstance(picture, Image.Image) else unit_image(picture)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()
