"""Model health checks for CI: conversion fidelity, NaN/Inf weights, dead and constant units, duplicate filters.

    from vizcore import check
    report = check("model.onnx")          # thresholds from a vizcore.toml / pyproject.toml next to the model
    report.passed, report.failures, report.to_json()
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis import dead as dead_mod
from ..analysis.duplicates import find_duplicates
from ..analysis.fidelity import fidelity
from ..analysis.gating import LayerFacts, closed_for_every_input, layer_facts, zero_weight_units
from ..analysis.layers import CheckedLayer, conv_module, select_layers
from ..analysis.stats import layer_stats
from ..analysis.weights import nonfinite_weights
from ..api import load
from ..channelstats import LayerStats
from ..errors import OptionError, VizcoreError, oneline
from ..inputspace import InputSpace, resolve
from ..model import Model
from ..plugins import Manager
from ..samples import open_data, probe_set, refuse_probe_memory
from . import ascent
from .config import CheckConfig, LayerLimits, load_config
from .results import CheckReport, Failure, LayerReport

Progress = Callable[[str], None]


def _model_facts(model: Model, nonfinite: list[dict[str, Any]]) -> dict[str, Any]:
    s = model.summary()
    return {"path": s["path"], "sha256": s["sha256"], "producer": s["producer"], "opset": s["opset"],
            "parameters": s["parameters"], "inputs": s["inputs"], "outputs": s["outputs"],
            "nonfinite_weights": nonfinite, **({"choices": s["choices"]} if s["choices"] else {})}


@dataclass
class _Probed:
    """Probe statistics of the checked layers (and the nodes before their gates)."""

    stats: dict[int, LayerStats]  # every probe, the user's data included
    data: dict[int, LayerStats] | None  # the user's data alone
    sources: list[str]


def _user_data_stats(model: Model, keys: list[CheckedLayer], extra: list[Any], cfg: CheckConfig,
                     space: InputSpace, notes: list[str]) -> dict[int, LayerStats] | None:
    if cfg.data is None:
        return None
    ud = open_data(cfg.data, model.input_shape(1, cfg.size))
    parts = []
    if ud.image_files:
        parts.append(layer_stats(model, keys, ud.image_batches(cfg.batch), space=space, batch=cfg.batch, extra=extra))
    if ud.arrays:
        parts.append(layer_stats(model, keys, ud.array_batches(cfg.batch), space=None, batch=cfg.batch, extra=extra))
        if len(model.inputs) > 1:
            notes.append(f"--data arrays feed input {model.input.name!r}; the other inputs are zero")
    notes.append(f"your data: {ud.count - len(ud.skipped)} inputs from {cfg.data} ({ud.files['images']} images, "
                 f"{ud.files['npy']} .npy files)")
    notes.extend(f"--data: skipped, {why}" for why in ud.skipped)
    out = parts[0]
    if len(parts) > 1:
        out = {i: dead_mod.merge(st, parts[1][i]) for i, st in out.items()}
    return out


def _counter(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    """`layer_stats`'s per-batch callback as `progress("probes 16/40 images")` messages."""
    if progress is None:
        return None
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        progress(f"probes {done[0]}/{total} images")

    step(0)
    return step


def _probe(model: Model, chosen: list[CheckedLayer], facts: dict[int, LayerFacts], cfg: CheckConfig,
           space: InputSpace, notes: list[str], progress: Progress | None) -> _Probed:
    refuse_probe_memory(model.input_shape(1, cfg.size), cfg.noise_probes, cfg.batch, use_photos=cfg.photos,
                        images=cfg.images)
    probes = probe_set(model.input_shape(1, cfg.size), noise_count=cfg.noise_probes, use_photos=cfg.photos,
                       images=cfg.images, seed=cfg.seed)
    notes.extend(probes.notes)
    notes.append("probes: " + ", ".join(f"{n} {k}" for k, n in probes.sources.items()) +
                 f" at {'x'.join(str(d) for d in probes.images.shape[2:])}")
    count = _counter(progress, probes.images.shape[0] + (0 if probes.raw is None else probes.raw.shape[0]))
    extra = [f.pre for f in facts.values()]
    stats = layer_stats(model, chosen, probes.images, space=space, batch=cfg.batch, extra=extra, progress=count)
    if probes.raw is not None:
        signed = layer_stats(model, chosen, probes.raw, space=None, batch=cfg.batch, extra=extra, progress=count)
        stats = {i: dead_mod.merge(st, signed[i]) for i, st in stats.items()}
    data = _user_data_stats(model, chosen, extra, cfg, space, notes)
    sources = list(probes.sources)
    if data is not None:
        stats = {i: dead_mod.merge(st, data.get(i)) for i, st in stats.items()}
        sources.append("data")
    return _Probed(stats, data, sources)


