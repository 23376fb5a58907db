"""`vizcore report`: a static, offline HTML atlas of a model: front page, one page per rendered layer, classes.

Units are rendered with `vizcore.render` and cached by content (model sha256 + settings + unit) under DIR/.cache,
so re-running with more layers renders only what is new. `build_report` is a short sequence of named steps: plan
(every input checked before any work), prepare the folder, render what is missing, judge (the health check),
collect the units, write the pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import api
from ..analysis import fidelity as fidelity_mod
from ..errors import OptionError, OutputError, VizcoreError
from ..health import CheckReport
from ..images import png_bytes, unit_image
from ..model import Layer, Model
from ..plugins import Manager
from . import health as atlas_health
from . import trust as atlas_trust
from .cache import UnitCache, UnitRecord, UnitSpec
from .labels import load_labels
from .options import ReportOptions, report_options
from .output import CACHE_DIR, clean_stale, dest, prepare, previous_run, write_bytes
from .pages import Atlas, write_pages
from .render import Renderer, default_renderer, render_missing
from .select import (
    AUTO_SIZE,
    AUTO_STEPS,
    AUTO_UNITS,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    DEFAULT_UNITS,
    auto_layers,
    choose_layers,
    parse_classes,
    unit_specs,
)

HealthSource = CheckReport | dict[str, Any] | str | Path | bool | None


@dataclass
class Plan:
    """What a report will show and how, with every input already checked."""

    chosen: list[Layer]
    specs: list[UnitSpec]
    settings: dict[str, Any]
    units_per_layer: int
    names: dict[int, str]
    check: CheckReport | None  # given results (None: none given, or to be run when `run_check`)
    run_check: bool
    alpha: bool = False  # record and show each unit's alpha map (not a render setting: the pictures are the same)


def _settings(model: Model, out: Path, o: ReportOptions) -> tuple[dict[str, Any], int]:
    """The render settings and units per layer; growing a report keeps its settings unless told otherwise."""
    prev = previous_run(out, model.sha256)
    n_units = int(prev.get("units_per_layer", AUTO_UNITS if o.auto else DEFAULT_UNITS)
                  if o.units_per_layer is None else o.units_per_layer)
    if n_units < 1:
        raise OptionError(f"--units-per-layer must be at least 1, not {n_units}", "e.g. --units-per-layer 8")
    steps = prev.get("steps", AUTO_STEPS if o.auto else DEFAULT_STEPS) if o.steps is None else o.steps
    if steps < 1:
        raise OptionError(f"--steps must be at least 1, not {steps}", "e.g. --steps 128")
    size = o.size
    if size is None and model.fixed_size is None:
        size = prev.get("size") or (AUTO_SIZE if o.auto else DEFAULT_SIZE)
    seed = prev.get("seed", 0) if o.seed is None else o.seed
    return {"steps": int(steps), "size": size, "seed": int(seed), **(o.render_options or {})}, n_units


def _given_check(model: Model, health: HealthSource) -> CheckReport | None:
    if isinstance(health, bool):
        return None
    report = atlas_health.load_check(health)
    other = (report.model or {}).get("sha256") if report else None
    if other and other != model.sha256:
        raise OptionError("the check results are for another model (its sha256 differs)",
                          "run `vizcore check` on this model, or drop --check")
    return report


def plan_report(model: Model, out: Path, options: ReportOptions, health: HealthSource = None) -> Plan:
    """Check every input (layers, classes, labels file, stored check results, settings) before any work."""
    o = options
    chosen = choose_layers(model, o.layers, o.auto)
    if o.all_units:  # vizcore.executors: every channel of every convolution
        chosen = auto_layers(model, count=len(model.layers))
        o = replace(o, units_per_layer=max([ly.channels or 0 for ly in chosen] + [1]))
    class_ids = parse_classes(o.classes)
    if not chosen and not class_ids:
        raise OptionError("nothing to show: no layers and no classes", "pass --layers A,B, --auto, or --classes 1,2")
    settings, n_units = _settings(model, out, o)
    specs = unit_specs(model, chosen, n_units, class_ids)
    names = dict(o.labels) if isinstance(o.labels, Mapping) else load_labels(model, o.labels)
    if o.data is not None:  # a missing or unusable folder is a one-line error before any work
        from ..samples import open_data

        open_data(o.data, model.input_shape(1, settings.get("size")), stream=True)
    if o.alpha and len(model.input_shape(1, settings.get("size"))) != 4:
        raise OptionError("--alpha maps where a picture matters; this model's input is not an image",
                          "drop --alpha")
    return Plan(chosen, specs, settings, n_units, names, _given_check(model, health), health is True, o.alpha)


def _judge(model: Model, plan: Plan, fidelity: bool, say: Callable[[str], None]) -> CheckReport | None:
    """The check results: given ones, or `vizcore.check` run on the shown layers."""
    if not plan.run_check:
        return plan.check
    try:
        return atlas_health.run_check(model, plan.chosen, plan.settings["size"], fidelity=fidelity,
                                      progress=lambda m: say(f"check: {m}"),
                                      preprocess=plan.settings.get("preprocess"),
                                      value_range=plan.settings.get("value_range"))
    except VizcoreError as exc:
        say(f"warning: the health check failed ({exc}); the report has no health section")
        return None


def _encode(image: Any) -> bytes:
    return png_bytes(unit_image(image), optimize=True)


def _render(model: Model, missing: list[tuple[UnitSpec, str]], plan: Plan, cache: UnitCache,
            renderer: Renderer | None, executor: Any, all_units: bool, plugins: Manager | None,
            say: Callable[[str], None]) -> tuple[float, dict[str, str]]:
    """Render what is missing here (one call per layer), or on an executor (`atlas.scale`); returns the seconds
    and {cache key: error} of units an executor could not render."""
    if executor is None and not all_units:
        return render_missing(model, missing, plan.settings, cache, renderer or default_renderer(plugins), say,
                              plan.alpha), {}
    from .scale import render_missing as on_executor

    return on_executor(model, missing, plan.settings, cache, executor, say, _encode, plugins=plugins,
                       alpha=plan.alpha)


def _collect(out: Path, cache: UnitCache, plan: Plan, keys: list[str], judged: atlas_health.AtlasHealth | None,
             failed: dict[str, str] | None = None) -> tuple[list[UnitRecord], set[str]]:
    """Each unit's record from the cache, its image copied into the report and its verdict attached."""
    records: list[UnitRecord] = []
    keep: set[str] = {"index.html", "manifest.json"}
    for i, (spec, key) in enumerate(zip(plan.specs, keys)):
        got = cache.get(key)
        if got is None and failed and key in failed:  # vizcore.executors: shown as failed, tried again next run
            from .scale import failed_entry

            dest(out, f"{CACHE_DIR}/failed/{key}.png")  # no link out of the folder there either
            got = failed_entry(out, key, failed[key], plan.settings, _encode)
        if got is None:
            raise OutputError(f"the cache entry for unit {i} vanished while writing the report", "run it again")
        stored, png = got
        write_bytes(out, spec.file, png.read_bytes(), if_changed=True)
        keep.add(spec.file)
        rec = UnitRecord.from_cache(spec, key, stored, uid=f"u{i}",
                                    label=plan.names.get(spec.channel, "") if spec.kind == "class" else "")
        layer_health = judged.of(spec.layer) if judged and spec.kind != "class" else None
        rec.flags = atlas_health.unit_flags(rec.value, spec.channel, layer_health)
        if "error" in stored:
            rec.flags = [("dead", f"failed: {stored['error']}")]
        stored_alpha = cache.alpha(key) if plan.alpha else None
        if stored_alpha is not None:  # the picture with its alpha map and the heat map, copied as the picture is
            rec.alpha = spec.alpha_files()
            for rel, path in zip(rec.alpha.values(), stored_alpha):
                write_bytes(out, rel, path.read_bytes(), if_changed=True)
            keep |= set(rec.alpha.values())
        records.append(rec)
    return records, keep


