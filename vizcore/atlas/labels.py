"""Class names for an atlas: from a file (read with a size limit, before any rendering) or from the model's
`vizcore.labels` metadata."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..inputs import parse_json, read_text
from ..model import Model

#: A labels file larger than this is refused (ImageNet-21k's 21,843 names take about 0.4 MB).
MAX_LABELS_BYTES = 8 << 20
HINT = 'give a JSON list (["cat", "dog"]), a JSON {index: name} or a text file with one name a line'


def _read_text(p: Path) -> str:
    text = read_text(p, "labels file", MAX_LABELS_BYTES).removeprefix("\ufeff")
    if "\x00" in text:
        raise OptionError(f"labels file {p} is not text (it holds NUL bytes)", HINT)
    return text


def _from_json(p: Path, data: Any) -> dict[int, str]:
    if isinstance(data, list):
        return {i: str(n) for i, n in enumerate(data)}
    if isinstance(data, dict) and all(str(k).isdigit() for k in data):
        return {int(k): str(v) for k, v in data.items()}
    raise OptionError(f"labels file {p} must hold a list of names or {{index: name}}", HINT)


def read_labels(path: str | Path) -> dict[int, str]:
    """Class names from a file: a JSON list or {index: name} (`.json`), else text with one name a line.
    Raises `OptionError` for a missing, oversized (`MAX_LABELS_BYTES`), binary or malformed file."""
    p = Path(path)
    text = _read_text(p)
    if p.suffix.lower() == ".json":
        return _from_json(p, parse_json(text, f"labels file {p}"))
    return {i: line.strip() for i, line in enumerate(text.splitlines()) if line.strip()}


def _bundled_imagenet() -> list[str] | None:
    p = resources.files("vizcore").joinpath("data", "imagenet_classes.json")
    try:
        return [str(x) for x in parse_json(p.read_text(encoding="utf-8"), "bundled labels")]
    except (OSError, OptionError, TypeError):
        return None


def load_labels(model: Model, path: str | Path | None = None) -> dict[int, str]:
    """Class names: from a file (`read_labels`), else from the model's `vizcore.labels` metadata ("imagenet" or
    "name0,name1,..."). Empty when none are known."""
    if path is not None:
        return read_labels(path)
    meta = model.metadata.get("vizcore.labels", "").strip()
    if meta.lower() == "imagenet":
        names = _bundled_imagenet()
        return dict(enumerate(names)) if names else {}
    if "," in meta:
        return {i: n.strip() for i, n in enumerate(meta.split(","))}
    return {}
