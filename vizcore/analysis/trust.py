"""Can a rendered picture be trusted to show what drives its unit? One verdict per unit, `trusted`, `doubtful` or
`misleading`, with its reasons and every number it rests on (Geirhos et al. 2023, "Don't trust your eyes").

The scores (each a few forward passes; `trust_scores` measures them):

- activation ratio: the unit's activation on its picture over its p99 and its max on the data (needs exemplars);
- path similarity: at each layer on the way to the unit, the Spearman correlation of the picture's pattern with
  the unit's top exemplars' minus that of random data inputs with the same exemplars (a curve); the number is the
  mean over the deepest half of the path (needs exemplars). A pattern is what of the layer reaches the unit: per
  channel, activation x the unit's gradient, summed over positions. Raw activations rank channels by their scale
  (the same for every input) and count channels the unit does not read; a Geirhos-style fooling unit shows up
  only in what it reads: its picture drives it through channels its data never uses;
- seed stability: the Spearman correlation of two seeds' pictures' patterns at the layer below the unit (needs a
  second picture: `images_per_unit` >= 2, or a second render);
- transform robustness: the mean activation of the picture under the standard transforms over its activation;
- transfer (class units): the probability another model gives the class.

A unit's activation is its channel's largest value over positions (a logit for a class), as for exemplars. A score
that could not be measured is None, with the reason in `not_measured`; a unit is `trusted` only when the data
scores were measured. `TrustThresholds` holds every threshold (README "Trust scores" says how they were chosen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import OptionError
from ..inputspace import InputSpace
from ..model import Layer, Model
from ..result import Result
from . import trust_scores as ts
from .exemplars import Exemplars

VERDICTS = ("trusted", "doubtful", "misleading")
NEEDS_DATA = "needs --data (the unit's activations on your inputs)"


@dataclass(frozen=True)
class TrustThresholds:
    """Where each score turns a verdict (README "Trust scores": measured on planted units and MobileNetV2).

    misleading: `path` <= `path_misleading` while the picture drives the unit at least `ratio_misleading` times its
    data max (it reaches the unit through a route the data does not take). doubtful: any of `ratio_p99` <
    `ratio_low`, `path` < `path_low`, `stability` < `stability_low`, `robustness` < `robustness_low`, a class's
    transfer probability < `transfer_low`."""

    ratio_low: float = 1.0
    ratio_misleading: float = 30.0
    path_low: float = -0.3
    path_misleading: float = -0.6
    stability_low: float = 0.3
    robustness_low: float = 0.5
    transfer_low: float = 0.01

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise OptionError(f"trust threshold {f.name} must be a finite number, got {v!r}")

    def to_json(self) -> dict[str, float]:
        """The thresholds as the manifest records them."""
        return asdict(self)


@dataclass
class UnitTrust:
    """One unit's verdict (None: not a unit with a layer and a channel), its reasons and numbers."""

    verdict: str | None
    reasons: list[str]
    scores: dict[str, Any]
    not_measured: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest's `trust` entry: verdict, reasons, each number (null where not measured, with why)."""
        return {"verdict": self.verdict, "reasons": list(self.reasons), **self.scores,
                "not_measured": dict(self.not_measured)}


@dataclass(frozen=True)
class Target:
    """What a picture is of: a layer's channel (`kind` as the render's `Unit.kind`; "class" for a logit)."""

    layer: Layer
    channel: int
    kind: str = "channel"