def _ascent_jobs(chosen: list[CheckedLayer], facts: dict[int, LayerFacts], probed: _Probed, cfg: CheckConfig,
                 zero: dict[int, list[int]]) -> tuple[list[ascent.Job], dict[int, int], dict[int, int]]:
    """Ascent jobs for gated layers with closed units, on the node before the gate; the step budget per layer from
    what the probes show (units no probe opened anywhere get the full budget, weakly open ones half); units with
    all-zero weights need no ascent. Also {ascent layer index: checked layer index}."""
    jobs, budgets, owner = [], {}, {}
    for c in chosen:
        i, f = c.layer.index, facts[c.layer.index]
        if not f.gated:
            continue
        st = probed.stats[i]
        thr = dead_mod.threshold(st, cfg.dead_threshold)
        chans = (list(range(c.layer.channels or 0)) if cfg.ascent == "all" else
                 [u for u in dead_mod.candidates(st, cfg.dead_threshold) if u not in set(zero.get(i, []))])
        if not chans:
            continue
        target = f.pre if f.pre is not None and f.pre.channels == c.layer.channels else c.layer
        never_open = st.apoz is None or bool(np.all(st.apoz[chans] >= 1.0))
        budgets[target.index] = cfg.ascent_steps if never_open else max(1, cfg.ascent_steps // 2)
        owner[target.index] = i
        jobs.append((target, chans, thr))
    return jobs, budgets, owner


def _run_ascent(model: Model, jobs: list[ascent.Job], budgets: dict[int, int], owner: dict[int, int],
                cfg: CheckConfig, notes: list[str], progress: Progress | None,
                failed: dict[int, str]) -> dict[int, dict[int, dead_mod.Ascent]]:
    def warn(msg: str) -> None:
        if f"ascent: {msg}" not in notes:
            notes.append(f"ascent: {msg}")

    n_units = sum(len(ch) if ch is not None else int(lay.channels or 0) for lay, ch, _ in jobs)
    if progress:
        progress(f"gradient ascent on {n_units} units of {len(jobs)} layers")
    raw_failed: dict[int, str] = {}
    best = ascent.ascend(model, jobs, steps=cfg.ascent_steps, size=cfg.ascent_size, lr=cfg.ascent_lr,
                         seed=cfg.seed, device=cfg.device, on_warning=warn, budgets=budgets, progress=progress,
                         failed=raw_failed, space=(cfg.preprocess, cfg.value_range))
    failed.update({owner[k]: v for k, v in raw_failed.items()})
    notes.append(f"gradient ascent: {n_units} units of {len(jobs)} layers, at most {cfg.ascent_steps} steps")
    return {owner[k]: v for k, v in best.items() if k in owner}


def _closed(model: Model, c: CheckedLayer, f: LayerFacts, space: InputSpace) -> list[int]:
    """`closed_for_every_input`, or none when the bound cannot be computed (the ascent then decides)."""
    try:
        return closed_for_every_input(model, c, f, space)
    except Exception:  # noqa: BLE001 - an unusual first layer: no bound, no claim
        return []


def _dead_units(model: Model, chosen: list[CheckedLayer], facts: dict[int, LayerFacts], cfg: CheckConfig,
                notes: list[str], progress: Progress | None, timings: dict[str, float],
                zero: dict[int, list[int]]) -> tuple[dict[int, dead_mod.UnitVerdict], list[str]]:
    t0 = time.perf_counter()
    space = resolve(model, cfg.preprocess, cfg.value_range)
    notes.append(f"input space: {space.describe()}")
    notes.extend(f"input space: {w}" for w in space.warnings)
    probed = _probe(model, chosen, facts, cfg, space, notes, progress)
    timings["probes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    can_ascend = cfg.ascent != "none" and cfg.ascent_steps > 0
    shut = {c.layer.index: _closed(model, c, facts[c.layer.index], space) for c in chosen}  # need no ascent either
    jobs, budgets, owner = _ascent_jobs(chosen, facts, probed, cfg,
                                        {i: [*(zero.get(i) or []), *shut[i]] for i in shut})
    failed: dict[int, str] = {}
    best = _run_ascent(model, jobs, budgets, owner, cfg, notes, progress, failed) if can_ascend and jobs else {}
    if probed.stats and next(iter(probed.stats.values())).count < 2:
        notes.append("constant units not judged: it takes at least two probe inputs")
    verdicts = {}
    for c in chosen:
        i = c.layer.index
        v = dead_mod.judge(probed.stats[i], gated=facts[i].gated, dead_threshold=cfg.dead_threshold,
                           constant_tolerance=cfg.constant_tolerance, ascent=best.get(i),
                           data=probed.data.get(i) if probed.data else None, zero_weights=zero.get(i, []),
                           can_ascend=can_ascend, closed=shut[i])
        if probed.stats[i].count < 2:
            v.constant = []
        v.ascent = ("disabled" if not can_ascend else f"failed: {failed[i]}" if i in failed else
                    "ran" if i in owner.values() else "not needed")
        verdicts[i] = v
    timings["ascent"] = time.perf_counter() - t0
    return verdicts, probed.sources


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


def _weights_step(model: Model, cfg: CheckConfig, failures: list[Failure]) -> list[dict[str, Any]]:
    bad = nonfinite_weights(model)
    if bad and cfg.fail_on_nonfinite:
        for b in bad:
            failures.append(Failure("nonfinite-weights", b["layer"],
                                    f"{b['tensor']} of {b['layer']} has {b['nan']} NaN and {b['inf']} Inf values"))
    return bad


def _fidelity_step(model: Model, cfg: CheckConfig, failures: list[Failure]) -> dict[str, Any]:
    if not cfg.fidelity:
        return {"available": False, "reason": "skipped"}
    try:
        fid = dict(fidelity(model, seed=cfg.seed, size=cfg.size))
    except Exception as exc:  # noqa: BLE001 - e.g. nested outputs the comparison cannot read: skipped, not a crash
        return {"available": False, "reason": f"skipped: the comparison failed ({type(exc).__name__}: "
                                              f"{oneline(exc, 160, typed=False)})"}
    fid["limit"] = cfg.max_fidelity_diff
    d = fid.get("max_abs_diff")
    if fid.get("available") and fid.get("error"):
        failures.append(Failure("fidelity", None, str(fid["error"])))
    elif fid.get("available") and d is not None and not d <= cfg.max_fidelity_diff:
        failures.append(Failure("fidelity", None, f"max |torch - onnxruntime| = {d:.3g} exceeds "
                                                  f"max-fidelity-diff = {cfg.max_fidelity_diff:g}"))
    return fid


def _choose(model: Model, cfg: CheckConfig, notes: list[str]) -> tuple[list[CheckedLayer], dict[int, LayerLimits]]:
    chosen = select_layers(model, cfg.layers)
    limits = {c.layer.index: cfg.limits(c.layer.name, c.conv.name if c.conv else None, str(c.layer.index))
              for c in chosen}
    chosen = [c for c in chosen if not limits[c.layer.index].skip]
    if not chosen and model.nothing_converted:
        notes.append(f"no layers to check: {model.nothing_converted}")
    elif not chosen:
        notes.append("every chosen layer is skipped by an override" if cfg.layers else
                     "no layers to check: the model has no Conv or dense layer with an activation (choose some "
                     "with --layers)" if model.has_float_input else
                     "no layers to check: the model's inputs are token ids (check from an inner float tensor: "
                     "--input-node, e.g. the embedding output, with --layers)")
    return chosen, limits


def _new_report(c: CheckedLayer, f: LayerFacts, lim: LayerLimits, zero: list[int] | None) -> LayerReport:
    rep = LayerReport(name=c.name, channels=int(c.layer.channels or 0), index=c.layer.index, op=f.op_chain,
                      conv=c.conv.name if c.conv else None, limits=lim, nodes=[lay.name for lay in f.chain],
                      weight=f.weight, gate=f.gate, zero_weights=list(zero or []), tensor=c.layer.output,
                      chosen=c.chosen)
    if c.chosen is not None:
        rep.notes.append(f"--layers {c.chosen} ({c.conv.op_type if c.conv else '?'}) is measured after its "
                         f"{c.layer.op_type}, tensor {c.layer.output!r} (write {c.chosen}:linear for its own output)")
    return rep


def _apply_verdict(rep: LayerReport, v: dead_mod.UnitVerdict, sources: list[str], failures: list[Failure]) -> None:
    rep.dead, rep.constant, rep.inconclusive, rep.dead_on_data = v.dead, v.constant, v.inconclusive, v.dead_on_data
    rep.units = [u.to_json() for u in v.units]
    rep.probes = list(sources) + (["ascent"] if v.ascent == "ran" else [])
    if v.revived:
        rep.notes.append(f"{len(v.revived)} units only the gradient ascent could drive: {v.revived}")
    if v.ascent.startswith("failed"):
        rep.notes.append(f"ascent {v.ascent}")
    if v.nonfinite:
        failures.append(Failure("nonfinite-activations", rep.name, f"{len(v.nonfinite)} channels of {rep.name} give "
                                f"NaN/Inf on the probes: {_short(v.nonfinite)}"))


def _judge_layer(rep: LayerReport, lim: LayerLimits, cfg: CheckConfig, failures: list[Failure]) -> None:
    n, name = rep.channels, rep.name
    if cfg.dead and n and rep.dead_fraction > lim.max_dead_fraction:
        failures.append(Failure("dead", name, f"{len(rep.dead)}/{n} units of {name} are dead ({rep.dead_fraction:.0%}"
                                f" > max-dead-fraction {lim.max_dead_fraction:.0%}): {_short(rep.dead)}"))
    if cfg.dead and cfg.fail_on_inconclusive and rep.inconclusive:
        failures.append(Failure("inconclusive", name, f"{len(rep.inconclusive)}/{n} units of {name} stayed closed "
                                f"and the ascent ran out of steps (fail-on-inconclusive): {_short(rep.inconclusive)}"))
    if cfg.dead and n and rep.constant_fraction > lim.max_constant_fraction:
        failures.append(Failure("constant", name, f"{len(rep.constant)}/{n} units of {name} are constant "
                                f"({rep.constant_fraction:.0%} > max-constant-fraction "
                                f"{lim.max_constant_fraction:.0%}): {_short(rep.constant)}"))
    if cfg.duplicates and lim.fail_on_duplicates and rep.duplicates:
        failures.append(Failure("duplicates", name, f"{len(rep.duplicates)} duplicate filter pairs in {name} "
                                f"(fail-on-duplicates): {_short([tuple(p[:3]) for p in rep.duplicates])}"))


def _layer_reports(model: Model, chosen: list[CheckedLayer], facts: dict[int, LayerFacts],
                   limits: dict[int, LayerLimits], verdicts: dict[int, dead_mod.UnitVerdict], sources: list[str],
                   zero: dict[int, list[int] | None], cfg: CheckConfig, failures: list[Failure],
                   progress: Progress | None) -> list[LayerReport]:
    reports = []
    for c in chosen:
        i, lim = c.layer.index, limits[c.layer.index]
        rep = _new_report(c, facts[i], lim, zero.get(i))
        try:
            if i in verdicts:
                _apply_verdict(rep, verdicts[i], sources, failures)
                if cfg.ascent == "all" and verdicts[i].ascent == "ran":
                    rep.rose_above = _rose(rep, cfg)
            if cfg.duplicates:
                if progress:
                    progress(f"duplicate filters in {c.name}")
                rep.duplicates, why = _duplicates(model, c, lim, cfg)
                if why:
                    rep.notes.append(why)
        except Exception as exc:  # noqa: BLE001 - this layer is skipped with the reason, the others are judged
            rep.skipped = f"{oneline(exc)}"
        if rep.zero_weights:
            rep.notes.append(f"{len(rep.zero_weights)} filters with all-zero weights: {_short(rep.zero_weights)}")
        _judge_layer(rep, lim, cfg, failures)
        reports.append(rep)
    return reports


def _rose(rep: LayerReport, cfg: CheckConfig) -> dict[str, Any]:
    """How many of the layer's units the ascent drove above 0 (the article's number), as `result.rose_line` reads."""
    best = [u.get("ascent_best") for u in rep.units]
    return {"layer": rep.name, "units": rep.channels, "threshold": 0.0, "steps": cfg.ascent_steps,
            "rose": sum(1 for b in best if isinstance(b, (int, float)) and b > 0)}


def _safe_facts(model: Model, chosen: list[CheckedLayer]) -> tuple[dict[int, LayerFacts], dict[int, list[int] | None]]:
    facts, zero = {}, {}
    for c in chosen:
        try:
            facts[c.layer.index] = layer_facts(model, c)
        except Exception:  # noqa: BLE001 - structure unknown: judged as linear units (never dead)
            facts[c.layer.index] = LayerFacts((c.layer,), None, None, None)
        try:
            zero[c.layer.index] = zero_weight_units(model, c)
        except Exception:  # noqa: BLE001
            zero[c.layer.index] = None
    return facts, zero


def _safe_dead_units(model: Model, chosen: list[CheckedLayer], facts: dict[int, LayerFacts], cfg: CheckConfig,
                     notes: list[str], progress: Progress | None, timings: dict[str, float],
                     zero: dict[int, list[int] | None]) -> tuple[dict[int, dead_mod.UnitVerdict], list[str], str]:
    """`_dead_units`, or (nothing, the reason) when the probes cannot run at all; user mistakes still raise."""
    if not (cfg.dead and chosen):
        return {}, [], ""
    try:
        v, s = _dead_units(model, chosen, facts, cfg, notes, progress, timings, {k: x or [] for k, x in zero.items()})
        return v, s, ""
    except VizcoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - the other checks (fidelity, weights, duplicates) still run
        why = f"the probes failed: {oneline(exc)}"
        notes.append(why)
        return {}, [], why


def check(model: Model | str | os.PathLike[str], config: CheckConfig | None = None, *,
          progress: Progress | None = None, plugins: Manager | None = None, **options: Any) -> CheckReport:
    """Run every check on a model and judge it against the thresholds.

    `config` None reads `[tool.vizcore.check]` from a vizcore.toml or pyproject.toml next to the model (else the
    defaults); `options` (CheckConfig fields, e.g. `layers=[...]`, `max_dead_fraction=0.1`) override it.
    `plugins` (default: the process's manager) provides the converters and pre-passes used to load a path; the
    gradient ascent always runs with built-in parameterizations only.
    Raises `VizcoreError` for a model or option it cannot use; a failed threshold is in the report; a step the
    check cannot do for a layer is reported in that layer (`skipped`, notes) and the rest runs.
    """
    t_all, timings = time.perf_counter(), {}
    if config is not None and not isinstance(config, CheckConfig):
        raise OptionError(f"config must be a CheckConfig, got {config!r}"[:200],
                          "pass vizcore.health.CheckConfig(...), or the settings as keywords")
    if config is None:
        config = load_config(model.path if isinstance(model, Model) else model)
    cfg = _apply(config, options)
    if not isinstance(model, Model):
        t0 = time.perf_counter()
        if progress:
            progress("loading the model")
        model = load(model, size=cfg.size, plugins=plugins)
        timings["load"] = time.perf_counter() - t0
    notes: list[str] = [f"thresholds from {cfg.source}"] if cfg.source else []
    failures: list[Failure] = []
    if progress:
        progress("scanning weights")
    bad = _weights_step(model, cfg, failures)
    if progress and cfg.fidelity:
        progress("comparing with onnxruntime")
    t0 = time.perf_counter()
    fid = _fidelity_step(model, cfg, failures)
    timings["fidelity"] = time.perf_counter() - t0
    chosen, limits = _choose(model, cfg, notes)
    facts, zero = _safe_facts(model, chosen)
    verdicts, sources, why = _safe_dead_units(model, chosen, facts, cfg, notes, progress, timings, zero)
    t0 = time.perf_counter()
    reports = _layer_reports(model, chosen, facts, limits, verdicts, sources, zero, cfg, failures, progress)
    for rep in reports if why else []:
        rep.skipped = rep.skipped or f"dead units not judged: {why}"
    timings["duplicates"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    empty = _nothing_checked(model, reports, notes, cfg, failures)
    return CheckReport(model=_model_facts(model, bad), layers=reports, fidelity=fid, failures=failures, notes=notes,
                       timings=timings, config=cfg, nothing_checked=empty)


def _nothing_checked(model: Model, reports: list[LayerReport], notes: list[str], cfg: CheckConfig,
                     failures: list[Failure]) -> str | None:
    """Why no layer was checked (None when one was); a failure unless `allow_empty`: an empty check never passes
    silently."""
    if reports:
        return None
    why = model.nothing_converted or next((n for n in notes if n.startswith(("no layers to check", "every chosen"))),
                                          "no layer was checked")
    if not cfg.allow_empty:
        failures.append(Failure("nothing-checked", None, f"nothing could be checked: {why}; pass --allow-empty to "
                                                         "accept"))
    return why


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


