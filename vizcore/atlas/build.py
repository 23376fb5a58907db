"""`vizcore report`: a static, offline HTML atlas of a model: front page, one page per rendered layer, classes.

Units are rendered with `vizcore.render` and cached by content (model sha256 + settings + unit) under DIR/.cache,
so re-running with more layers renders only what is new. Pages come from Jinja2 templates with autoescape.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import api
from ..errors import OptionError, OutputError, VizcoreError
from ..files import atomic_write_bytes, atomic_write_text, prepare_out_dir
from ..model import ACTIVATION_OPS, Layer, Model
from ..plugins import Manager

CACHE_VERSION = 1
CACHE_DIR = ".cache"
MARKER = "vizcore-report"
#: `--auto`: how many layers, units per layer, steps and image size; measured to finish in minutes on 2 CPU cores.
AUTO_LAYERS = 6
AUTO_UNITS = 8
AUTO_STEPS = 64
AUTO_SIZE = 112
DEFAULT_UNITS = 8
DEFAULT_STEPS = 128
DEFAULT_SIZE = 128
#: A unit whose final objective value is at most this is shown as "not driven" (when no health data says more).
FLAT_VALUE = 1e-6

Renderer = Callable[..., Any]


@dataclass(frozen=True)
class UnitSpec:
    """One unit the report shows: a channel of a layer, or a class logit. Identified by numbers only."""

    kind: str  # "channel" | "class"
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

    def objective(self) -> Any:
        """The objective `vizcore.render` optimizes for this unit."""
        from ..objectives import Channel, ClassLogit

        return ClassLogit(self.channel) if self.kind == "class" else Channel(self.layer, self.channel)


@dataclass
class UnitRecord:
    """A rendered unit as the pages show it."""

    spec: UnitSpec
    value: float
    trace: list[float]
    settings: dict[str, Any]
    key: str
    label: str = ""
    flags: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    uid: str = ""
    trace_steps: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The unit's entry in the report manifest."""
        return {**self.spec.ident, "label": self.label or None, "file": self.spec.file, "value": _finite(self.value),
                "trace": [_finite(v) for v in self.trace], "trace_steps": self.trace_steps,
                "settings": self.settings, "cache_key": self.key,
                "flags": [t for _, t in self.flags]}


