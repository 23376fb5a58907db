"""How closely the converted torch graph matches onnxruntime on the same seeded input (`vizcore check`,
`inspect`, the atlas): onnxruntime runs the bytes the loader kept, so the file is not read again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import onnxfile
from ..errors import oneline
from ..model import Model


def fidelity(model: Model, seed: int = 0, batch: int = 1, size: int | Sequence[int] | None = None
             ) -> dict[str, Any]:
    """Max abs difference between the converted graph and onnxruntime on a seeded random input."""
    version = onnxfile.runtime_version()
    if version is None:
        return {"available": False, "reason": "onnxruntime is not installed (pip install onnxruntime)"}
    if model.nothing_converted:  # the converted part is bookkeeping (shapes, ids): 0.0 there would mean nothing
        return {"available": False, "reason": "no layer could be converted"}
    if not model.has_float_input:
        x = None
        feeds = [model.default_feed(t, batch) for t in model.inputs]
    elif model.source is not None:  # an inner tensor is optimized: its value from the graph inputs onnxruntime gets
        natural = model.input_shape(batch, size)
        base = [model.default_feed(t, batch, natural[-1] if len(natural) == 3 else None) for t in model.inputs]
        with torch.no_grad():
            x = model.source(*base)
        feeds = [*base, x]
    else:
        x = model.probe_input(batch, size, seed)
        feeds = model.feeds(x)
    shown = list((x if x is not None else feeds[0]).shape)
    try:
        sess = onnxfile.session(model.reference)
        arrays = onnxfile.session_feeds(sess, {t.name: f.cpu().numpy() for t, f in zip(model.inputs, feeds)})
        try:
            ref = sess.run(None, arrays)
        except Exception:
            if batch == 1:
                raise
            # the file fixes batch 1 (vizcore made it symbolic): compare sample by sample
            runs = [sess.run(None, {k: v[i:i + 1] for k, v in arrays.items()}) for i in range(batch)]
            ref = [np.concatenate(parts) for parts in zip(*runs)]
    except Exception as exc:
        why = oneline(exc, 300, typed=False)
        return {"available": False, "reason": f"onnxruntime could not run the model: {why}"}
    try:
        with torch.no_grad():
            got = model.module(*feeds)
    except Exception as exc:  # the converted graph itself fails (e.g. batch 1 baked in): a result, not a crash
        return _wrong(version, shown, seed, f"the converted graph fails: {oneline(exc)}")
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    names = [o.name for o in sess.get_outputs()]
    return _compare(names, ref, [t.detach().float().cpu().numpy() for t in got],
                    {"available": True, "onnxruntime": version, "input_shape": shown, "seed": seed})


def _wrong(version: str, shown: list[int], seed: int, error: str) -> dict[str, Any]:
    """Measured, and the converted graph does not give onnxruntime's outputs at all: no number (never inf)."""
    return {"available": True, "onnxruntime": version, "input_shape": shown, "seed": seed, "max_abs_diff": None,
            "per_output": {}, "error": error}


def _compare(names: Sequence[str], ref: Sequence[np.ndarray], got: Sequence[np.ndarray],
             head: dict[str, Any]) -> dict[str, Any]:
    """Max |torch - onnxruntime| per output. A parity is a finite number or not given: an output whose shapes
    differ, or that is non-finite in torch only, is an error; one that onnxruntime itself makes inf or NaN (a
    float16 overflow, a log of 0) cannot be compared: "not measured", with the output named."""
    diffs: dict[str, float] = {}
    for name, r, t in zip(names, ref, got):
        if r.shape != t.shape:
            return {**head, "max_abs_diff": None, "per_output": {},
                    "error": f"output {name!r} has shape {list(t.shape)} here, {list(r.shape)} in onnxruntime"}
        r = np.asarray(r, dtype=np.float64)
        bad_ref, bad_got = ~np.isfinite(r), ~np.isfinite(t)
        if bad_ref.any():
            kind = "NaN" if np.isnan(r).any() else "-inf" if np.isneginf(r).any() else "inf"
            return {"available": False, "reason": f"onnxruntime's output {name!r} is {kind} on the seeded input "
                    f"({int(bad_ref.sum())} of {r.size} values; a float16 overflow or a log of 0 in onnxruntime?)"}
        if bad_got.any():
            return {**head, "max_abs_diff": None, "per_output": {},
                    "error": f"output {name!r} is inf or NaN here ({int(bad_got.sum())} of {t.size} values) where "
                             "onnxruntime's is finite"}
        diffs[name] = float(np.max(np.abs(r - t))) if r.size else 0.0
    return {**head, "max_abs_diff": max(diffs.values()) if diffs else 0.0, "per_output": diffs}
