"""The pictures of a render, and the project's one PNG encoder: a unit's image (a line plot for a 1-D signal), a
labelled contact sheet, PNG bytes. Imports numpy and PIL only, so every writer of pictures can use it."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Line colours of a signal plot, one per input channel.
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
LABEL_HEIGHT = 28


AXIS = (60, 60, 60)
GRIDLINE = (225, 225, 225)
NICE = (1, 2, 2.5, 5)


def _nice_step(span: float, fits: int, whole: bool = False) -> float:
    """The smallest nice step (1, 2, 2.5, 5 x 10^k; a whole number with `whole`) that cuts `span` into fewer than
    `fits` parts."""
    fits = max(2, fits)
    mag = 10.0 ** float(np.floor(np.log10(span / fits))) if span > 0 else 1.0
    while True:
        for m in NICE:
            step = m * mag
            if (not whole or float(step).is_integer()) and span / step < fits:
                return step
        mag *= 10


def _ticks(last: int, fits: int) -> list[int]:
    """Sample ticks 0, step, 2*step ... <= `last`, at most `fits` of them, at a whole nice step."""
    return list(range(0, last + 1, int(_nice_step(last, fits, whole=True))))


def _time_ticks(last: int, rate: float, fits: int) -> list[float]:
    """Sample positions of round times (0, step, 2*step ... s, at a nice step) when the rate is known."""
    span = last / rate
    step = _nice_step(span, fits)
    return [k * step * rate for k in range(int(span / step + 1e-9) + 1)]


def _seconds(samples: float, rate: float, duration: float) -> str:
    """A tick's time: milliseconds for signals under a second, else seconds."""
    t = samples / rate
    return f"{t * 1000:.3g} ms" if duration < 1 else f"{t:.3g} s"


def signal_box(width: int, height: int, value_range: Sequence[float] | None = None,
               sample_rate: float | None = None) -> tuple[int, int, int, int]:
    """The plot area (x0, y0, x1, y1) of `plot_signal`: room on the left for the value labels, below for the
    sample ticks (and a row of times with a sample rate)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = ImageFont.load_default()
    text_h = max(draw.textbbox((0, 0), "0123456789", font=font)[3], 8)
    left = max(draw.textlength(t, font=font) for t in _value_labels(value_range)) + 6
    rows = 2 if sample_rate else 1
    return int(left), text_h // 2 + 1, width - 8, height - 4 - rows * (text_h + 1)


def _value_labels(value_range: Sequence[float] | None) -> list[str]:
    lo, hi = (float(value_range[0]), float(value_range[1])) if value_range is not None else (0.0, 1.0)
    return [f"{v:.3g}" for v in (hi, (lo + hi) / 2, lo)]


def plot_signal(sig: np.ndarray, width: int = 320, height: int = 120, *,
                value_range: Sequence[float] | None = None, sample_rate: float | None = None) -> Image.Image:
    """A line plot of a 1-D signal (L, C) with values in 0..255, one colour per channel, on the signal's own axes:
    value labels (0..255 drawn as `value_range`, the model's input range; default 0..1) at the ends and middle,
    sample ticks along x and, when `sample_rate` (Hz) is given, each tick's time below them."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, y0, x1, y1 = signal_box(width, height, value_range, sample_rate)
    text_h = max(draw.textbbox((0, 0), "0123456789", font=font)[3], 8)
    length = sig.shape[0]
    for frac, text in zip((0.0, 0.5, 1.0), _value_labels(value_range)):  # gridlines and labels at hi, middle, lo
        y = round(y0 + frac * (y1 - y0))
        draw.line([(x0, y), (x1, y)], fill=GRIDLINE)
        draw.text((x0 - 4, y), text, fill=AXIS, font=font, anchor="rm")
    duration = length / sample_rate if sample_rate else 0.0
    last = _seconds(length - 1, sample_rate, duration) if sample_rate else str(length - 1)
    wide = draw.textlength(last, font=font)
    fits = int((x1 - x0) // (wide + 8))
    ticks = _time_ticks(length - 1, sample_rate, fits) if sample_rate else _ticks(length - 1, fits)
    for i in ticks:  # sample axis: ticks at round sample counts (or round times), samples, times
        x = x0 + i * (x1 - x0) / max(1, length - 1)
        draw.line([(x, y1), (x, y1 + 2)], fill=AXIS)
        texts = [str(round(i))] + ([_seconds(i, sample_rate, duration)] if sample_rate else [])
        for row, text in enumerate(texts):
            half = draw.textlength(text, font=font) / 2
            draw.text((min(x, width - 1 - half), y1 + 3 + row * (text_h + 1)), text, fill=AXIS, font=font,
                      anchor="ma")
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=AXIS)
    for c in range(sig.shape[1]):
        pts = [(x0 + i * (x1 - x0) / max(1, length - 1), y0 + (y1 - y0) * (1 - float(sig[i, c]) / 255.0))
               for i in range(length)]
        if length == 1:  # one sample: a constant across the plot
            pts = [(x0, pts[0][1]), (x1, pts[0][1])]
        draw.line(pts, fill=COLOURS[c % len(COLOURS)], width=1)
    return img


def unit_image(arr: np.ndarray, size: int | None = None, *, signal: bool | None = None,
               value_range: Sequence[float] | None = None, sample_rate: float | None = None) -> Image.Image:
    """One unit's picture from its uint8 array: (H, W, C) an image, optionally resized to `size` pixels wide;
    (L, C) a 1-D signal (`signal` None: decided by the number of axes), drawn as a line plot `size` wide with
    `plot_signal`'s axes (`value_range`, `sample_rate`)."""
    a = np.asarray(arr)
    if signal if signal is not None else a.ndim == 2:
        return plot_signal(a, width=size or 320, value_range=value_range, sample_rate=sample_rate)
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
