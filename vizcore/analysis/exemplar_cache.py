"""Where an exemplar pass keeps its state: one folder per key (model sha256, data fingerprint, layers, k, input
space), holding `state.json` (how far the pass got, and notes) and the arrays it names (`state-<n>.npz`).

The state is written after every chunk of batches, arrays first, then the JSON that names them (both atomically),
so a killed pass resumes from its last chunk and a finished one is read back instead of run again.
Default folder: `$XDG_CACHE_HOME/vizcore/exemplars`, else `~/.cache/vizcore/exemplars`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VizcoreError
from ..files import atomic_write_bytes, atomic_write_text
from ..inputs import read_json, read_npz

VERSION = 1


def default_dir() -> Path:
    """The user's cache folder for exemplar passes (XDG_CACHE_HOME honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vizcore" / "exemplars"


def cache_key(parts: dict[str, Any]) -> str:
    """A hex key for the things a pass's result depends on (a JSON-ready dict)."""
    text = json.dumps({"version": VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Store:
    """The saved state of one pass (`key`) under `root`."""

    def __init__(self, root: str | os.PathLike[str], key: str) -> None:
        self.folder = Path(root) / key[:40]
        self.key = key
        self.generation: int | None = None  # of the state last loaded or saved (saving needs no reload)

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """(meta, arrays) of the last chunk saved, or None (nothing saved, another key, or unreadable: start over)."""
        try:
            meta = read_json(self.folder / "state.json", "exemplar cache state")
            if not isinstance(meta, dict) or meta.get("key") != self.key:
                return None
            arrays = read_npz(self.folder / f"state-{int(meta['generation'])}.npz", "exemplar cache arrays")
            self.generation = int(meta["generation"])
            return meta, arrays
        except (VizcoreError, ValueError, KeyError, TypeError):
            return None

    def _saved_generation(self) -> int:
        """The generation named by `state.json` (-1 when there is none): read without its arrays."""
        try:
            meta = read_json(self.folder / "state.json", "exemplar cache state")
            return int(meta["generation"]) if isinstance(meta, dict) and meta.get("key") == self.key else -1
        except (VizcoreError, ValueError, KeyError, TypeError):
            return -1

    def save(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Save a chunk's state: the arrays, then the JSON naming them; older arrays are removed afterwards."""
        gen = self.generation + 1 if self.generation is not None else self._saved_generation() + 1
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.folder / f"state-{gen}.npz", buf.getvalue())
        atomic_write_text(self.folder / "state.json", json.dumps({**meta, "key": self.key, "generation": gen}) + "\n")
        self.generation = gen
        for p in self.folder.glob("state-*.npz"):
            if p.name != f"state-{gen}.npz":
                with contextlib.suppress(OSError):
                    p.unlink()
