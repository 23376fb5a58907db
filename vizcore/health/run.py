"""Model health checks for CI: conversion fidelity, NaN/Inf weights, dead and constant units, duplicate filters.

    from vizcore import check
    report = check("model.onnx")          # thresholds from a vizcore.toml / pyproject.toml next to the model
    report.passed, report.failures, report.to_json()
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..analysis import dead as dead_mod
from ..analysis.duplicates import find_duplicates
from ..analysis.layers import CheckedLayer, conv_module, select_layers
from ..analysis.probes import layer_stats, probe_set
from ..analysis.weights import nonfinite_weights
from ..api import load
from ..errors import OptionError
from ..model import Model
from ..plugins import Manager
from . import ascent
from .config import CheckConfig, LayerLimits, load_config
from .results import CheckReport, Failure, LayerReport

Progress = Callable[[str], None]


def _model_facts(model: Model, nonfinite: list[dict[str, Any]]) -> dict[str, Any]:
    s = model.summary()
    return {"path": s["path"], "sha256": s["sha256"], "producer": s["producer"], "opset": s["opset"],
            "parameters": s["parameters"], "inputs": s["inputs"], "outputs": s["outputs"],
            "nonfinite_weights": nonfinite}


def _ascent_size(model: Model, cfg: CheckConfig) -> int | None:
    return None if model.fixed_size else cfg.ascent_size


def _dead_units(model: Model, chosen: list[CheckedLayer], cfg: CheckConfig, notes: list[str],
                progress: Progress | None, timings: dict[str, float]) -> dict[int, dead_mod.UnitVerdict]:
    t0 = time.perf_counter()
    probes = probe_set(model, cfg.size, noise_count=cfg.noise_probes, photos=cfg.photos, images=cfg.images,
                       seed=cfg.seed)
    notes.extend(probes.notes)
    notes.append("probes: " + ", ".join(f"{n} {k}" for k, n in probes.sources.items()) +
                 f" at {'x'.join(str(d) for d in probes.images.shape[2:])}")
    if progress:
        progress(f"probing {len(chosen)} layers with {probes.images.shape[0]} inputs")
    stats = layer_stats(model, chosen, probes.images, batch=cfg.batch)
    timings["probes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    verdicts: dict[int, dead_mod.UnitVerdict] = {}

    def warn(msg: str) -> None:
        if f"ascent: {msg}" not in notes:
            notes.append(f"ascent: {msg}")

    can_ascend = available = cfg.ascent != "none" and cfg.ascent_steps > 0
    cands = {c.layer.index: dead_mod.candidates(stats[c.layer.index], cfg.dead_threshold) for c in chosen}
    jobs = [(c.layer, None if cfg.ascent == "all" else cands[c.layer.index],
             dead_mod.threshold(stats[c.layer.index], cfg.dead_threshold))
            for c in chosen if cfg.ascent == "all" or cands[c.layer.index]]
    best: dict[int, dict[int, float]] = {}
    if available and jobs:
        n_units = sum(len(ch) if ch is not None else int(lay.channels or 0) for lay, ch, _ in jobs)
        if progress:
            progress(f"gradient ascent on {n_units} units of {len(jobs)} layers")
        best = ascent.ascend(model, jobs, steps=cfg.ascent_steps, size=_ascent_size(model, cfg), lr=cfg.ascent_lr,
                               seed=cfg.seed, device=cfg.device, on_warning=warn)
        notes.append(f"gradient ascent: {n_units} units of {len(jobs)} layers, {cfg.ascent_steps} steps")
    distinct = probes.images.shape[0] >= 2
    if not distinct:
        notes.append("constant units not judged: it takes at least two probe inputs")
    for c in chosen:
        i = c.layer.index
        v = dead_mod.classify(stats[i], best.get(i), cfg.dead_threshold, cfg.constant_tolerance)
        if not distinct:
            v.constant = []
        v.ascent = ("disabled" if not can_ascend else "unavailable" if not available else
                    "ran" if i in {lay.index for lay, _, _ in jobs} else "not needed")
        verdicts[i] = v
    timings["ascent"] = time.perf_counter() - t0
    return verdicts


def _duplicates(model: Model, c: CheckedLayer, limits: LayerLimits, cfg: CheckConfig) -> tuple[list[list], str | None]:
    mod = conv_module(model, c.conv)
    if mod is None:
        return [], "duplicates: no convolution weights for this layer"
    w = mod.weight.detach()
    if getattr(mod, "transposed", False):  # ConvTranspose: (in, out/groups, *k) -> filters along out
        g = mod.groups
        w = w.reshape(g, w.shape[0] // g, *w.shape[1:]).transpose(1, 2).reshape(-1, w.shape[0] // g, *w.shape[2:])
    if mod.groups == w.shape[0]:
        return [], "duplicates: depthwise (each filter reads its own input channel)"
    return find_duplicates(w, mod.groups, limits.duplicate_threshold, cfg.max_shift, cfg.min_overlap), None


def check(model: Model | str | os.PathLike[str], config: CheckConfig | None = None, *,
          progress: Progress | None = None, plugins: Manager | None = None, **options: Any) -> CheckReport:
    """Run every check on a model and judge it against the thresholds.

    `config` None reads `[tool.vizcore.check]` from a vizcore.toml or pyproject.toml next to the model (else the
    defaults); `options` (CheckConfig fields, e.g. `layers=[...]`, `max_dead_fraction=0.1`) override it.
    `plugins` (default: the process's manager) provides the converters and pre-passes used to load a path; the
    gradient ascent always runs with built-in parameterizations only.
    Raises `VizcoreError` for a model or option it cannot use; a failed threshold is in the report.
    """
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    if config is None:
        config = load_config(model.path if isinstance(model, Model) else model)
    cfg = _apply(config, options)
    if not isinstance(model, Model):
        t0 = time.perf_counter()
        model = load(model, size=cfg.size, plugins=plugins)
        timings["load"] = time.perf_counter() - t0
    notes: list[str] = []
    if cfg.source:
        notes.append(f"thresholds from {cfg.source}")
    failures: list[Failure] = []

    if progress:
        progress("scanning weights")
    bad = nonfinite_weights(model)
    if bad and cfg.fail_on_nonfinite:
        for b in bad:
            failures.append(Failure("nonfinite-weights", b["layer"],
                                    f"{b['tensor']} of {b['layer']} has {b['nan']} NaN and {b['inf']} Inf values"))

    if cfg.fidelity:
        if progress:
            progress("comparing with onnxruntime")
        t0 = time.perf_counter()
        fid = dict(model.fidelity(seed=cfg.seed, size=cfg.size))
        timings["fidelity"] = time.perf_counter() - t0
        fid["limit"] = cfg.max_fidelity_diff
        d = fid.get("max_abs_diff")
        if fid.get("available") and d is not None and not d <= cfg.max_fidelity_diff:
            failures.append(Failure("fidelity", None, f"max |torch - onnxruntime| = {d:.3g} exceeds "
                                                      f"max-fidelity-diff = {cfg.max_fidelity_diff:g}"))
    else:
        fid = {"available": False, "reason": "skipped"}

    chosen = select_layers(model, cfg.layers)
    limits = {c.layer.index: cfg.limits(c.layer.name, c.conv.name if c.conv else None, str(c.layer.index))
              for c in chosen}
    chosen = [c for c in chosen if not limits[c.layer.index].skip]
    if not chosen:
        notes.append("no layers to check: the model has no Conv layers (choose some with --layers)"
                     if not cfg.layers else "every chosen layer is skipped by an override")
    verdicts = _dead_units(model, chosen, cfg, notes, progress, timings) if cfg.dead and chosen else {}

    t0 = time.perf_counter()
    reports = []
    for c in chosen:
        lim = limits[c.layer.index]
        rep = LayerReport(name=c.name, channels=int(c.layer.channels or 0), index=c.layer.index, op=c.label,
                          conv=c.conv.name if c.conv else None, limits=lim)
        v = verdicts.get(c.layer.index)
        if v is not None:
            rep.dead, rep.constant = v.dead, v.constant
            if v.revived:
                rep.notes.append(f"{len(v.revived)} units only the gradient ascent could drive: {v.revived}")
            if v.nonfinite:
                failures.append(Failure("nonfinite-activations", c.name,
                                        f"{len(v.nonfinite)} channels of {c.name} give NaN/Inf on the probes: "
                                        f"{_short(v.nonfinite)}"))
        if cfg.duplicates:
            if progress:
                progress(f"duplicate filters in {c.name}")
            rep.duplicates, why = _duplicates(model, c, lim, cfg)
            if why:
                rep.notes.append(why)
        if cfg.dead and rep.channels and rep.dead_fraction > lim.max_dead_fraction:
            failures.append(Failure("dead", c.name, f"{len(rep.dead)}/{rep.channels} units of {c.name} are dead "
                                    f"({rep.dead_fraction:.0%} > max-dead-fraction {lim.max_dead_fraction:.0%}): "
                                    f"{_short(rep.dead)}"))
        if cfg.dead and rep.channels and rep.constant_fraction > lim.max_constant_fraction:
            failures.append(Failure("constant", c.name,
                                    f"{len(rep.constant)}/{rep.channels} units of {c.name} are constant "
                                    f"({rep.constant_fraction:.0%} > max-constant-fraction "
                                    f"{lim.max_constant_fraction:.0%}): {_short(rep.constant)}"))
        if cfg.duplicates and lim.fail_on_duplicates and rep.duplicates:
            failures.append(Failure("duplicates", c.name, f"{len(rep.duplicates)} duplicate filter pairs in {c.name} "
                                    f"(fail-on-duplicates): {_short([tuple(p[:3]) for p in rep.duplicates])}"))
        reports.append(rep)
    timings["duplicates"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    return CheckReport(model=_model_facts(model, bad), layers=reports, fidelity=fid, failures=failures, notes=notes,
                       timings=timings, config=cfg)


def _apply(cfg: CheckConfig, options: dict[str, Any]) -> CheckConfig:
    known = {f for f in CheckConfig.__dataclass_fields__ if f not in ("overrides", "source")}
    unknown = sorted(set(options) - known)
    if unknown:
        raise OptionError(f"unknown check option {unknown[0]!r}", "valid: " + ", ".join(sorted(known)))
    if options.get("layers") is not None and not isinstance(options["layers"], tuple):
        layers = options["layers"]
        options = {**options, "layers": (layers,) if isinstance(layers, (str, int)) else tuple(layers)}
    options = {k: (tuple(str(v) for v in val) if k == "layers" and val is not None else val)
               for k, val in options.items()}
    return cfg.with_options(**options)


def _short(items: list[Any], n: int = 8) -> str:
    s = ", ".join(str(i) for i in items[:n])
    return f"[{s}{', …' if len(items) > n else ''}]"