def verdict(s: dict[str, Any], t: TrustThresholds, missing: dict[str, str]) -> tuple[str, list[str]]:
    """The verdict and its reasons from the scores of `assess` (`missing`: the scores not measured, and why)."""
    ratio, path = s.get("activation_ratio") or {}, (s.get("path_similarity") or {}).get("score")
    far = ratio.get("max") is not None and ratio["max"] >= t.ratio_misleading
    if path is not None and path <= t.path_misleading and far:
        return "misleading", [
            f"the picture drives the unit {ratio['max']:.3g}x its max on the data (>= {t.ratio_misleading:g}) and is "
            f"processed unlike its top exemplars on the way there (path similarity {path:.2f} <= "
            f"{t.path_misleading:g}): it reaches the unit by a route the data does not take"]
    why = []
    if ratio.get("p99") is not None and ratio["p99"] < t.ratio_low:
        why.append(f"the picture drives the unit less than its top 1 % of the data (activation ratio to p99 "
                   f"{ratio['p99']:.2f} < {t.ratio_low:g}; a unit that answers saturated colour or contrast is "
                   f"driven further by --quality plain)")
    if path is not None and path < t.path_low:
        why.append(f"the picture is processed unlike the unit's top exemplars (path similarity {path:.2f} < "
                   f"{t.path_low:g})")
    checks = (("seed_stability", t.stability_low, "two seeds' pictures differ in the model's features"),
              ("transform_robustness", t.robustness_low, "the picture's activation falls under small transforms"),
              ("transfer", t.transfer_low, "another model does not see the class in it"))
    for key, low, text in checks:
        v = s.get(key)
        v = v.get("probability") if isinstance(v, dict) else v
        if v is not None and v < low:
            why.append(f"{text} ({key.replace('_', ' ')} {v:.2g} < {low:g})")
    for key in ("activation_ratio", "path_similarity"):
        if key in missing:
            why.append(f"not trusted without its {key.replace('_', ' ')}: {missing[key]}")
    return ("doubtful" if why else "trusted"), why or ["every measured score is within its threshold"]


@dataclass
class _Forwards:
    """What `assess` reads: the pictures' (and second pictures') activation patterns per layer index, and each
    picture's path similarity (or why it was not measured)."""

    pic: dict[int, np.ndarray]
    second: dict[int, np.ndarray] | None = None
    paths: dict[int, dict[str, Any] | str] = field(default_factory=dict)


def _read(ex: Exemplars, numbers: Sequence[int]) -> dict[int, tuple[np.ndarray, bool]]:
    """Examples read again from the data, by number (one that can no longer be read is left out)."""
    got = {}
    for n in numbers:
        try:
            got[n] = ex.data.example(n)  # type: ignore[union-attr]
        except (OptionError, IndexError, OSError):
            continue
    return got


@dataclass
class _Rows:
    """The inputs whose patterns the path similarity compares, each with the unit whose view it is."""

    x: list[np.ndarray] = field(default_factory=list)
    units: list[tuple[Layer, int]] = field(default_factory=list)
    spaced: list[bool] = field(default_factory=list)  # a 0..1 image (mapped by the space), else model units

    def add(self, x: np.ndarray, u: Target, image: bool) -> int:
        self.x.append(x)
        self.units.append((u.layer, u.channel))
        self.spaced.append(image)
        return len(self.x) - 1


def _data_paths(model: Model, ex: Exemplars, pictures: np.ndarray, targets: Sequence[Target | None],
                paths: dict[int, list[Layer]], space: InputSpace | None, counts: tuple[int, int],
                seed: int) -> dict[int, dict[str, Any] | str]:
    """Each picture's path similarity: its pattern, its unit's top exemplars' and random data inputs' at the
    layers on the way, as the unit sees them (`trust_scores.attributions`)."""
    random_inputs, k = counts
    pool = [int(n) for n in np.random.default_rng(seed).permutation(ex.count)[:random_inputs + ex.k]]
    read = _read(ex, sorted({*pool, *(e.number for u in targets if u is not None and _in_pass(ex, u.layer)
                                      for e in ex.unit(u.layer, u.channel).top[:k])}))
    rows, plan, out = _Rows(), {}, {}
    for i, u in enumerate(targets):
        if u is None or not _in_pass(ex, u.layer):
            continue
        tops = [e.number for e in ex.unit(u.layer, u.channel).top[:k] if e.number in read]
        rand = [n for n in pool if n in read and n not in tops][:random_inputs]
        if not paths[u.layer.index]:
            out[i] = "the unit's layer has no measured layer before it (the first convolution)"
        elif len(tops) < 2 or len(rand) < 2:
            out[i] = "too few exemplars or random inputs could be read from the data"
        else:
            plan[i] = (rows.add(pictures[i], u, True), [rows.add(*read[n][:1], u, read[n][1]) for n in tops],
                       [rows.add(read[n][0], u, read[n][1]) for n in rand])
    if plan:
        pats = _patterns(model, rows, _unique([x for p in paths.values() for x in p]), space)
        for i, (p, tops, rand) in plan.items():
            out[i] = _curve(pats, p, tops, rand, paths[targets[i].layer.index])  # type: ignore[union-attr]
    return out


