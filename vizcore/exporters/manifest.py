"""`manifest` exporter: `manifest.json`, everything needed to reproduce and index a render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._version import __version__
from ..files import atomic_write_text, inside
from ..hookspecs import hookimpl
from ..result import Result
from ..text import json_text


def manifest(result: Result, files: list[str] | None = None) -> dict[str, Any]:
    """The manifest as a dict: version, model path and hash, every setting, per-unit file/value/trace, and
    `files`: every other file the save wrote (what a later `--force` save replaces)."""
    return {
        "vizcore_version": __version__,
        "model": {"path": result.model.get("path"), "sha256": result.model.get("sha256")},
        "settings": result.settings,
        "timings": result.timings,
        "warnings": result.warnings,
        **result.to_json(),
        **({} if files is None else {"files": sorted(files), "complete": True}),
    }


def export_manifest(result: Result, out_dir: Path, files: list[str] | None = None, **_: Any) -> list[Path]:
    """Write `manifest.json` into `out_dir` (`files`: the other files of the save, relative to `out_dir`)."""
    text = json_text(manifest(result, files), indent=1)  # strict JSON: a NaN objective is null, not NaN
    return [atomic_write_text(inside(out_dir, "manifest.json"), text + "\n")]


@hookimpl
def vizcore_add_exporters() -> dict[str, Any]:
    return {"manifest": export_manifest}
