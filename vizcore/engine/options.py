"""Every option of a render in one frozen value, validated in one place (`RenderOptions`).

The device settings (CPU heap, cuDNN autotuning, conv+clamp fusion, channels_last) are ordinary fields with
today's defaults; `RenderOptions.from_env()` is the one place that reads their environment variables
(VIZCORE_CPU_HEAP, VIZCORE_CUDNN_BENCHMARK, VIZCORE_FUSE: "0" turns one off; VIZCORE_CHANNELS_LAST: "0"/"1"
forces it). `to_json()` is the option part of the manifest's `settings`. `with_keywords` applies `vizcore.render`'s
keywords to one options value (built once), and `for_input(options, rank)` turns the default `param="auto"` into the
parameterization (and penalty) for the model's input rank without validating the rest again.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, InitVar, asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..errors import OptionError, unknown_keyword
from ..graph_inputs import parse_size
from ..inputspace import parse_range
from .accent_options import accent_penalties, picture_name, start_picture
from .adam import OPTIMIZERS
from .budget import parse_memory

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
ENV = {"cpu_heap": "VIZCORE_CPU_HEAP", "cudnn_benchmark": "VIZCORE_CUDNN_BENCHMARK", "fuse": "VIZCORE_FUSE",
       "channels_last": "VIZCORE_CHANNELS_LAST"}


def number(name: str, value: Any) -> float:
    """A finite float from a number or a CLI string, else a one-line OptionError naming the option."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{name} must be a number, got {value!r}", f"e.g. {name} 0.05") from exc
    if not math.isfinite(v):
        raise OptionError(f"{name} must be a finite number, got {value!r}", f"e.g. {name} 0.05")
    return v


def integer(name: str, value: Any) -> int:
    """An int from an int or a CLI string ("256", "1e3"), else a one-line OptionError naming the option."""
    if isinstance(value, bool):
        raise OptionError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        pass
    v = number(name, value)
    if not v.is_integer():
        raise OptionError(f"{name} must be an integer, got {value!r}", f"e.g. {name} 256")
    return int(v)


def _env_flag(name: str, value: str) -> bool | None:
    v = value.strip()
    if v in ("", "auto"):
        return None
    if v in ("0", "1"):
        return v == "1"
    raise OptionError(f"{name}={value!r} is not 0 or 1", f"unset {name}, or set it to 0 or 1")


MAX_CROPS = 64

#: The quality presets (`RenderOptions.quality`, `render --quality`): each sets the fields a render leaves at
#: their defaults (the dataclass defaults below are "plain": Adam on Lucid's Fourier image, as the check's ascent
#: uses it). "default": NAdam and 144 steps with horama's standardized Fourier image (PARAM_PRESETS), horama's
#: figures in a fifth of its time; "best": the same for 576 steps, above them in 0.77x its time (bench/quality.py,
#: bench/RESULTS.md 2026-12-07).
QUALITY: dict[str, dict[str, Any]] = {
    "default": {"optimizer": "nadam", "steps": 144},
    "best": {"optimizer": "nadam", "steps": 576},
    "plain": {},
}
#: horama's Fourier preconditioning (Fel et al. 2023): spectrum and pixels standardized per image, 1/f^1.5, at a
#: fixed contrast; it needs a larger learning rate than the plain image (its parameter's scale no longer matters)
STANDARDIZED_FFT = {"param_options": {"decay_power": 1.5, "standardize": True, "contrast": 2.0, "sd": 1.0},
                    "lr": 0.3}
#: A preset's parameterization options and learning rate per parameterization, applied by `for_input` once the
#: parameterization is known, only when no `param_options` were given (the rate also only when no `lr` was).
#: Pixels, 1-D signals and a start picture (`init`: accentuation needs the plain Fourier image) keep theirs.
PARAM_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"fft": STANDARDIZED_FFT},
    "best": {"fft": STANDARDIZED_FFT},
}
#: the learning rate of a parameterization no preset sets one for (Lucid's images, pixels, 1-D signals)
BASE_LR = 0.05


