"""The atlas's output folder: what may be written where. Every write goes through `vizcore.files` (atomic, normal
permissions) at a path checked by `dest`, which never follows a link out of the folder; cleaning only removes files
an earlier report wrote, and never through a link."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import OutputError, VizcoreError
from ..files import atomic_write_bytes, atomic_write_text, inside, prepare_out_dir
from ..inputs import read_json
from .cache import CACHE_VERSION

CACHE_DIR = ".cache"
MARKER = "vizcore-report"
_OWNED = re.compile(r"^(index\.html|classes\.html|layer-\d+\.html|manifest\.json)$")
#: A unit's picture and what the report shows with it (exemplars, alpha map, heat map).
_OWNED_IMAGE = re.compile(r"img/(class-\d+|layer-\d+/\d+)(-exemplars|-alpha|-heat)?\.png")


def dest(out: Path, rel: str) -> Path:
    """`out/rel` with every link resolved; `OutputError` when that leaves `out`."""
    try:
        return inside(out, rel)
    except OutputError:
        raise OutputError(f"refusing to write {rel}: a link in {out} leads out of it",
                          "remove the link, or choose another --out") from None


def write_bytes(out: Path, rel: str, data: bytes, *, if_changed: bool = False) -> Path:
    """Write `data` to `out/rel` atomically (with `if_changed`, only when the file differs)."""
    path = dest(out, rel)
    if if_changed and path.is_file() and path.read_bytes() == data:
        return path
    return atomic_write_bytes(path, data)


def write_text(out: Path, rel: str, text: str) -> Path:
    """`write_bytes` for UTF-8 text."""
    return atomic_write_text(dest(out, rel), text)


def is_report(out: Path) -> bool:
    """Whether `out` holds an earlier vizcore report (its cache marker)."""
    marker = out / CACHE_DIR / MARKER
    try:
        return marker.is_file() and marker.read_text(encoding="utf-8").startswith(MARKER)
    except OSError:
        return False


def previous_run(out: Path, sha256: str) -> dict[str, Any]:
    """Steps, size, seed and units per layer of the report already in `out`, if it is of the same model."""
    if not (out.is_dir() and is_report(out)):
        return {}
    try:
        man = read_json(out / "manifest.json", "report manifest")
        if man.get("model", {}).get("sha256") != sha256:
            return {}
        prev = {k: man["settings"][k] for k in ("steps", "size", "seed") if k in man.get("settings", {})}
        if isinstance(man.get("units_per_layer"), int):
            prev["units_per_layer"] = man["units_per_layer"]
        return {k: v for k, v in prev.items() if v is None or isinstance(v, int)}
    except (VizcoreError, TypeError, KeyError, AttributeError):
        return {}


def prepare(out: Path, force: bool) -> tuple[Path, bool]:
    """An empty folder, a folder holding an earlier vizcore report (grown in place), or any folder with `force`;
    returns it and whether it held a report."""
    out = Path(out)
    grown = out.is_dir() and is_report(out)
    out = prepare_out_dir(out, force=force or grown)
    write_text(out, f"{CACHE_DIR}/{MARKER}", f"{MARKER} cache v{CACHE_VERSION}\n")
    return out, grown


def _stale(out: Path, rel: str, keep: set[str]) -> bool:
    """Whether `out/rel` is a file an earlier report wrote that this one does not show (never a link)."""
    p = out / rel
    if rel in keep or p.is_symlink() or not p.is_file():
        return False
    try:
        dest(out, rel)
    except OutputError:
        return False
    return True


def clean_stale(out: Path, keep: set[str]) -> None:
    """Remove pages and images an earlier run of the report wrote that this run does not show."""
    for p in out.iterdir():
        if _OWNED.match(p.name) and _stale(out, p.name, keep):
            p.unlink()
    img = out / "img"
    if not img.is_dir() or img.is_symlink():
        return
    for d in sorted(img.iterdir()):
        if d.is_symlink():
            continue
        if d.is_file() and _OWNED_IMAGE.fullmatch(f"img/{d.name}") and _stale(out, f"img/{d.name}", keep):
            d.unlink()
        elif d.is_dir() and re.fullmatch(r"layer-\d+", d.name):
            for p in sorted(d.iterdir()):
                rel = f"img/{d.name}/{p.name}"
                if _OWNED_IMAGE.fullmatch(rel) and _stale(out, rel, keep):
                    p.unlink()
            if not any(d.iterdir()):
                d.rmdir()
