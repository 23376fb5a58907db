"""A render's finished chunks on disk, so a stopped render keeps them and `render --resume` continues.

Each chunk is one `<key>.npz` (images, final and best values, traces, recorded steps), written atomically as soon
as the chunk finishes; the key (made by the engine) hashes the model, the render's settings, its targets and the
chunk's units, so an entry is only ever reused by the same render. The engine sees a `ChunkStore` (get / put);
this is the one on disk.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VizcoreError
from .files import atomic_write_bytes, inside
from .inputs import read_npz

SUFFIX = ".vizcore-partial"


def partial_folder(out: Path) -> Path:
    """Where a render into `out` streams its chunks: `.NAME.vizcore-partial` beside `out` (the final folder is
    still written whole, at the end)."""
    out = Path(out)
    return out.parent / f".{out.name}{SUFFIX}"


class ChunkCache:
    """Finished chunks as `<key>.npz` under `root`; `hits` counts the chunks `get` gave back."""

    def __init__(self, root: Path) -> None:
        self.root, self.hits = Path(root), 0

    def get(self, key: str) -> dict[str, Any] | None:
        """The arrays of a finished chunk, or None when absent or unreadable (it is rendered again)."""
        path = inside(self.root, f"{key}.npz")
        if not path.is_file():
            return None
        try:
            z = read_npz(path, "render chunk")
        except VizcoreError:
            return None
        if not {"images", "values", "best", "traces", "steps"} <= set(z):
            return None
        self.hits += 1
        return {"images": z["images"], "values": z["values"], "best": z["best"],
                "traces": z["traces"].tolist(), "steps": [int(s) for s in z["steps"]]}

    def put(self, key: str, chunk: dict[str, Any]) -> None:
        """Store one finished chunk (atomically: a render killed mid-write leaves no half entry)."""
        buf = io.BytesIO()
        np.savez(buf, images=chunk["images"], values=chunk["values"], best=chunk["best"],
                 traces=np.asarray(chunk["traces"], dtype=np.float32).reshape(len(chunk["values"]), -1),
                 steps=np.asarray(chunk["steps"], dtype=np.int64))
        atomic_write_bytes(inside(self.root, f"{key}.npz"), buf.getvalue())

    def clear(self) -> None:
        """Remove the folder (it holds only this cache's files)."""
        if self.root.name.endswith(SUFFIX):
            with contextlib.suppress(OSError):
                shutil.rmtree(self.root)