# -- cache ---------------------------------------------------------------------------------------------------------
class UnitCache:
    """Rendered units stored by content: `<sha256>.png` + `<sha256>.json`, the key hashing model, settings and unit."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(model_sha256: str, settings: dict[str, Any], spec: UnitSpec) -> str:
        """The content address of one unit rendered with `settings` from the model with that hash."""
        blob = json.dumps({"v": CACHE_VERSION, "model": model_sha256, "settings": settings,
                           "unit": {k: v for k, v in spec.ident.items() if k != "layer"}},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> tuple[dict[str, Any], Path] | None:
        """The stored record and image path for `key`, or None when absent or damaged."""
        meta, png = self.root / f"{key}.json", self.root / f"{key}.png"
        if not (meta.is_file() and png.is_file()):
            return None
        try:
            rec = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return (rec, png) if isinstance(rec, dict) and rec.get("key") == key else None

    def put(self, key: str, png: bytes, record: dict[str, Any]) -> None:
        """Store one unit (image first, so a record never points at a missing image)."""
        atomic_write_bytes(self.root / f"{key}.png", png)
        atomic_write_text(self.root / f"{key}.json", json.dumps({**record, "key": key}, default=_json_default))


def _finite(v: Any) -> float | None:
    """A float for JSON: NaN and infinities (a diverged render) become None."""
    f = float(v)
    return f if np.isfinite(f) else None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# -- choosing what to show -------------------------------------------------------------------------------------------
def _spatial(layer: Layer) -> bool:
    """A (N, C, H, W) output with more than one position: a layer whose units have something to draw."""
    sh = layer.shape
    return sh is not None and len(sh) == 4 and sh[1] > 0 and sh[2] * sh[3] > 1


def auto_layers(model: Model, count: int = AUTO_LAYERS) -> list[Layer]:
    """About `count` layers spread evenly through the depth: each Conv's output after its activation, if one follows."""
    consumers: dict[str, list[Layer]] = {}
    for ly in model.layers:
        for name in ly.inputs:
            consumers.setdefault(name, []).append(ly)
    picked: list[Layer] = []
    for ly in model.layers:
        if ly.op_type not in ("Conv", "ConvTranspose") or not _spatial(ly):
            continue
        follow = [c for c in consumers.get(ly.output, []) if c.op_type in ACTIVATION_OPS and c.shape == ly.shape]
        picked.append(follow[0] if len(consumers.get(ly.output, [])) == 1 and follow else ly)
    if not picked:
        picked = [ly for ly in model.layers if ly.visual and _spatial(ly)]
    if len(picked) <= count:
        return picked
    idx = sorted({round(i * (len(picked) - 1) / (count - 1)) for i in range(count)}) if count > 1 else [
        len(picked) // 2]
    return [picked[i] for i in idx]


def _layers(model: Model, keys: Sequence[str | int] | None, auto: bool) -> list[Layer]:
    if keys:
        out: list[Layer] = []
        for k in keys:
            layer = model.layer(k)
            if layer.channels is None:
                raise OptionError(f"layer {layer.name!r} has no channel axis (shape {layer.shape})",
                                  "pick layers with channels; `vizcore inspect MODEL` lists them")
            if layer not in out:
                out.append(layer)
        return out
    if auto:
        return auto_layers(model)
    return []


def parse_classes(text: str | Iterable[int] | None) -> list[int]:
    """Class indices from `1,9,130` (or an iterable of ints)."""
    if text is None:
        return []
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise OptionError(f"--classes {text!r} is not a list of class indices", "write e.g. --classes 1,9,130")
        return list(dict.fromkeys(int(p) for p in parts))
    return list(dict.fromkeys(int(c) for c in text))


# -- labels --------------------------------------------------------------------------------------------------------
def _bundled_imagenet() -> list[str] | None:
    here = Path(__file__).resolve().parent
    for p in (here / "data" / "imagenet_classes.json", here.parent / "models" / "imagenet_classes.json"):
        if p.is_file():
            data = json.loads(p.read_text(encoding="utf-8"))
            return [str(x) for x in data]
    return None


def load_labels(model: Model, path: str | Path | None = None) -> dict[int, str]:
    """Class names: from a file (JSON list or {index: name}, or text with one name a line), else from the
    model's `vizcore.labels` metadata ("imagenet" or "name0,name1,..."). Empty when none are known."""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise OptionError(f"cannot read labels file {p}: {exc.strerror or exc}", "check the --labels path") from exc
        if p.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise OptionError(f"labels file {p} is not valid JSON: {exc}", "give a JSON list of names") from exc
            if isinstance(data, list):
                return {i: str(n) for i, n in enumerate(data)}
            if isinstance(data, dict) and all(str(k).isdigit() for k in data):
                return {int(k): str(v) for k, v in data.items()}
            raise OptionError(f"labels file {p} must hold a list of names or {{index: name}}",
                              'e.g. ["cat", "dog"]')
        return {i: line.strip() for i, line in enumerate(text.splitlines()) if line.strip()}
    meta = model.metadata.get("vizcore.labels", "").strip()
    if meta.lower() == "imagenet":
        names = _bundled_imagenet()
        return {i: n for i, n in enumerate(names)} if names else {}
    if "," in meta:
        return {i: n.strip() for i, n in enumerate(meta.split(","))}
    return {}


# -- health (from `vizcore check`) -------------------------------------------------------------------------------
def load_health(source: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    """The `vizcore check --json` dict, from a dict or a file; None when not given."""
    if source is None or isinstance(source, dict):
        return source
    p = Path(source)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OptionError(f"cannot read check results {p}: {exc.strerror or exc}",
                          "make it with `vizcore check MODEL --json FILE`") from exc
    except ValueError as exc:
        raise OptionError(f"{p} is not valid JSON: {exc}", "make it with `vizcore check MODEL --json FILE`") from exc
    if not isinstance(data, dict) or not isinstance(data.get("layers", []), list):
        raise OptionError(f"{p} is not a `vizcore check --json` result",
                          "make it with `vizcore check MODEL --json FILE`")
    return data


def run_health(model: Model, layers: Sequence[Layer], size: int | None = None) -> dict[str, Any] | None:
    """`vizcore check` on the report's layers, as its JSON dict; None when that feature is not installed."""
    try:
        from ..health import check
    except ImportError:
        return None
    if not layers:
        return None
    opts: dict[str, Any] = {"size": size} if size else {}
    res = check(model, layers=[ly.name for ly in layers], **opts)
    return res.to_json() if hasattr(res, "to_json") else res if isinstance(res, dict) else None


@dataclass
class _LayerHealth:
    dead: set[int] = field(default_factory=set)
    constant: set[int] = field(default_factory=set)
    duplicates: dict[int, list[tuple[int, str, float]]] = field(default_factory=dict)
    channels: int | None = None
    pairs: int = 0


def _health_by_layer(health: dict[str, Any] | None, model: Model) -> dict[int, _LayerHealth]:
    out: dict[int, _LayerHealth] = {}
    for entry in (health or {}).get("layers", []) or []:
        if not isinstance(entry, dict):
            continue
        try:
            layer = model.layer(entry["index"]) if isinstance(entry.get("index"), int) else model.layer(
                str(entry.get("name")))
        except (VizcoreError, KeyError):
            continue
        h = out.setdefault(layer.index, _LayerHealth())
        h.channels = entry.get("channels")
        h.dead |= {int(c) for c in entry.get("dead", []) or []}
        h.constant |= {int(c) for c in entry.get("constant", []) or []}
        for d in entry.get("duplicates", []) or []:
            try:
                i, j, how, sim = int(d[0]), int(d[1]), str(d[2]), float(d[3])
            except (TypeError, ValueError, IndexError):
                continue
            h.pairs += 1
            h.duplicates.setdefault(i, []).append((j, how, sim))
            h.duplicates.setdefault(j, []).append((i, how, sim))
    return out


# -- rendering -----------------------------------------------------------------------------------------------------
def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _call_renderer(renderer: Renderer, model: Model, objectives: list[Any], settings: dict[str, Any],
                   warn: Callable[[str], None]) -> Any:
    """Call `renderer` with the settings, passing `on_warning` only when it takes it."""
    kwargs = dict(settings)
    try:
        params = inspect.signature(renderer).parameters
    except (TypeError, ValueError):
        params = {}
    if "on_warning" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs["on_warning"] = warn
    return renderer(model, objectives, **kwargs)


def _render_missing(model: Model, missing: list[tuple[UnitSpec, str]], settings: dict[str, Any],
                    cache: UnitCache, renderer: Renderer, say: Callable[[str], None]) -> float:
    """Render the units not in the cache, one `render` call per layer (so each cut stops at that layer), and
    store them; returns the seconds spent."""
    groups: dict[tuple[str, int], list[tuple[UnitSpec, str]]] = {}
    for spec, key in missing:
        groups.setdefault((spec.kind, spec.layer.index), []).append((spec, key))
    total = 0.0
    warned: set[str] = set()

    def warn(msg: str) -> None:
        if msg not in warned:
            warned.add(msg)
            say(f"warning: {msg}")

    for (kind, _), group in groups.items():
        layer = group[0][0].layer
        say(f"rendering {len(group)} unit{'s' if len(group) != 1 else ''} of "
            f"{'the classes' if kind == 'class' else f'layer {layer.index}'} ...")
        t0 = time.perf_counter()
        result = _call_renderer(renderer, model, [s.objective() for s, _ in group], settings, warn)
        seconds = time.perf_counter() - t0
        total += seconds
        n = len(result.values)
        if n != len(group) or len(result.images) != len(group):
            raise VizcoreError(f"the renderer returned {n} units for {len(group)} targets",
                               "report this: vizcore.render must return one image per unit")
        traces = list(getattr(result, "traces", None) or [])
        trace_steps = [int(s) for s in (getattr(result, "trace_steps", None) or [])]
        used = {k: v for k, v in (getattr(result, "settings", None) or settings).items()
                if k not in ("targets", "chunk_units", "max_memory")}
        for i, (spec, key) in enumerate(group):
            rec = {**spec.ident, "model_sha256": model.sha256, "value": _finite(result.values[i]),
                   "trace": [_finite(v) for v in traces[i]] if i < len(traces) else [], "trace_steps": trace_steps,
                   "settings": used, "seconds": seconds / len(group)}
            cache.put(key, _png(result.images[i]), rec)
    return total


def _default_renderer(plugins: Manager | None) -> Renderer:
    return functools.partial(api.render, plugins=plugins)


# -- output folder ----------------------------------------------------------------------------------------------------
def _is_report(out: Path) -> bool:
    marker = out / CACHE_DIR / MARKER
    try:
        return marker.is_file() and marker.read_text(encoding="utf-8").startswith(MARKER)
    except OSError:
        return False


def _previous_run(out: Path, sha256: str) -> dict[str, Any]:
    """Steps, size, seed and units per layer of the report already in `out`, if it is of the same model."""
    if not (out.is_dir() and _is_report(out)):
        return {}
    try:
        man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        if man.get("model", {}).get("sha256") != sha256:
            return {}
        prev = {k: man["settings"][k] for k in ("steps", "size", "seed") if k in man.get("settings", {})}
        if isinstance(man.get("units_per_layer"), int):
            prev["units_per_layer"] = man["units_per_layer"]
        return {k: v for k, v in prev.items() if v is None or isinstance(v, int)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _prepare(out: Path, force: bool) -> Path:
    """An empty folder, a folder holding an earlier vizcore report (grown in place), or any folder with `force`."""
    out = Path(out)
    out = prepare_out_dir(out, force=force or (out.is_dir() and _is_report(out)))
    atomic_write_text(out / CACHE_DIR / MARKER, f"{MARKER} cache v{CACHE_VERSION}\n")
    return out


_OWNED = re.compile(r"^(index\.html|classes\.html|layer-\d+\.html|manifest\.json)$")


def _clean_stale(out: Path, keep: set[str]) -> None:
    """Remove pages and images an earlier run of the report wrote that this run does not show."""
    for p in out.iterdir():
        if p.is_file() and _OWNED.match(p.name) and p.name not in keep:
            p.unlink()
    img = out / "img"
    if img.is_dir():
        for p in sorted(img.rglob("*.png")):
            rel = p.relative_to(out).as_posix()
            if rel not in keep and re.fullmatch(r"img/(class-\d+|layer-\d+/\d+)\.png", rel):
                p.unlink()
        for d in img.iterdir():
            if d.is_dir() and re.fullmatch(r"layer-\d+", d.name) and not any(d.iterdir()):
                d.rmdir()


# -- pages -----------------------------------------------------------------------------------------------------------
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("vizcore", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "svg", "xml"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.globals["trace_svg"] = trace_svg
    env.filters["show"] = _show
    env.filters["tail"] = lambda s, n=28: s if len(s) <= n else "…" + s[-(n - 1):]
    env.filters["dims"] = lambda s: "×".join("?" if d is None else str(d) for d in (s or [])) or "-"
    return env


def _show(v: Any) -> str:
    """A setting's value as text: lists joined, dicts and booleans as compact JSON."""
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(str(x) for x in v)
    if isinstance(v, (dict, list, tuple, bool)) or v is None:
        return json.dumps(v, default=str, separators=(", ", ": "))
    return str(v)


def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f != f or f in (float("inf"), float("-inf")):
        return str(f)
    if f == 0:
        return "0"
    if abs(f) >= 1e4 or abs(f) < 1e-3:
        return f"{f:.{max(digits - 1, 1)}e}"
    return f"{f:.{digits}g}" if abs(f) >= 1 else f"{f:.{digits}f}".rstrip("0").rstrip(".")


def trace_svg(trace: Sequence[float], width: int = 360, height: int = 140) -> dict[str, Any]:
    """Numbers for a small inline SVG line plot of an objective trace (the template draws it)."""
    pad_l, pad_r, pad_t, pad_b = 44, 8, 8, 20
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    vals = [float(v) for v in trace if v == v and abs(float(v)) != float("inf")]
    if not vals:
        return {"points": "", "width": width, "height": height, "empty": True}
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    n = len(vals)
    pts = []
    for i, v in enumerate(vals):
        x = pad_l + (w * i / (n - 1) if n > 1 else w / 2)
        y = pad_t + h * (1 - (v - lo) / (hi - lo))
        pts.append(f"{x:.1f},{y:.1f}")
    zero = pad_t + h * (1 - (0 - lo) / (hi - lo)) if lo < 0 < hi else None
    return {"points": " ".join(pts), "width": width, "height": height, "empty": False, "lo": lo, "hi": hi,
            "x0": pad_l, "x1": pad_l + w, "y0": pad_t, "y1": pad_t + h, "zero": zero, "n": n}


def _flags(rec: UnitRecord, h: _LayerHealth | None) -> None:
    ch = rec.spec.channel
    if rec.spec.kind == "channel" and h is not None:
        if ch in h.dead:
            rec.flags.append(("dead", "dead"))
        if ch in h.constant:
            rec.flags.append(("dead", "constant"))
        for j, how, sim in h.duplicates.get(ch, [])[:3]:
            rec.flags.append(("dup", f"≈ ch {j} ({how}, {sim:.2f})"))
    if not np.isfinite(rec.value):
        rec.flags.append(("dead", "diverged"))
    elif rec.value <= FLAT_VALUE and not any(c == "dead" for c, _ in rec.flags):
        rec.flags.append(("flat", "not driven"))


def _model_facts(model: Model, fidelity: dict[str, Any]) -> dict[str, Any]:
    s = model.summary()
    return {"name": model.path.name, "sha256": model.sha256, "producer": s["producer"], "opset": s["opset"],
            "ir_version": s["ir_version"], "inputs": s["inputs"], "outputs": s["outputs"],
            "parameters": s["parameters"], "metadata": s["metadata"], "fidelity": fidelity}


def _unit_specs(model: Model, chosen: list[Layer], n_units: int, class_ids: list[int]) -> list[UnitSpec]:
    """The first `n_units` channels of each chosen layer, then the chosen class logits (range-checked)."""
    specs = [UnitSpec("channel", layer, c) for layer in chosen for c in range(min(n_units, layer.channels or 0))]
    if class_ids:
        logits = model.logits_layer()
        n = logits.channels
        bad = [c for c in class_ids if n is None or c >= n]
        if bad:
            raise OptionError(f"class {bad[0]} is out of range: the model has {n} classes",
                              f"use class indices 0..{(n or 1) - 1}")
        specs += [UnitSpec("class", logits, c) for c in class_ids]
    return specs


def build_report(model: Model | str | Path, out_dir: str | Path, *, layers: Sequence[str | int] | None = None,
                 auto: bool = False, units_per_layer: int | None = None, classes: str | Iterable[int] | None = None,
                 labels: str | Path | None = None, steps: int | None = None, size: int | None = None,
                 seed: int | None = None, health: dict[str, Any] | str | Path | bool | None = None, force: bool = False,
                 render_options: dict[str, Any] | None = None, renderer: Renderer | None = None,
                 fidelity: bool = True, plugins: Manager | None = None,
                 log: Callable[[str], None] | None = None, executor: Any = None, all_units: bool = False) -> Path:
    """Write (or grow) a static HTML atlas of `model` in `out_dir`; returns the path of its index.html.

    Units already rendered with the same model and settings are taken from `out_dir/.cache`, so re-running with
    more layers renders only the new ones. `health` is a `vizcore check --json` dict or file, or True to run
    `vizcore.check` on the shown layers (when installed). `executor` (local, ray, ray://HOST:PORT, an Executor)
    renders chunks there, each stored as it finishes (a killed run resumes); `all_units`: every channel of every
    convolution, after its activation (auto_layers with no limit).
    """
    model = model if isinstance(model, Model) else api.load(model, size=size, plugins=plugins)
    say = log or (lambda _m: None)
    chosen = _layers(model, layers, auto)
    if all_units:  # vizcore.executors: every channel of every convolution
        chosen = auto_layers(model, count=len(model.layers))
        units_per_layer = max([ly.channels or 0 for ly in chosen] + [1])
    class_ids = parse_classes(classes)
    if not chosen and not class_ids:
        raise OptionError("nothing to show: no layers and no classes", "pass --layers A,B, --auto, or --classes 1,2")
    prev = _previous_run(Path(out_dir), model.sha256)  # growing a report keeps its settings unless told otherwise
    if units_per_layer is None:
        units_per_layer = prev.get("units_per_layer", AUTO_UNITS if auto else DEFAULT_UNITS)
    n_units = int(units_per_layer)
    if n_units < 1:
        raise OptionError(f"--units-per-layer must be at least 1, not {n_units}", "e.g. --units-per-layer 8")
    if steps is None:
        steps = prev.get("steps", AUTO_STEPS if auto else DEFAULT_STEPS)
    if steps < 1:
        raise OptionError(f"--steps must be at least 1, not {steps}", "e.g. --steps 128")
    if size is None and model.fixed_size is None:
        size = prev.get("size") or (AUTO_SIZE if auto else DEFAULT_SIZE)
    if seed is None:
        seed = prev.get("seed", 0)
    settings = {"steps": int(steps), "size": size, "seed": int(seed), **(render_options or {})}

    specs = _unit_specs(model, chosen, n_units, class_ids)

    health_data = None if health is True or health is False else load_health(health)  # a bad file fails early
    other = ((health_data or {}).get("model") or {}).get("sha256")
    if other and other != model.sha256:
        raise OptionError("the check results are for another model (its sha256 differs)",
                          "run `vizcore check` on this model, or drop --check")
    grown = Path(out_dir).is_dir() and _is_report(Path(out_dir))
    out = _prepare(Path(out_dir), force)
    cache = UnitCache(out / CACHE_DIR)
    keys = [cache.key(model.sha256, settings, s) for s in specs]
    missing = [(s, k) for s, k in zip(specs, keys) if cache.get(k) is None]
    say(f"{len(specs)} units: {len(specs) - len(missing)} from the cache, {len(missing)} to render")
    failed: dict[str, str] = {}
    if executor is None and not all_units:
        seconds = _render_missing(model, missing, settings, cache, renderer or _default_renderer(plugins), say)
    else:  # vizcore.executors: chunks on workers, stored as they finish, resumable
        from .scale import failed_entry, render_missing
        seconds, failed = render_missing(model, missing, settings, cache, executor, say, _png, plugins=plugins)

    if health is True:
        try:
            health_data = run_health(model, chosen, size)
        except VizcoreError as exc:
            say(f"warning: the health check failed ({exc}); the report has no health section")
        else:
            if health_data is None:
                say("warning: this vizcore has no health check; the report has no health section")
    by_health = _health_by_layer(health_data, model)
    names = load_labels(model, labels)

    records: list[UnitRecord] = []
    keep: set[str] = {"index.html", "manifest.json"}
    for i, (spec, key) in enumerate(zip(specs, keys)):
        got = cache.get(key)
        if got is None and key in failed:  # vizcore.executors: shown as failed, tried again next run
            got = failed_entry(out, key, failed[key], settings, _png)
        if got is None:
            raise OutputError(f"the cache entry for unit {i} vanished while writing the report", "run it again")
        rec_json, png = got
        dest = out / spec.file
        if not dest.is_file() or dest.read_bytes() != png.read_bytes():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, dest)
        keep.add(spec.file)
        value = rec_json.get("value")
        rec = UnitRecord(spec=spec, value=float("nan") if value is None else float(value),
                         trace=[float("nan") if v is None else float(v) for v in rec_json.get("trace", [])],
                         settings=dict(rec_json.get("settings", {})), key=key, uid=f"u{i}",
                         trace_steps=[int(x) for x in rec_json.get("trace_steps", [])],
                         label=names.get(spec.channel, "") if spec.kind == "class" else "")
        _flags(rec, by_health.get(spec.layer.index) if spec.kind == "channel" else None)
        if "error" in rec_json:
            rec.flags = [("dead", f"failed: {rec_json['error']}")]
        records.append(rec)

    if not fidelity:
        fid = {"available": False, "reason": "skipped (--no-fidelity)"}
    elif health_data and (health_data.get("fidelity") or {}).get("available"):
        fid = health_data["fidelity"]  # the check measured it already
    else:
        fid = model.fidelity(size=size)
    facts = _model_facts(model, fid)
    pages = _write_pages(out, model, facts, chosen, records, health_data, by_health, settings, seconds, keep,
                         n_units)
    if grown:  # only ever delete what an earlier report wrote, never files of a folder opened with --force
        _clean_stale(out, keep | set(pages))
    say(f"wrote {out / 'index.html'}")
    return out / "index.html"


def _health_summary(health: dict[str, Any] | None, by_health: dict[int, _LayerHealth]) -> dict[str, Any] | None:
    if health is None:
        return None
    total = sum(h.channels or 0 for h in by_health.values())
    return {"passed": health.get("passed"), "layers": len(by_health), "channels": total,
            "dead": sum(len(h.dead) for h in by_health.values()),
            "constant": sum(len(h.constant) for h in by_health.values()),
            "duplicates": sum(h.pairs for h in by_health.values()),
            "failures": [str(f.get("message") or json.dumps(f, default=str)) if isinstance(f, dict) else str(f)
                         for f in health.get("failures", []) or []]}


def _public(health: dict[str, Any] | None) -> dict[str, Any] | None:
    """The check results without the local path of the model (the report may be published)."""
    if not health or not isinstance(health.get("model"), dict) or "path" not in health["model"]:
        return health
    return {**health, "model": {**health["model"], "path": Path(str(health["model"]["path"])).name}}


def _write_pages(out: Path, model: Model, facts: dict[str, Any], chosen: list[Layer], records: list[UnitRecord],
                 health: dict[str, Any] | None, by_health: dict[int, _LayerHealth], settings: dict[str, Any],
                 seconds: float, keep: set[str], units_per_layer: int) -> list[str]:
    env = _env()
    from .._version import __version__

    by_layer: dict[int, list[UnitRecord]] = {}
    class_recs = [r for r in records if r.spec.kind == "class"]
    for r in records:
        if r.spec.kind == "channel":
            by_layer.setdefault(r.spec.layer.index, []).append(r)
    sections = []
    for layer in chosen:
        recs = by_layer.get(layer.index, [])
        sections.append({"layer": layer, "page": f"layer-{layer.index}.html", "units": recs,
                         "health": by_health.get(layer.index), "preview": recs[:6]})
    common = {"model": facts, "version": __version__, "settings": settings, "sections": sections,
              "has_classes": bool(class_recs)}
    written: list[str] = []

    def page(name: str, template: str, **ctx: Any) -> None:
        atomic_write_text(out / name, env.get_template(template).render(**common, **ctx, page=name))
        written.append(name)

    rendered = {s["layer"].index: s["page"] for s in sections}
    table = [{"layer": ly, "page": rendered.get(ly.index), "health": by_health.get(ly.index)}
             for ly in model.layers if ly.visual or ly.index in rendered or ly.index in by_health]
    for i, s in enumerate(sections):
        page(s["page"], "units.html", title=s["layer"].name, section=s, units=s["units"], kind="layer",
             prev=sections[i - 1]["page"] if i > 0 else None,
             next=sections[i + 1]["page"] if i + 1 < len(sections) else None)
    if class_recs:
        page("classes.html", "units.html", title="classes", section=None, units=class_recs, kind="class",
             prev=None, next=None)
    page("index.html", "index.html", title=facts["name"], table=table, classes=class_recs[:6],
         health=_health_summary(health, by_health), n_units=len(records) - len(class_recs),
         n_classes=len(class_recs), seconds=seconds,
         n_layers_total=len(model.layers))
    manifest = {"vizcore_version": __version__, "kind": "vizcore-report",
                "model": {"file": facts["name"], "sha256": model.sha256}, "settings": settings,
                "units_per_layer": units_per_layer,
                "layers": [{**s["layer"].to_json(), "page": s["page"]} for s in sections],
                "units": [r.to_json() for r in records], "health": _public(health)}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, default=_json_default))
    for asset in ("report.css", "report.js"):
        data = resources.files("vizcore").joinpath("templates", asset).read_bytes()
        dest = out / "assets" / asset
        if not dest.is_file() or dest.read_bytes() != data:
            atomic_write_bytes(dest, data)
    return written
