"""The outcome of a render: images, objective values, traces and settings; exporters and analysis read it."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .errors import unknown_name
from .files import safe_name
from .outdir import relative, write_folder

#: What every save writes, whatever else is asked for: the images and the manifest (which lists every file).
DEFAULT_EXPORTERS = ("png", "manifest")


@dataclass(frozen=True)
class Unit:
    """One rendered image: its target string, objective kind, layer and channel (when it has them)."""

    target: str
    kind: str
    layer: str | None = None
    layer_index: int | None = None
    channel: int | None = None
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"target": self.target, "kind": self.kind, "layer": self.layer, "layer_index": self.layer_index,
                "channel": self.channel, "label": self.label}


@dataclass
class Result:
    """Images (N, H, W, C) uint8 — or (N, L, C) for 1-D inputs — with per-unit values and traces."""

    images: np.ndarray
    values: np.ndarray
    traces: list[list[float]]
    units: list[Unit]
    settings: dict[str, Any]
    model: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    trace_steps: list[int] = field(default_factory=list)
    best_values: np.ndarray | None = None  # each unit's best value seen during the ascent or at the end
    exporter_table: dict[str, Callable[..., list[Path]]] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        shape = "x".join(str(d) for d in self.images.shape[1:])
        return (f"Result({len(self)} units, images {shape}, values {np.round(self.values[:4], 4).tolist()}"
                f"{'...' if len(self) > 4 else ''}, {self.settings.get('steps', '?')} steps)")

    def __len__(self) -> int:
        return len(self.units)

    @property
    def is_signal(self) -> bool:
        """Whether the input is 1-D (N, C, L): images are then line plots."""
        return self.images.ndim == 3

    def filename(self, i: int) -> str:
        """The file name of unit i's image inside an output folder (sanitized: model names are untrusted)."""
        return f"{i:04d}_{safe_name(self.units[i].target)}.png"

    def image(self, i: int, size: int | None = None) -> Image.Image:
        """Unit i as a PIL image (a line plot for 1-D signals), optionally resized to `size` pixels wide."""
        if self.is_signal:
            return plot_signal(self.images[i], width=size or 320)
        arr = self.images[i]
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3])
        if size and img.width != size:
            img = img.resize((size, round(img.height * size / img.width)), Image.BILINEAR)
        return img

    def grid(self, cols: int | None = None, cell: int = 160, labels: bool = True) -> Image.Image:
        """A labelled contact sheet of every unit (label: target and final value)."""
        n = len(self)
        cols = cols or max(1, min(n, int(np.ceil(np.sqrt(n)))))
        rows = int(np.ceil(n / cols))
        label_h = 28 if labels else 0
        first = self.image(0, cell)
        ch = first.height
        sheet = Image.new("RGB", (cols * (cell + 4) + 4, rows * (ch + label_h + 4) + 4), "white")
        draw = ImageDraw.Draw(sheet)
        for i in range(n):
            r, c = divmod(i, cols)
            x, y = 4 + c * (cell + 4), 4 + r * (ch + label_h + 4)
            sheet.paste(self.image(i, cell).convert("RGB"), (x, y))
            if labels:
                u = self.units[i]
                text = u.label or u.target
                draw.text((x, y + ch + 1), text[-26:], fill=(0, 0, 0))
                draw.text((x, y + ch + 14), f"{self.values[i]:.3g}", fill=(90, 90, 90))
        return sheet

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.grid().save(buf, format="PNG")
        return buf.getvalue()

    def save(self, out_dir: str | Path, exporters: tuple[str, ...] | list[str] = DEFAULT_EXPORTERS,
             force: bool = False, **options: Any) -> list[Path]:
        """Write the result into `out_dir`: png and manifest always, plus the named `exporters`; returns the paths.

        All files appear at once or none do (`vizcore.outdir.write_folder`); `manifest.json` is written last and
        lists every other file (`files`). With `force`, the files of an earlier save there are replaced and other
        files are left alone. The exporters are those of the plugin manager that rendered it
        (`vizcore.render(..., plugins=...)` puts its exporter table on the result); `vizcore.save(result, out,
        plugins=...)` chooses another manager.
        """
        names = list(dict.fromkeys([*DEFAULT_EXPORTERS, *exporters]))
        unknown = [name for name in names if name not in self.exporter_table]
        if unknown:  # fail on unknown names before writing anything
            raise unknown_name("exporter", unknown[0], self.exporter_table)

        def write(folder: Path) -> list[Path]:
            written: list[Path] = []
            for name in names:
                if name != "manifest":
                    written.extend(self.exporter_table[name](self, folder, **options))
            files = sorted(set(relative(folder, written)))
            return written + list(self.exporter_table["manifest"](self, folder, files=files, **options))

        return write_folder(Path(out_dir), force, write)

    def to_json(self) -> dict[str, Any]:
        """Units with values and traces, as the manifest stores them."""
        return {
            "units": [dict(u.to_json(), file=self.filename(i), value=float(self.values[i]),
                           **({} if self.best_values is None else {"best_value": float(self.best_values[i])}),
                           trace=[float(v) for v in self.traces[i]]) for i, u in enumerate(self.units)],
            "trace_steps": list(self.trace_steps),
        }


def plot_signal(sig: np.ndarray, width: int = 320, height: int = 120) -> Image.Image:
    """A line plot of a 1-D signal (L, C) with values in 0..255, one colour per channel."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    length = sig.shape[0]
    for c in range(sig.shape[1]):
        pts = [(i * (width - 1) / max(1, length - 1), (height - 1) * (1 - sig[i, c] / 255.0)) for i in range(length)]
        draw.line(pts, fill=colours[c % len(colours)], width=1)
    return img
