"""vizcore.images: the one PNG encoder and the pictures of a result (unit image, grid, 1-D signal plot)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
from PIL import Image

from vizcore import images
from vizcore.result import Result, Unit


def _result(arrays: np.ndarray) -> Result:
    n = len(arrays)
    return Result(images=arrays, values=np.arange(n, dtype=np.float32) / 4, traces=[[0.0]] * n,
                  units=[Unit(f"layer:{i}", "channel") for i in range(n)], settings={}, model={})


def test_png_bytes_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(images.png_bytes(rgb)))), rgb)
    back = np.asarray(Image.open(io.BytesIO(images.png_bytes(grey, optimize=True))))
    assert back.shape == (5, 7) and np.array_equal(back, grey[..., 0])


def test_result_pictures_are_the_images_modules() -> None:
    rng = np.random.default_rng(1)
    res = _result(rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(res.image(1)), res.images[1])
    assert res.image(1, 10).size == (10, 10)
    sheet = res.grid(cell=20)
    assert sheet.size == (2 * 24 + 4, 2 * (20 + images.LABEL_HEIGHT + 4) + 4)  # 3 units: 2 columns, 2 rows
    assert np.array_equal(np.asarray(sheet)[4:24, 4:24], res.images[0])  # first cell is unit 0, unscaled
    assert res._repr_png_() == images.png_bytes(res.grid())
    assert res.grid(cell=20, labels=False).size == (52, 2 * 24 + 4)


def test_signals_are_line_plots() -> None:
    sig = np.zeros((50, 2), dtype=np.uint8)
    sig[:, 0] = 255  # channel 0 along the top, channel 1 along the bottom
    res = _result(np.stack([sig, sig]))
    img = np.asarray(res.image(0, 100))
    assert img.shape == (120, 100, 3)
    x0, y0, x1, y1 = images.signal_box(100, 120)  # the plot area, inside the axes' labels
    assert 0 < x0 < 50 < x1 < 100 and 0 < y0 < 60 < y1 < 120
    assert tuple(img[y0, 50]) == images.COLOURS[0] and tuple(img[y1, 50]) == images.COLOURS[1]
    assert tuple(img[(y0 + y1) // 2 + 3, 50]) == (255, 255, 255)
    assert np.array_equal(np.asarray(images.unit_image(sig, 100)), img)  # (L, C) is a signal by its axes


def test_images_imports_only_numpy_pil_and_layer_zero() -> None:
    src = Path(images.__file__).read_text(encoding="utf-8")
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add("." * node.level + (node.module or ""))
    assert mods <= {"__future__", "io", "collections.abc", "numpy", "PIL", ".errors", ".files"}, mods