def _patterns(model: Model, rows: _Rows, layers: list[Layer], space: InputSpace | None) -> dict[int, np.ndarray]:
    """`attributions` of every row, in row order: images mapped by `space`, arrays as they are, one group per
    kind and shape (a picture may be rendered at another size than the data is read at)."""
    out = {lay.index: np.zeros((len(rows.x), int(lay.channels or 0)), np.float32) for lay in layers}
    groups: dict[tuple[bool, tuple[int, ...]], list[int]] = {}
    for r, (x, spaced) in enumerate(zip(rows.x, rows.spaced)):
        groups.setdefault((spaced, tuple(x.shape)), []).append(r)
    for (spaced, _), idx in groups.items():
        got = ts.attributions(model, np.stack([rows.x[r] for r in idx]), [rows.units[r] for r in idx], layers,
                              space if spaced else None)
        for i, v in got.items():
            out[i][idx] = v
    return out


def _in_pass(ex: Exemplars, layer: Layer) -> bool:
    return any(lay.index == layer.index for lay in ex.layers)


def _curve(pats: dict[int, np.ndarray], p: int, tops: list[int], rand: list[int],
           path: list[Layer]) -> dict[str, Any]:
    """Per layer, the picture's and the random inputs' mean Spearman correlation with the exemplars; the score is
    the mean difference over the deepest half of the path."""
    curve = []
    for lay in path:
        e = pats[lay.index][tops]
        picture = float(ts.rank_corr(pats[lay.index][p], e).mean())
        random = float(ts.rank_corr(pats[lay.index][rand], e).mean())
        curve.append({"layer": lay.name, "index": lay.index, "picture": picture, "random": random})
    deep = curve[len(curve) // 2:]
    return {"score": float(np.mean([c["picture"] - c["random"] for c in deep])), "curve": curve}


def _ratio(act: float, stats: dict[str, float]) -> dict[str, Any] | str:
    p99, top = stats.get("p99", float("nan")), stats.get("max", float("nan"))
    if not (math.isfinite(p99) and math.isfinite(top)) or top <= 0 or p99 <= 0:
        return f"the unit is never (or too rarely) positive on the data (p99 {p99:.3g}, max {top:.3g})"
    return {"p99": act / p99, "max": act / top, "data_p99": p99, "data_max": top, "data_count": stats["count"]}


def _unique(layers: Sequence[Layer]) -> list[Layer]:
    return sorted({lay.index: lay for lay in layers}.values(), key=lambda lay: lay.index)


Transfer = tuple[Model, InputSpace | None]


def assess(model: Model, pictures: np.ndarray, targets: Sequence[Target | None], space: InputSpace | None,
           exemplars: Exemplars | None = None, *, second: np.ndarray | None = None, transfer: Transfer | None = None,
           thresholds: TrustThresholds | None = None, random_inputs: int = 6, path_exemplars: int = 5,
           path_cap: int = 8, draws: int = 8, seed: int = 0) -> list[UnitTrust | None]:
    """The trust of each picture `pictures[i]` (N, C, *spatial; 0..1 mapped by `space`) of `targets[i]` (None: no
    verdict). `exemplars`: the data scores (the pass must cover the targets' layers); `second`: another seed's
    pictures in the same order (seed stability); `transfer`: another model and its input space (class units).
    Path similarity compares with the unit's `path_exemplars` top exemplars and `random_inputs` seeded random data
    inputs (one forward and backward each, at most `path_cap` layers on the path: the cost is fixed, about
    (1 + 5 + 6) x units forward-backward passes, 20 % of a 64-step render, 5 % of a default 256-step one)."""
    units = [u for u in targets if u is not None]
    if not units:
        return [None] * len(targets)
    own = _unique([u.layer for u in units])
    paths = {lay.index: ts.path_layers(model, lay, path_cap) for lay in own}
    below = {lay.index: (paths[lay.index] or [lay])[-1] for lay in own}
    f = _Forwards(ts.scores(model, pictures, _unique([*own, *below.values()]), space))
    if second is not None:
        f.second = ts.scores(model, second, _unique(list(below.values())), space)
    if exemplars is not None:
        f.paths = _data_paths(model, exemplars, pictures, targets, paths, space, (random_inputs, path_exemplars), seed)
    moved = ts.transformed(model, pictures, own, space, draws, seed) if pictures.ndim == 4 else None
    probs = _transfer(transfer, pictures, targets)
    t = thresholds or TrustThresholds()
    return [None if u is None else _unit(i, u, f, exemplars, paths[u.layer.index], below[u.layer.index], moved,
                                         probs[i], t) for i, u in enumerate(targets)]


def _transfer(transfer: Transfer | None, pictures: np.ndarray, targets: Sequence[Target | None]) -> list[Any]:
    """Per picture: (probability, rank, model name) from the other model for a class unit, else why not."""
    why = [("only for class units" if u is None or u.kind != "class" else
            "needs --transfer OTHER.onnx (another classifier of the same classes)") for u in targets]
    if transfer is None:
        return why
    other, space = transfer
    idx = [i for i, u in enumerate(targets) if u is not None and u.kind == "class"]
    if not idx:
        return why
    got = ts.class_probability(other, space, pictures[idx], [targets[i].channel for i in idx])  # type: ignore[union-attr]
    for i, g in zip(idx, got):
        why[i] = (f"{other.path.name} has no class {targets[i].channel}" if g is None  # type: ignore[union-attr]
                  else {"probability": g[0], "rank": g[1], "model": other.path.name})
    return why


def _unit(i: int, u: Target, f: _Forwards, ex: Exemplars | None, path: list[Layer], below: Layer,
          moved: dict[int, np.ndarray] | None, prob: Any, t: TrustThresholds) -> UnitTrust:
    act = float(f.pic[u.layer.index][i, u.channel])
    s: dict[str, Any] = {"activation": act}
    missing: dict[str, str] = {}

    def put(key: str, v: Any) -> None:
        s[key] = None if isinstance(v, str) else v
        if isinstance(v, str):
            missing[key] = v

    covered = ex is not None and _in_pass(ex, u.layer)
    off = NEEDS_DATA if ex is None else f"layer {u.layer.name!r} was not in the exemplar pass"
    put("activation_ratio", _ratio(act, ex.stats(u.layer, u.channel)) if covered else off)  # type: ignore[union-attr]
    put("path_similarity", f.paths.get(i, off) if covered else off)
    if f.second is None:
        put("seed_stability", "needs a second picture per unit: --trust full, or --images-per-unit 2")
    else:
        put("seed_stability", float(ts.rank_corr(f.pic[below.index][i], f.second[below.index][i])[0, 0]))
    if moved is None:
        put("transform_robustness", "only for 2-D images")
    elif act <= 0:
        put("transform_robustness", "the picture does not drive the unit (activation <= 0)")
    else:
        put("transform_robustness", float(moved[u.layer.index][:, i, u.channel].mean() / act))
    put("transfer", prob)
    v, why = verdict(s, t, missing)
    return UnitTrust(v, why, s, missing)


def space_of(settings: dict[str, Any]) -> InputSpace | None:
    """The input space a render recorded (`settings["preprocess"]`), None when it recorded none."""
    return InputSpace.from_json(settings.get("preprocess"))


def pictures_of(result: Result) -> np.ndarray:
    """A render's images as (N, C, *spatial) float32 in 0..1, what the model saw (after the uint8 rounding)."""
    return np.moveaxis(np.asarray(result.images, dtype=np.float32) / 255.0, -1, 1)


def targets_of(result: Result, model: Model) -> list[Target | None]:
    """Each rendered unit as a `Target`, None for one without a layer and a channel (a direction, a sum)."""
    return [Target(model.layer(u.layer_index), int(u.channel), u.kind)
            if u.layer_index is not None and u.channel is not None and u.kind in ("channel", "neuron", "class")
            else None for u in result.units]


def trust_result(result: Result, model: Model, exemplars: Exemplars | None = None, *, second: Result | None = None,
                 transfer: Transfer | None = None, thresholds: TrustThresholds | None = None) -> list[UnitTrust | None]:
    """`assess` for every unit of a render. Seed stability compares each picture with `second`'s (the same
    render with another seed) or, with `images_per_unit` >= 2, with its sibling of the same unit."""
    if model.embedding is not None:  # an optimized embedding: no picture to assess
        return [None] * len(result)
    pics = pictures_of(result)
    k = int(result.settings.get("images_per_unit") or 1)
    other = None
    if second is not None:
        other = pictures_of(second)
    elif k >= 2:
        other = pics[[i + 1 if (i + 1) % k else i - 1 for i in range(len(pics))]]
    return assess(model, pics, targets_of(result, model), space_of(result.settings), exemplars, second=other,
                  transfer=transfer, thresholds=thresholds)
