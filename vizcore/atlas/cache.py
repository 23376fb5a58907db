"""The units of an atlas and their content-addressed cache: `<sha256>.png` + `<sha256>.json` under OUT/.cache, the key
hashing the model, the render settings and the unit. Entries are written atomically (image first), so a render that
is interrupted keeps every unit stored before it and the next run resumes from there."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError, VizcoreError
from ..files import atomic_write_bytes, atomic_write_text, inside
from ..inputs import read_json
from ..model import Layer

CACHE_VERSION = 1
#: Where a layer page's "sort by verdict" puts a unit (worst first; a unit without a verdict last).
VERDICT_RANK = {"misleading": 0, "doubtful": 1, "trusted": 2}


@dataclass(frozen=True)
class UnitSpec:
    """One unit the report shows: a channel of a layer, or a class logit. Identified by numbers only."""

    kind: str  # "channel" (its mean), "neuron" (the channel at the centre) or "class"
    layer: Layer
    channel: int

    @property
    def ident(self) -> dict[str, Any]:
        """What identifies this unit in the cache (with the model hash and the settings)."""
        return {"kind": self.kind, "layer_index": self.layer.index, "layer": self.layer.name, "channel": self.channel}

    @property
    def file(self) -> str:
        """The image's path inside the report, made of numbers only (model names never steer a path)."""
        if self.kind == "class":
            return f"img/class-{self.channel}.png"
        return f"img/layer-{self.layer.index}/{self.channel}.png"

    def alpha_files(self) -> dict[str, str]:
        """Where the report puts the picture with its alpha map as transparency, and the heat map."""
        base = self.file[:-4]
        return {"picture": f"{base}-alpha.png", "heat": f"{base}-heat.png"}

    def objective(self) -> Any:
        """The objective `vizcore.render` optimizes for this unit."""
        from ..objectives import Channel, ClassLogit, Neuron

        if self.kind == "class":
            return ClassLogit(self.channel)
        return Neuron(self.layer, self.channel) if self.kind == "neuron" else Channel(self.layer, self.channel)


@dataclass
class UnitRecord:
    """A rendered unit as the pages show it; `flags` are (css class, text) from `atlas.health.unit_flags`."""

    spec: UnitSpec
    value: float
    trace: list[float]
    settings: dict[str, Any]
    key: str
    label: str = ""
    flags: list[tuple[str, str]] = field(default_factory=list)
    uid: str = ""
    trace_steps: list[int] = field(default_factory=list)
    trust: dict[str, Any] | None = None  # `vizcore report --data`: the verdict, reasons and numbers
    exemplars: str | None = None  # ... and the strip of exemplar crops with heat maps (a file of the report)
    alpha: dict[str, str] | None = None  # `vizcore report --alpha`: {"picture": RGBA file, "heat": heat map file}

    @property
    def verdict_rank(self) -> int:
        """Where a layer page's "sort by verdict" puts the unit: misleading, doubtful, trusted, then none."""
        return VERDICT_RANK.get(str((self.trust or {}).get("verdict")), len(VERDICT_RANK))

    @property
    def activation(self) -> float | None:
        """The unit's activation on its picture (trust), for "sort by activation"."""
        v = (self.trust or {}).get("activation")
        return float(v) if isinstance(v, (int, float)) else None

    @classmethod
    def from_cache(cls, spec: UnitSpec, key: str, stored: dict[str, Any], *, uid: str = "",
                   label: str = "") -> UnitRecord:
        """The record of a unit from its cache entry (None values, a diverged render's, come back as NaN)."""
        value = stored.get("value")
        return cls(spec=spec, value=float("nan") if value is None else float(value),
                   trace=[float("nan") if v is None else float(v) for v in stored.get("trace", [])],
                   settings=dict(stored.get("settings", {})), key=key, uid=uid, label=label,
                   trace_steps=[int(x) for x in stored.get("trace_steps", [])])

    def to_json(self) -> dict[str, Any]:
        """The unit's entry in the report manifest."""
        return {**self.spec.ident, "label": self.label or None, "file": self.spec.file, "value": finite(self.value),
                "trace": [finite(v) for v in self.trace], "trace_steps": self.trace_steps,
                "settings": self.settings, "cache_key": self.key,
                "flags": [t for _, t in self.flags],
                **({"trust": self.trust} if self.trust is not None else {}),
                **({"exemplars": self.exemplars} if self.exemplars else {}),
                **({"alpha": self.alpha} if self.alpha else {})}