@dataclass(frozen=True)
class RenderOptions:
    """How to render: every field has the default README's "Defaults, and why" documents.

    `max_memory` is a byte count or text such as "2G" (None: 70 % of free GPU memory, or a quarter of RAM up to
    6 GiB). `channels_last` None means: channels_last when the cut graph has 2-D convolutions.
    """

    steps: int = 256
    size: int | tuple[int, ...] | None = None  # one side, or one per spatial dim: (H, W) / (L,)
    param: str = "auto"
    param_options: Mapping[str, Any] = field(default_factory=dict)
    transforms: tuple[str, ...] = ("standard",)
    regularizers: Mapping[str, float] = field(default_factory=dict)
    lr: float | None = None  # None: the preset's for the parameterization (PARAM_PRESETS), else BASE_LR
    optimizer: str = "adam"  # "nadam" or "adam" (engine.adam.OPTIMIZERS); the presets choose nadam
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    max_memory: str | int | None = None
    batch_size: int | None = None
    relu_override: float = 0.25
    #: the last fraction of the steps ascends the picture itself, without the transforms. Off by default: on
    #: MobileNetV2 (bench/quality.py, 20 classes, 128 steps) 0.0625 raised the saved picture's logit 1.3x with the
    #: same transfer, but its logit under small transforms fell 4 %: the gain is pixel-aligned detail
    finish: float = 0.0
    preprocess: str | None = None
    value_range: str | None = None
    record_every: int = 8
    images_per_unit: int = 1
    crops: int = 1  # random crops of each image per step, their objective averaged (needs the crops transform)
    quality: str = "default"  # a preset (QUALITY) for the fields left at their defaults
    #: fields given explicitly, which the preset leaves alone even where their value is the default
    explicit: InitVar[Sequence[str]] = ()
    cpu_heap: bool = True
    cudnn_benchmark: bool = True
    fuse: bool = True
    channels_last: bool | None = None
    #: run the cut graph at the rendered size even when the model fixes its input, if every op up to the targets
    #: works at any size (`Model.size_free`): the check's short ascent at 32 px instead of 224 (49x less work)
    free_size: bool = False
    #: feature accentuation: start from this picture (a path, or an array); compared through `init_key`
    init: str | np.ndarray | None = field(default=None, compare=False)
    init_key: str | None = field(default=None, init=False, repr=False)  # the path, or the array's shape and sha256
    #: the fields given explicitly so far (kept through `replace`): a preset never touches them
    given: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self, explicit: Sequence[str]) -> None:
        set_ = object.__setattr__  # normalize in place once: the value stays frozen afterwards
        self._apply_preset(explicit)
        set_(self, "steps", _positive("steps", self.steps))
        set_(self, "size", None if self.size is None else parse_size(self.size))  # "224", "60,160", (60, 160)
        set_(self, "lr", None if self.lr is None else _lr(self.lr))
        set_(self, "optimizer", _choice("optimizer", self.optimizer, OPTIMIZERS))
        set_(self, "seed", _seed(self.seed))
        set_(self, "relu_override", _fraction("relu_override", self.relu_override))
        set_(self, "finish", _fraction("finish", self.finish))
        set_(self, "record_every", _positive("record_every", self.record_every))
        set_(self, "images_per_unit", _at_least("images_per_unit", self.images_per_unit, 1,
                                                "e.g. 4 with a diversity term"))
        set_(self, "crops", _at_least("crops", self.crops, 1, "e.g. --crops 4"))
        if self.crops > MAX_CROPS:
            raise OptionError(f"crops must be at most {MAX_CROPS}, got {self.crops}", "e.g. --crops 4")
        set_(self, "batch_size", None if self.batch_size is None else _positive("batch_size", self.batch_size))
        set_(self, "regularizers", {str(k): number(f"the {k} weight", w) for k, w in dict(self.regularizers).items()})
        set_(self, "init", start_picture(self.init))
        set_(self, "init_key", picture_name(self.init))
        set_(self, "regularizers", accent_penalties(self.init, self.regularizers))
        set_(self, "transforms", tuple(self.transforms))
        if not isinstance(self.param_options, Mapping):
            raise OptionError(f"param_options must map option names to values, got {self.param_options!r}"[:200],
                              "e.g. param_options={'dc': False}")
        set_(self, "param_options", dict(self.param_options))
        self.budget_bytes  # noqa: B018  validates max_memory
        if self.value_range is not None:
            lo, hi = parse_range(self.value_range)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise OptionError(f"bad range {self.value_range!r}: both ends must be finite numbers",
                                  "use LO,HI with LO < HI, e.g. 0,1 or 0,255 or -1,1")

    def _apply_preset(self, explicit: Sequence[str]) -> None:
        """`quality`'s values (QUALITY) for every field still at its default and not named in `explicit`."""
        name = _choice("quality preset", self.quality, QUALITY)
        object.__setattr__(self, "quality", name)
        object.__setattr__(self, "given", tuple(dict.fromkeys(explicit)))
        defaults = self._defaults()
        for key, value in QUALITY[name].items():
            if key in explicit:
                continue
            current = getattr(self, key)
            if key == "transforms":
                current = tuple(current)
            if current == defaults[key]:
                object.__setattr__(self, key, value)

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        """Each field's dataclass default (the plain preset's values)."""
        return {f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)  # type: ignore[misc]
                for f in fields(cls)}

    @property
    def budget_bytes(self) -> int | None:
        """`max_memory` in bytes (None: the device's default budget)."""
        b = parse_memory(self.max_memory)
        if b is not None and b <= 0:
            raise OptionError(f"memory budget must be positive, got {self.max_memory!r}", "write e.g. 512M or 4G")
        return b

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> RenderOptions:
        """Options from keyword values; a device setting given as None (or not given) comes from its variable."""
        env = os.environ if env is None else env
        values = {k: v for k, v in given.items() if (v is not None or k not in ENV) and k != "explicit"}
        for key, var in ENV.items():
            if values.get(key) is None and var in env:
                flag = _env_flag(var, env[var])
                if flag is not None or key == "channels_last":
                    values[key] = flag
        return cls(**values, explicit=(*given.get("explicit", ()), *(k for k in values if k != "quality")))

    def replace(self, **changes: Any) -> RenderOptions:
        """A copy with some fields changed (validated again; a preset leaves the fields given so far alone). A new
        `quality` first takes back what the old preset set (the fields still at its values and never given)."""
        given = (*self.given, *changes)
        if changes.get("quality", self.quality) != self.quality:
            defaults = self._defaults()
            changes = {**{k: defaults[k] for k, v in QUALITY[self.quality].items()
                          if k not in given and getattr(self, k) == v}, **changes}
        return replace(self, explicit=given, **changes)

    def to_json(self) -> dict[str, Any]:
        """The options as the manifest's settings record them."""
        out = asdict(self)
        out["transforms"] = list(self.transforms)
        out["regularizers"] = {k: v for k, v in self.regularizers.items() if v}
        out["init"] = out.pop("init_key")  # the file, or the array's shape and sha256
        out.pop("given")
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        """The option names, in order."""
        return [f.name for f in fields(cls) if f.init]  # init_key is derived


