"""Thresholds and settings of `vizcore check` / `vizcore diff`: defaults, config files, command-line overrides.

Read from `[tool.vizcore.check]` in a pyproject.toml or `[check]` (or `[tool.vizcore.check]`) in a vizcore.toml
next to the model; vizcore.toml wins over pyproject.toml, options given on the command line win over both.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import OptionError, closest
from ..inputs import parse_toml, read_text, read_toml

CONFIG_FILES = ("vizcore.toml", "pyproject.toml")

#: Keys a per-layer override may set (`[tool.vizcore.check.overrides."PATTERN"]`).
LAYER_KEYS = ("max-dead-fraction", "max-constant-fraction", "fail-on-duplicates", "duplicate-threshold", "skip")


@dataclass(frozen=True)
class LayerLimits:
    """The thresholds that apply to one layer once overrides are resolved."""

    max_dead_fraction: float
    max_constant_fraction: float
    fail_on_duplicates: bool
    duplicate_threshold: float
    skip: bool = False


@dataclass(frozen=True)
class CheckConfig:
    """Every setting of a model check. Field names are the config keys with '-' written as '_'."""

    # thresholds (what fails a check)
    max_dead_fraction: float = 0.25
    max_constant_fraction: float = 0.25
    fail_on_duplicates: bool = False
    max_fidelity_diff: float = 1e-3
    fail_on_nonfinite: bool = True
    fail_on_inconclusive: bool = False  # units the ascent could neither open nor prove closed
    allow_empty: bool = False  # pass a check that could check no layer at all (else it fails: nothing was checked)
    # diff: largest allowed increase of a layer's dead (or constant) fraction, and new duplicate pairs
    max_dead_increase: float = 0.02
    max_constant_increase: float = 0.02
    fail_on_new_duplicates: bool = False
    max_fidelity_increase: float = 1e-3
    # detection
    dead_threshold: float = 1e-2  # a unit is dead if it never exceeds this fraction of its layer's peak
    constant_tolerance: float = 1e-4  # ... constant if its output varies across inputs by less than this fraction
    duplicate_threshold: float = 0.95  # cosine similarity above which two filters are duplicates
    max_shift: int = 1  # spatial shifts tried, in pixels
    min_overlap: float = 0.5  # a shifted kernel must keep this fraction of its energy to count
    # which checks and layers
    layers: tuple[str, ...] = ()  # empty: every Conv output (after its activation)
    dead: bool = True
    duplicates: bool = True
    fidelity: bool = True
    # the input space (None: the model's metadata, else a default with a warning; see vizcore.inputspace)
    preprocess: str | None = None  # imagenet | none | mean=A,B,C;std=D,E,F
    value_range: str | None = None  # LO,HI of the model's input, e.g. 0,1 or 0,255
    # probes and gradient ascent
    images: str | None = None
    data: str | None = None  # the user's own inputs: images and/or .npy arrays (any input shape)
    size: int | None = None  # probe size; default: the model's, else 224
    noise_probes: int = 12
    photos: bool = True
    batch: int = 8
    ascent_steps: int = 24
    ascent_size: int = 32
    ascent_lr: float = 0.05
    ascent: str = "candidates"  # "candidates" (units the probes never drove), "all", "none"
    device: str = "cpu"
    seed: int = 0
    overrides: tuple[tuple[str, Mapping[str, Any]], ...] = field(default_factory=tuple)
    source: str | None = None  # the config file read, if any

    def limits(self, *names: str) -> LayerLimits:
        """The thresholds for a layer known by any of `names` (name, conv name, index): later overrides win."""
        vals = {"max-dead-fraction": self.max_dead_fraction, "max-constant-fraction": self.max_constant_fraction,
                "fail-on-duplicates": self.fail_on_duplicates, "duplicate-threshold": self.duplicate_threshold,
                "skip": False}
        for pattern, opts in self.overrides:
            if any(n is not None and fnmatch.fnmatchcase(str(n), pattern) for n in names):
                vals.update(opts)
        return LayerLimits(**{k.replace("-", "_"): v for k, v in vals.items()})

    def with_options(self, **options: Any) -> CheckConfig:
        """A copy with the options that are not None applied (command-line values win over files)."""
        given = {k: (v if k in ("overrides", "source") or k.replace("_", "-") not in _FIELDS else
                     _coerce(k.replace("_", "-"), list(v) if isinstance(v, tuple) else v, "option"))
                 for k, v in options.items() if v is not None}
        return _validated(replace(self, **given)) if given else self


_FIELDS = {f.name.replace("_", "-"): f for f in fields(CheckConfig) if f.name not in ("overrides", "source")}


def _coerce(key: str, value: Any, where: str) -> Any:
    f = _FIELDS[key] if key in _FIELDS else None
    typ = str(f.type) if f is not None else {"skip": "bool", "fail-on-duplicates": "bool"}.get(key, "float")
    bad = OptionError(f"{where}: {key} = {value!r} has the wrong type", f"expected {typ.replace(' | None', '')}")
    if typ == "bool":
        if not isinstance(value, bool):
            raise bad
    elif typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif typ.startswith("tuple"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise bad
        value = tuple(str(v) for v in value)
    elif typ.startswith("str") or typ.startswith("int |"):
        ok = isinstance(value, str) if typ.startswith("str") else isinstance(value, int) and not isinstance(value,
                                                                                                            bool)
        if not ok:
            raise bad
    return value


#: (field, lowest, highest): bounds that keep a check's memory and time finite.
BOUNDS = (("max_shift", 0, 16), ("noise_probes", 0, 1024), ("batch", 1, 1024), ("ascent_steps", 0, 10_000),
          ("ascent_size", 8, 1024), ("size", 8, 4096))


def _validated(cfg: CheckConfig) -> CheckConfig:
    """Refuse values that cannot work, with a one-line message."""
    for name in ("max_dead_fraction", "max_constant_fraction"):
        v = getattr(cfg, name)
        if not 0.0 <= v <= 1.0:
            raise OptionError(f"{name.replace('_', '-')} = {v} is not a fraction", "use a number from 0 to 1")
    if not -1.0 <= cfg.duplicate_threshold <= 1.0:
        raise OptionError(f"duplicate-threshold = {cfg.duplicate_threshold} is not a cosine similarity",
                          "use a number from -1 to 1, e.g. 0.95")
    for name in ("dead_threshold", "constant_tolerance", "max_fidelity_diff", "max_dead_increase",
                 "max_constant_increase", "max_fidelity_increase"):
        v = getattr(cfg, name)
        if not (v >= 0 and math.isfinite(v)):
            raise OptionError(f"{name.replace('_', '-')} = {v} must be a finite number >= 0")
    if not 0.0 < cfg.min_overlap <= 1.0:
        raise OptionError(f"min-overlap = {cfg.min_overlap} is not a fraction in (0, 1]")
    for name, low, high in BOUNDS:
        v = getattr(cfg, name)
        if v is None:
            continue
        if v < low:
            raise OptionError(f"{name.replace('_', '-')} = {v} is too small", f"use at least {low}")
        if v > high:
            raise OptionError(f"{name.replace('_', '-')} = {v} is too large", f"use at most {high}")
    if not (cfg.ascent_lr > 0 and math.isfinite(cfg.ascent_lr)):
        raise OptionError(f"ascent-lr = {cfg.ascent_lr} must be a finite number > 0", "e.g. 0.05")
    if cfg.value_range is not None or cfg.preprocess is not None:
        from ..inputspace import parse_norm, parse_range  # numpy: not for `vizcore --help`

        if cfg.value_range is not None:
            parse_range(cfg.value_range)
        if cfg.preprocess is not None:
            parse_norm(cfg.preprocess)
    if cfg.ascent not in ("candidates", "all", "none"):
        raise OptionError(f"ascent = {cfg.ascent!r} is not known", "use candidates, all or none")
    return cfg


def _section(data: Mapping[str, Any], path: Path) -> Mapping[str, Any] | None:
    tool = data.get("tool", {})
    sec = tool.get("vizcore", {}).get("check") if isinstance(tool, Mapping) and isinstance(tool.get("vizcore"),
                                                                                             Mapping) else None
    if sec is None and path.name != "pyproject.toml":
        sec = data.get("check")
    if sec is not None and not isinstance(sec, Mapping):
        raise OptionError(f"{path}: the check section is not a table", "write it as [tool.vizcore.check]")
    return sec


def parse(section: Mapping[str, Any], where: str = "config") -> CheckConfig:
    """A CheckConfig from a `[tool.vizcore.check]` table (kebab-case or snake_case keys)."""
    values: dict[str, Any] = {}
    overrides: list[tuple[str, Mapping[str, Any]]] = []
    for raw, value in section.items():
        key = raw.replace("_", "-")
        if key == "overrides":
            if not isinstance(value, Mapping):
                raise OptionError(f"{where}: overrides must be a table of layer patterns",
                                  'write [tool.vizcore.check.overrides."PATTERN"] with keys ' + ", ".join(LAYER_KEYS))
            for pattern, opts in value.items():
                if not isinstance(opts, Mapping):
                    raise OptionError(f"{where}: override {pattern!r} is not a table",
                                      f'write [tool.vizcore.check.overrides."{pattern}"]')
                clean = {}
                for k, v in opts.items():
                    k2 = k.replace("_", "-")
                    if k2 not in LAYER_KEYS:
                        hint = closest(k2, LAYER_KEYS)
                        raise OptionError(f"{where}: unknown per-layer key {k!r} in override {pattern!r}",
                                          f"did you mean {hint[0]!r}?" if hint else "valid: " + ", ".join(LAYER_KEYS))
                    clean[k2] = _coerce(k2, v, where)
                overrides.append((str(pattern), clean))
            continue
        if key not in _FIELDS:
            hint = closest(key, list(_FIELDS) + ["overrides"])
            raise OptionError(f"{where}: unknown check setting {raw!r}",
                              f"did you mean {hint[0]!r}?" if hint else "see `vizcore check --help`")
        values[_FIELDS[key].name] = _coerce(key, value, where)
    for pattern, opts in overrides:
        for k in ("max-dead-fraction", "max-constant-fraction"):
            if k in opts and not 0.0 <= opts[k] <= 1.0:
                raise OptionError(f"{where}: override {pattern!r}: {k} = {opts[k]} is not a fraction",
                                  "use a number from 0 to 1")
        if "duplicate-threshold" in opts and not -1.0 <= opts["duplicate-threshold"] <= 1.0:
            raise OptionError(f"{where}: override {pattern!r}: duplicate-threshold is not a cosine similarity",
                              "use a number from -1 to 1")
    return _validated(CheckConfig(**values, overrides=tuple(overrides), source=where))


def read_file(path: str | Path) -> CheckConfig:
    """The check settings in one TOML file; an empty config if the file has no check section."""
    path = Path(path)
    sec = _section(read_toml(path, "config file"), path)
    if sec is None:
        return CheckConfig()
    cfg = parse(sec, str(path))
    for key in ("images", "data"):
        v = getattr(cfg, key)
        if v is not None and not Path(v).is_absolute():
            cfg = replace(cfg, **{key: str(path.parent / v)})  # relative to the config file
    return cfg


def find_config(model_path: str | Path) -> Path | None:
    """The config file next to the model that has a check section: vizcore.toml first, then pyproject.toml."""
    folder = Path(model_path).resolve().parent
    for name in CONFIG_FILES:
        p = folder / name
        if p.is_file():
            if name == "vizcore.toml":
                return p
            try:
                text = read_text(p, "pyproject.toml")
            except OptionError:
                continue
            if "vizcore" in text and _section(parse_toml(text, f"config file {p}"), p) is not None:
                return p
    return None


def load_config(model_path: str | Path | None = None, config: str | Path | None = None) -> CheckConfig:
    """The settings for checking `model_path`: `config` if given, else the file found next to the model."""
    if config is not None:
        return read_file(config)
    if model_path is not None:
        found = find_config(model_path)
        if found is not None:
            return read_file(found)
    return CheckConfig()
