"""`vizcore report --data DIR`: each shown unit's dataset exemplars (crops with the unit's activation heat map over
each, one strip per unit next to its picture) and its trust verdict (`vizcore.analysis.trust`), from one exemplar
pass over the data for the shown layers (cached like `vizcore.exemplars`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.exemplars import exemplars
from ..analysis.trust import NEEDS_DATA, Target, assess
from ..exporters.exemplars import strip
from ..images import png_bytes
from ..inputspace import resolve
from ..model import Model
from ..samples import is_image, read_picture
from .cache import VERDICT_RANK, UnitRecord
from .output import write_bytes


def _picture(path: Path) -> np.ndarray:
    """A unit's stored picture as (C, H, W) float32 in 0..1."""
    return read_picture(path, "atlas picture")


def add_evidence(out: Path, model: Model, records: Sequence[UnitRecord], settings: dict[str, Any],
                 data: str | os.PathLike[str], say: Callable[[str], None]) -> set[str]:
    """Exemplars and a trust verdict for every record (put on `record.trust` and `record.exemplars`); the strips
    are written into `out`. Returns the files written."""
    if not is_image(model.input_shape(1, settings.get("size"))) or len(model.input_shape(1)) != 4:
        for r in records:
            r.trust = {"verdict": None, "reasons": ["no verdict: the atlas assesses 2-D image models only"]}
        return set()
    space = resolve(model, settings.get("preprocess"), settings.get("value_range"))
    layers = list({r.spec.layer.index: r.spec.layer for r in records}.values())
    say(f"exemplars: one pass over {data} for {len(layers)} layers")
    ex = exemplars(model, data, layers, size=settings.get("size"), space=space)
    pictures = np.stack([_picture(out / r.spec.file) for r in records])
    targets = [Target(r.spec.layer, r.spec.channel, r.spec.kind) for r in records]
    found = assess(model, pictures, targets, space, ex)
    written: set[str] = set()
    for r, t in zip(records, found):
        r.trust = t.to_json() if t is not None else None
        crops = ex.heat_crops(model, r.spec.layer, r.spec.channel, space, size=96)
        if crops:
            name = r.spec.file[:-4] + "-exemplars.png"
            write_bytes(out, name, png_bytes(sheet(crops)), if_changed=True)
            r.exemplars = name
            written.add(name)
    return written


def sheet(crops: Sequence[np.ndarray], cols: int = 3) -> np.ndarray:
    """Crops as rows of `cols` strips (best first, left to right, top to bottom), 2 white pixels apart."""
    rows = [strip(list(crops[i:i + cols])) for i in range(0, len(crops), cols)]
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded)[:-2]


def no_data(records: Sequence[UnitRecord]) -> None:
    """Without --data: each unit's trust is marked not measured (the atlas renders no second picture either)."""
    for r in records:
        r.trust = {"verdict": None, "reasons": [f"not measured: the trust scores {NEEDS_DATA}; run `vizcore report "
                                                f"--data DIR`"]}


def verdict_counts(records: Sequence[UnitRecord]) -> dict[str, int]:
    """How many of the records have each verdict (worst first)."""
    got = [str((r.trust or {}).get("verdict")) for r in records]
    return {v: got.count(v) for v in VERDICT_RANK if v in got}
