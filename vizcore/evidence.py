"""The public API of the evidence next to a picture: dataset exemplars (`exemplars`, and `attach_exemplars` for a
render's units) and what fires on one input (`explain`).

    ex = vizcore.exemplars("model.onnx", "photos/", ["conv1"])
    ex.unit("conv1", 3).top            # the 9 inputs that drive unit 3 most, with their boxes
    what = vizcore.explain("model.onnx", "cat.jpg")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import exemplars as ex_mod
from .analysis import trust as trust_mod
from .analysis.explain import Explanation, depth_layers, explain_input
from .api import load, render
from .engine.options import RenderOptions
from .errors import OptionError
from .inputspace import InputSpace, resolve
from .model import Layer, Model
from .plugins import Manager
from .result import Result
from .samples import DataSet, is_image, open_data, read_image

Exemplars = ex_mod.Exemplars
TrustThresholds = trust_mod.TrustThresholds
UnitTrust = trust_mod.UnitTrust
TRUST_MODES = ("auto", "full", "off")
NO_VERDICT = ("no verdict: not a unit with a layer and a channel (a direction, a sum, a whole layer), or an "
              "optimized embedding")


def _model(model: Model | str | os.PathLike[str], size: Any, plugins: Manager | None) -> Model:
    return model if isinstance(model, Model) else load(model, size=size, plugins=plugins)


def exemplars(model: Model | str | os.PathLike[str], data: DataSet | str | os.PathLike[str],
              layers: Sequence[str | int | Layer] | None = None, *, k: int = ex_mod.K, size: Any = None,
              preprocess: str | None = None, value_range: str | None = None, batch: int = 16,
              cache_dir: str | os.PathLike[str] | bool | None = None,
              progress: Callable[[int, int], None] | None = None, plugins: Manager | None = None) -> Exemplars:
    """Each unit's top-`k` inputs from `data` (a folder or file of images / `.npy` arrays, or an open `DataSet`)
    for `layers` (default: every layer `vizcore check` measures), in one pass; see
    `vizcore.analysis.exemplars.exemplars`. Images are read and mapped as `check --data` does (`size`,
    `preprocess`, `value_range`: the model's input space).
    `cache_dir`: where passes are kept and resumed (default `~/.cache/vizcore/exemplars`; False: nowhere)."""
    m = _model(model, size, plugins)
    space = resolve(m, preprocess, value_range)
    return ex_mod.exemplars(m, data, layers, k=k, space=space, size=size, batch=batch, cache_dir=cache_dir,
                            progress=progress)


def attach_exemplars(result: Result, model: Model, data: DataSet | str | os.PathLike[str], *, k: int = ex_mod.K,
                     size: Any = None, preprocess: str | None = None, value_range: str | None = None,
                     cache_dir: str | os.PathLike[str] | bool | None = None, crop: int = 64,
                     progress: Callable[[int, int], None] | None = None) -> Exemplars | None:
    """The exemplars of a render's units (those with a layer and a channel), in one pass, put on the result: the
    manifest lists them under each unit (`"exemplars": {"file", "stats", "top"}`) and the `exemplars` exporter
    writes each unit's crops as one strip, `<unit file>_exemplars.png`. None when no unit has a channel."""
    keys = sorted({u.layer_index for u in result.units if u.layer_index is not None and u.channel is not None})
    if not keys:
        return None
    ex = exemplars(model, data, keys, k=k, size=size, preprocess=preprocess, value_range=value_range,
                   cache_dir=cache_dir, progress=progress)
    listed, crops = {}, {}
    for i, u in enumerate(result.units):
        if u.layer_index is None or u.channel is None:
            continue
        pictures = ex.crops(u.layer_index, u.channel, size=crop)
        entry = ex.unit(u.layer_index, u.channel).to_json()
        if pictures:
            entry["file"] = result.filename(i)[:-4] + "_exemplars.png"
            crops[i] = pictures
        listed[i] = entry
    result.extras["exemplars"] = listed
    result.extras["exemplar_crops"] = crops
    result.warnings.extend(f"--data: skipped, {why}" for why in ex.skipped)
    return ex


def read_input(model: Model, image: str | os.PathLike[str] | np.ndarray, size: Any = None,
               flag: str = "IMAGE") -> tuple[np.ndarray, bool]:
    """One input for `explain`: an image file (read at the model's shape, 0..1), one example of an `.npy`
    (model units), or an array (C, *spatial) taken as a 0..1 image when the input is an image, else model units."""
    shape = model.input_shape(1, size)
    if isinstance(image, np.ndarray):
        x = np.asarray(image, dtype=np.float32)
        if x.shape[0] != shape[1] or x.ndim != len(shape) - 1:
            raise OptionError(f"{flag}: an array of shape {list(x.shape)}; the model takes (C, ...) = "
                              f"{list(shape[1:])}")
        return x, is_image(shape)
    p = Path(image)
    if p.is_dir():
        raise OptionError(f"{flag} {p}: a folder, not one image", "pass one image file or .npy")
    ds = open_data(p, shape, flag)
    if ds.image_files:
        return read_image(ds.image_files[0], shape, flag), True
    return np.asarray(ds.arrays[0][0], dtype=np.float32), False


def explain(model: Model | str | os.PathLike[str], image: str | os.PathLike[str] | np.ndarray,
            layers: Sequence[str | int | Layer] | None = None, top: int = 8, *, size: Any = None,
            preprocess: str | None = None, value_range: str | None = None, steps: int = 0,
            render_size: int | None = None, seed: int = 0, plugins: Manager | None = None) -> Explanation:
    """The units that fire most on `image` (a file, or an array (C, ...)) in each of `layers` (default: four
    layers across the depth of those `vizcore check` measures), ranked by their channel's largest value, each
    with its heat map (`Explanation.overlay`). `steps` > 0 also renders each unit's picture (a short fresh
    render, `Explanation.pictures`; `render_size` defaults to the model's fixed size, else 128)."""
    if top < 1:
        raise OptionError(f"top must be at least 1, not {top}")
    m = _model(model, size, plugins)
    x, img = read_input(m, image, size)
    chosen = [m.layer(k) for k in layers] if layers else depth_layers(m)
    if not chosen:
        raise OptionError("no layers to explain: the model has no Conv or dense layer with an activation",
                          "name some layers")
    out = explain_input(m, x, chosen, top=top, space=resolve(m, preprocess, value_range) if img else None)
    if steps > 0:
        _pictures(m, out, steps, render_size, seed, preprocess, value_range, plugins)
    return out


def _pictures(model: Model, out: Explanation, steps: int, size: int | None, seed: int, preprocess: str | None,
              value_range: str | None, plugins: Manager | None) -> None:
    from .objectives import Channel

    units = [(f.layer, f.channel) for fs in out.units.values() for f in fs]
    res = render(model, [Channel(lay, c) for lay, c in units], steps=steps, seed=seed, plugins=plugins,
                 size=size if size is not None or model.fixed_size else 128, preprocess=preprocess,
                 value_range=value_range)
    for i, (lay, c) in enumerate(units):
        out.pictures[(lay.index, c)] = np.asarray(res.images[i])


def trust(result: Result, model: Model, data: DataSet | str | os.PathLike[str] | None = None, *,
          exemplars: Exemplars | None = None, mode: str = "auto",
          transfer: Model | str | os.PathLike[str] | None = None, thresholds: TrustThresholds | None = None,
          second: Result | None = None, size: Any = None,
          preprocess: str | None = None, value_range: str | None = None,
          cache_dir: str | os.PathLike[str] | bool | None = None,
          plugins: Manager | None = None) -> list[UnitTrust | None]:
    """A trust verdict per rendered unit (`vizcore.analysis.trust`), put on the result: `result.extras["trust"]`
    (per unit: verdict, reasons, numbers; listed with the unit in manifest.json) and `result.timings["trust"]`.

    `data` (or `exemplars` already found, e.g. by `attach_exemplars`): the scores that need data (activation
    ratio, path similarity); without either they are None, marked not measured. `mode`: "auto" (every score but
    seed stability unless the render has `images_per_unit` >= 2), "full" (also seed stability, from `second` or a
    second render with seed + 1: doubles the render's time), "off" (nothing). `transfer`: another classifier (a
    model or a path) for the class units' transfer probability."""
    if mode not in TRUST_MODES:
        raise OptionError(f"trust mode {mode!r} is not one of {', '.join(TRUST_MODES)}", "e.g. --trust auto")
    if mode == "off":
        return []
    t0 = time.perf_counter()
    if data is not None and exemplars is None:
        exemplars = attach_exemplars(result, model, data, size=size, preprocess=preprocess,
                                     value_range=value_range, cache_dir=cache_dir)
    k = int(result.settings.get("images_per_unit") or 1)
    if mode == "full" and second is None and k < 2:
        second = _again(result, model, plugins)
    other = None
    if transfer is not None:
        other_model = _model(transfer, None, plugins)
        other = (other_model, resolve(other_model))
    found = trust_mod.trust_result(result, model, exemplars, second=second, transfer=other, thresholds=thresholds)
    result.extras["trust"] = {i: (t.to_json() if t is not None else {"verdict": None, "reasons": [NO_VERDICT]})
                              for i, t in enumerate(found)}
    result.extras["trust_settings"] = {"mode": mode, "thresholds": (thresholds or TrustThresholds()).to_json(),
                                       "data": exemplars is not None, "transfer": other[0].path.name if other else None}
    result.timings["trust"] = time.perf_counter() - t0
    return found


def _again(result: Result, model: Model, plugins: Manager | None) -> Result:
    """The same render with seed + 1 (seed stability), from the settings the result recorded."""
    s = result.settings
    names = set(RenderOptions.field_names()) - {"size", "max_memory", "seed", "preprocess", "value_range"}
    recorded = InputSpace.from_json(s.get("preprocess"))  # what the render resolved, as flags
    space = recorded.flags() if recorded is not None else {}
    recorded_options = {k: v for k, v in s.items() if k in names}
    opts = RenderOptions(**recorded_options, **space, size=tuple(s["input_size"]), seed=int(s.get("seed", 0)) + 1,
                         explicit=tuple(recorded_options))  # the values as rendered: no preset applied again
    return render(model, list(s["targets"]), opts, plugins=plugins)