class UnitCache:
    """Rendered units stored by content: `<sha256>.png` + `<sha256>.json`, the key hashing model, settings and unit.

    Never follows a link out of `root`: an entry that would leave it raises `OutputError`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(model_sha256: str, settings: dict[str, Any], spec: UnitSpec) -> str:
        """The content address of one unit rendered with `settings` from the model with that hash."""
        blob = json.dumps({"v": CACHE_VERSION, "model": model_sha256, "settings": settings,
                           "unit": {k: v for k, v in spec.ident.items() if k != "layer"}},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        try:
            return inside(self.root, f"{key}.json"), inside(self.root, f"{key}.png")
        except OutputError:
            raise OutputError(f"refusing to use the cache entry {key[:12]}…: a link leads out of {self.root}",
                              "remove the link, or choose another --out") from None

    def get(self, key: str) -> tuple[dict[str, Any], Path] | None:
        """The stored record and image path for `key`, or None when absent or damaged."""
        meta, png = self._paths(key)
        if not (meta.is_file() and png.is_file()):
            return None
        try:
            rec = read_json(meta, "cache record")
        except VizcoreError:
            return None
        if not (isinstance(rec, dict) and rec.get("key") == key and _sound(rec) and _whole_png(png)):
            return None  # damaged or hand-edited: rendered again
        return rec, png

    def put(self, key: str, png: bytes, record: dict[str, Any], alpha: tuple[bytes, bytes] | None = None) -> None:
        """Store one unit (its image, and with `alpha` the picture with its alpha map and the heat map, before the
        record, so a record never points at a missing image)."""
        meta, path = self._paths(key)
        atomic_write_bytes(path, png)
        for target, blob in zip(self._alpha_paths(key), alpha or ()):
            atomic_write_bytes(target, blob)
        atomic_write_text(meta, json.dumps({**record, "key": key}, default=json_default))

    def _alpha_paths(self, key: str) -> tuple[Path, Path]:
        png = self._paths(key)[1]
        return png.with_name(f"{key}.alpha.png"), png.with_name(f"{key}.heat.png")

    def has(self, key: str, alpha: bool = False) -> bool:
        """Whether the unit is stored whole (with `alpha`, with its alpha map too): else it is rendered (again)."""
        return self.get(key) is not None and (not alpha or self.alpha(key) is not None)

    def alpha(self, key: str) -> tuple[Path, Path] | None:
        """The unit's picture with its alpha map and its heat map (`vizcore report --alpha`: where the render's
        gradient landed), or None when it was rendered without them (or a file is damaged)."""
        paths = self._alpha_paths(key)
        return paths if all(p.is_file() and _whole_png(p) for p in paths) else None


def _sound(rec: dict[str, Any]) -> bool:
    """Whether a cache record has the types `UnitRecord.from_cache` reads (a hand-edited one may not)."""
    num = (int, float, type(None))
    return (isinstance(rec.get("value"), num) and not isinstance(rec.get("value"), bool)
            and isinstance(rec.get("trace", []), list) and all(isinstance(v, num) for v in rec.get("trace", []))
            and isinstance(rec.get("settings", {}), dict)
            and isinstance(rec.get("trace_steps", []), list)
            and all(isinstance(v, int) for v in rec.get("trace_steps", [])))


def _whole_png(path: Path) -> bool:
    """Whether an image file is a PNG that ends with its IEND chunk (a write cut short does not)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            f.seek(max(size - 12, 0))
            tail = f.read(12)
    except OSError:
        return False
    return head == b"\x89PNG\r\n\x1a\n" and tail[4:8] == b"IEND"


def finite(v: Any) -> float | None:
    """A float for JSON: NaN and infinities (a diverged render) become None."""
    f = float(v)
    return f if np.isfinite(f) else None


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays, paths and anything else (as text)."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