#: What `param="auto"` becomes, by input rank: images keep fft; 1-D signals get the fixed-level `signal`
#: parameterization and the `ends` penalty at this weight (bench/signals.py: median saturated fraction 99 % -> 0 %).
AUTO_PARAM = {3: "signal", 4: "fft"}
SIGNAL_PENALTIES = {"ends": 1.0}


def for_input(options: RenderOptions, rank: int, *, embedding: bool = False) -> RenderOptions:
    """`options` with `param="auto"` resolved for an input of `rank` dims (N, C, ...): fft for images and for an
    optimized embedding (its features are no waveform); for 1-D signals `signal` plus the SIGNAL_PENALTIES not
    given explicitly (a weight given, even 0, is kept). Then the quality preset's options for that parameterization
    (`PARAM_PRESETS`) and its learning rate (else BASE_LR, as when `param_options` were given) unless `lr` was; a
    start picture (`init`) keeps the plain Fourier image. The other fields were validated when `options` was built
    and are not validated again (the options of a render are validated once)."""
    changes: dict[str, Any] = {}
    param = options.param
    if param == "auto":
        param = changes["param"] = "fft" if embedding else AUTO_PARAM.get(rank, "fft")
        if param == "signal":
            changes["regularizers"] = {**SIGNAL_PENALTIES, **options.regularizers}
    # given options replace the preset's (and its rate goes with them); a start picture keeps the plain image
    applies = options.init is None and not options.param_options
    preset = PARAM_PRESETS.get(options.quality, {}).get(param, {}) if applies else {}
    if "param_options" in preset:
        changes["param_options"] = dict(preset["param_options"])
    if options.lr is None:
        changes["lr"] = preset.get("lr", BASE_LR)
    return _resolved(options, **changes) if changes else options


