"""The outcome of a render: images, objective values, traces and settings; exporters and analysis read it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import images
from .errors import unknown_name
from .files import safe_name
from .outdir import relative, write_folder


def rose_line(entry: dict[str, Any]) -> str:
    """One `rose_above` entry as the line render and check end with: "N of M units rose above 0 (...)"."""
    return (f"{entry['layer']}: {entry['rose']} of {entry['units']} units rose above {entry['threshold']:g} "
            f"(best value > {entry['threshold']:g} within {entry['steps']} steps)")


#: What every save writes, whatever else is asked for: the images and the manifest (which lists every file).
DEFAULT_EXPORTERS = ("png", "manifest")


@dataclass(frozen=True)
class Exporters:
    """Exporter names checked once against a plugin manager's exporter table (`vizcore.api.select_exporters`),
    with that table: a render records for `names`, its Result keeps `table`, and `Result.save` given this value
    writes them without checking the names again."""

    names: tuple[str, ...]
    table: Mapping[str, Callable[..., list[Path]]] = field(repr=False)


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
        if not self.is_signal:
            return images.unit_image(self.images[i], size, signal=False)
        return images.unit_image(self.images[i], size, signal=True, value_range=self.value_range,
                                 sample_rate=self.sample_rate)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The model's input range the images' 0..255 stand for (the render's preprocessing), if recorded."""
        rng = (self.settings.get("preprocess") or {}).get("range")
        return (float(rng[0]), float(rng[1])) if isinstance(rng, (list, tuple)) and len(rng) == 2 else None

    def graph_values(self, i: int) -> np.ndarray:
        """Unit i's 1-D signal (L, C) as float32 in the units the graph input takes: the image's 0..1 mapped onto
        the model's range, then its mean/std (what `vizcore.render` fed the model; feed it to onnxruntime as is,
        after the batch axis and the model's own layout)."""
        pre = self.settings.get("preprocess") or {}
        x = np.asarray(self.images[i], dtype=np.float64) / 255.0
        lo, hi = pre.get("range", (0.0, 1.0))
        mean = np.asarray(pre.get("mean", [0.0]), dtype=np.float64)
        std = np.asarray(pre.get("std", [1.0]), dtype=np.float64)
        return ((lo + x * (hi - lo) - mean) / std).astype(np.float32)

    @property
    def sample_rate(self) -> float | None:
        """Samples per second of a 1-D input: the model's metadata `vizcore.sample_rate`, if a positive number."""
        text = (self.model.get("metadata") or {}).get("vizcore.sample_rate")
        try:
            rate = float(str(text))
        except ValueError:
            return None
        return rate if math.isfinite(rate) and rate > 0 else None

    def grid(self, cols: int | None = None, cell: int = 160, labels: bool = True) -> Image.Image:
        """A labelled contact sheet of every unit (label: target and final value)."""
        captions = [(u.label or u.target, f"{self.values[i]:.3g}") for i, u in enumerate(self.units)]
        return images.grid([self.image(i, cell) for i in range(len(self))], captions if labels else None, cols, cell)

    def _repr_png_(self) -> bytes:
        return images.png_bytes(self.grid())

    def save(self, out_dir: str | Path, exporters: Sequence[str] | Exporters = DEFAULT_EXPORTERS,
             force: bool = False, **options: Any) -> list[Path]:
        """Write the result into `out_dir`: png and manifest always, plus the named `exporters`; returns the paths.

        All files appear at once or none do (`vizcore.outdir.write_folder`); `manifest.json` is written last and
        lists every other file (`files`). With `force`, the files of an earlier save there are replaced and other
        files are left alone. The exporters are those of the plugin manager that rendered it
        (`vizcore.render(..., plugins=...)` puts its exporter table on the result); `vizcore.save(result, out,
        plugins=...)` chooses another manager. Checked `Exporters` (what the render was given) are written with
        their own table, without a second check.
        """
        if isinstance(exporters, Exporters):
            names, table = list(exporters.names), exporters.table
        else:
            names = list(dict.fromkeys([*DEFAULT_EXPORTERS, *exporters]))
            table = self.exporter_table
            unknown = [name for name in names if name not in table]
            if unknown:  # fail on unknown names before writing anything
                raise unknown_name("exporter", unknown[0], table)

        def write(folder: Path) -> list[Path]:
            written: list[Path] = []
            for name in names:
                if name != "manifest":
                    written.extend(table[name](self, folder, **options))
            files = sorted(set(relative(folder, written)))
            return written + list(table["manifest"](self, folder, files=files, **options))

        return write_folder(Path(out_dir), force, write)

    def _unit_extras(self, i: int) -> dict[str, Any]:
        """Per-unit findings the manifest records with the unit: the nearest tokens of an optimized embedding, the
        unit's exemplars from the user's data (`vizcore.evidence.attach_exemplars`), its trust verdict
        (`vizcore.evidence.trust`), its start picture and distances to it (feature accentuation)."""
        out: dict[str, Any] = {}
        tokens = self.extras.get("nearest_tokens")
        if tokens:
            out["nearest_tokens"] = [[list(c) for c in pos] for pos in tokens[i]]
        found = (self.extras.get("exemplars") or {}).get(i)
        if found is not None:
            out["exemplars"] = found
        judged = (self.extras.get("trust") or {}).get(i)
        if judged is not None:
            out["trust"] = judged
        start = self.extras.get("init")
        if start:  # feature accentuation: the start picture and how far the unit's picture moved from it
            out["init"] = {"file": start["file"], **{k: float(v[i]) for k, v in start.items()
                                                      if k != "file" and i < len(v)}}
        return out

    def rose_above(self, threshold: float = 0.0) -> list[dict[str, Any]]:
        """Per layer whose channels were rendered: how many of its units' best value rose above `threshold`
        (the feature-visualization article's "65 of 512 filters have a loss above zero"); see `rose_line`."""
        if self.best_values is None:
            return []
        groups: dict[int, list[int]] = {}
        for i, u in enumerate(self.units):
            if u.kind in ("channel", "neuron") and u.layer_index is not None and u.channel is not None:
                groups.setdefault(int(u.layer_index), []).append(i)
        steps = int(self.settings.get("steps") or 0)
        return [{"layer": self.units[ix[0]].layer, "layer_index": li, "units": len(ix), "threshold": threshold,
                 "steps": steps, "rose": int(np.sum(np.asarray(self.best_values)[ix] > threshold))}
                for li, ix in groups.items()]

    @property
    def trust(self) -> list[dict[str, Any] | None]:
        """Each unit's trust verdict, reasons and numbers (`vizcore.trust`; None where it was not assessed)."""
        judged = self.extras.get("trust") or {}
        return [judged.get(i) for i in range(len(self))]

    def to_json(self) -> dict[str, Any]:
        """Units with values and traces, as the manifest stores them."""
        return {
            **({"rose_above": self.rose_above()} if self.best_values is not None else {}),
            "units": [dict(u.to_json(), file=self.filename(i), value=float(self.values[i]),
                           **({} if self.best_values is None else {"best_value": float(self.best_values[i])}),
                           trace=[float(v) for v in self.traces[i]], **self._unit_extras(i))
                      for i, u in enumerate(self.units)],
            "trace_steps": list(self.trace_steps),
            **({"trust": self.extras["trust_settings"]} if "trust_settings" in self.extras else {}),
        }