def _fidelity(model: Model, wanted: bool, check: CheckReport | None, size: int | None) -> dict[str, Any]:
    if not wanted:
        return {"available": False, "reason": "skipped (--no-fidelity)"}
    if check is not None and (check.fidelity or {}).get("available"):
        return check.fidelity  # the check measured it already
    return fidelity_mod.fidelity(model, size=size)


def _model_facts(model: Model, fidelity: dict[str, Any]) -> dict[str, Any]:
    s = model.summary()
    return {"name": model.path.name, "sha256": model.sha256, "producer": s["producer"], "opset": s["opset"],
            "ir_version": s["ir_version"], "inputs": s["inputs"], "outputs": s["outputs"],
            "parameters": s["parameters"], "metadata": s["metadata"], "fidelity": fidelity}


def build_report(model: Model | str | Path, out_dir: str | Path, options: ReportOptions | None = None, *,
                 health: HealthSource = None, force: bool = False, renderer: Renderer | None = None,
                 plugins: Manager | None = None, log: Callable[[str], None] | None = None, executor: Any = None,
                 **overrides: Any) -> Path:
    """Write (or grow) a static HTML atlas of `model` in `out_dir`; returns the path of its index.html.

    `options` (a `ReportOptions`; `overrides` are its field names: `layers=`, `auto=`, `units_per_layer=`,
    `classes=`, `labels=`, `steps=`, `size=`, `seed=`, `render_options=`, `fidelity=`, `all_units=`, `data=`,
    `alpha=`) say what it shows and how it renders; `data` adds exemplars with heat maps and trust verdicts per
    unit, `alpha` where each unit's picture matters (its alpha map, as transparency and as a heat map). Units
    already rendered with the same model and settings are taken from `out_dir/.cache`, so re-running with more
    layers (or after Ctrl-C) renders only the missing ones. `health` is a
    `vizcore.CheckReport`, a `vizcore check --json` dict or file, or True to run `vizcore.check` on the shown
    layers. `renderer` (default `vizcore.render`) follows the `atlas.render.Renderer` protocol. `executor` (local,
    ray, ray://HOST:PORT, an Executor) renders chunks there, each stored as it finishes (a killed run resumes).
    """
    o = report_options(options, overrides)
    say = log or (lambda _m: None)
    model = model if isinstance(model, Model) else api.load(model, size=o.size, plugins=plugins)
    plan = plan_report(model, Path(out_dir), o, health)
    out, grown = prepare(Path(out_dir), force)
    cache = UnitCache(dest(out, CACHE_DIR))
    keys = [cache.key(model.sha256, plan.settings, s) for s in plan.specs]
    missing = [(s, k) for s, k in zip(plan.specs, keys) if not cache.has(k, plan.alpha)]
    say(f"{len(plan.specs)} units: {len(plan.specs) - len(missing)} from the cache, {len(missing)} to render")
    seconds, failed = _render(model, missing, plan, cache, renderer, executor, o.all_units, plugins, say)
    check = _judge(model, plan, o.fidelity, say)
    judged = atlas_health.attach(check, model)
    records, keep = _collect(out, cache, plan, keys, judged, failed)
    if o.data is not None:
        keep |= atlas_trust.add_evidence(out, model, records, plan.settings, o.data, say)
    else:
        atlas_trust.no_data(records)
    atlas = Atlas(model, _model_facts(model, _fidelity(model, o.fidelity, check, plan.settings["size"])), plan.chosen,
                  records, judged, plan.settings, seconds, plan.units_per_layer)
    pages = write_pages(out, atlas)
    if grown:  # only ever delete what an earlier report wrote, never files of a folder opened with --force
        clean_stale(out, keep | set(pages))
    say(f"wrote {out / 'index.html'}")
    return out / "index.html"