def _resolved(options: RenderOptions, **changes: Any) -> RenderOptions:
    """A copy of validated `options` with fields set to values valid by construction (no second validation)."""
    out = copy.copy(options)
    for name, value in changes.items():
        object.__setattr__(out, name, value)
    return out


#: Keywords `vizcore.render` takes besides the field names: penalty weights, merged into `regularizers`.
PENALTIES = ("l1", "l2", "tv", "init_pixel", "init_feature")


def with_keywords(options: RenderOptions | None, keywords: Mapping[str, Any]) -> RenderOptions:
    """`options` with `vizcore.render`'s keywords applied, built and validated once: field names, the penalty
    weights `l1`/`l2`/`tv`/`init_pixel`/`init_feature` (merged into `regularizers`, which a `regularizers=`
    mapping extends) and `transforms` as a preset or comma list. No options: the defaults, with the device
    settings not given read from the environment (`RenderOptions.from_env`); options and no keywords: `options`
    itself. An unknown keyword is a one-line OptionError naming the closest ones."""
    valid = [*RenderOptions.field_names(), *PENALTIES]
    for key in keywords:
        if key not in valid:
            raise unknown_keyword("render", key, valid)
    if options is not None and not keywords:
        return options
    given = {k: v for k, v in keywords.items() if k in RenderOptions.field_names()}
    if "transforms" in given:
        given["transforms"] = split_names(given["transforms"])
    if "param_options" in given:
        given["param_options"] = given["param_options"] or {}
    penalties = {k: keywords[k] for k in PENALTIES if k in keywords}
    if penalties or "regularizers" in given:
        base = options.regularizers if options is not None else {}
        given["regularizers"] = {**base, **penalties, **(given.get("regularizers") or {})}
    if options is None:
        return RenderOptions.from_env(**given)
    return options.replace(**{k: v for k, v in given.items() if v is not None or k not in ENV})


def split_names(transforms: str | Sequence[str]) -> tuple[str, ...]:
    """Transform names from a preset or comma list ("standard", "pad,jitter") or a sequence of them."""
    items = [transforms] if isinstance(transforms, str) else list(transforms)
    return tuple(n.strip() for t in items for n in t.split(",") if n.strip())


def _positive(name: str, value: Any) -> int:
    return _at_least(name, value, 1, f"e.g. --{name.replace('_', '-')} 256" if name == "steps" else None)


def _at_least(name: str, value: Any, low: int, hint: str | None) -> int:
    v = integer(name, value)
    if v < low:
        what = "a positive integer" if low == 1 else f"at least {low}"
        if name == "size":
            raise OptionError(f"size {v} is too small", hint)
        raise OptionError(f"{name} must be {what}, got {value!r}", hint)
    return v


def _choice(name: str, value: Any, choices: Mapping[str, Any]) -> str:
    """`value` if it names one of `choices`, else a one-line OptionError listing them."""
    if not isinstance(value, str) or value not in choices:  # a list or dict: one line too, not a TypeError
        raise OptionError(f"unknown {name} {value!r}"[:200], f"use one of: {', '.join(choices)}")
    return value


def _lr(value: Any) -> float:
    lr = number("learning rate", value)
    if lr <= 0:
        raise OptionError(f"learning rate must be positive, got {value}", "e.g. --lr 0.05")
    return lr


def _seed(value: Any) -> int:
    s = integer("seed", value)
    if not SEED_RANGE[0] <= s <= SEED_RANGE[1]:
        raise OptionError(f"seed {value!r} is out of range", "use an integer from 0 to 2**64-1, e.g. --seed 0")
    return s


def _fraction(name: str, value: Any) -> float:
    v = number(name, value)
    if not 0.0 <= v <= 1.0:
        raise OptionError(f"{name} is a fraction of the steps, got {value}", "use 0..1, e.g. 0.25")
    return v
