"""The atlas's pages: the Jinja2 environment (autoescape everywhere, strict undefined) and its filters, and writing
the front page, one page per layer, the classes page, the manifest and the assets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..analysis.layers import default_layers
from ..model import Layer, Model
from .cache import UnitRecord, json_default
from .health import AtlasHealth
from .output import write_bytes, write_text
from .trust import verdict_counts

ASSETS = ("report.css", "report.js")


@dataclass
class Atlas:
    """Everything the pages show."""

    model: Model
    facts: dict[str, Any]
    chosen: list[Layer]
    records: list[UnitRecord]
    health: AtlasHealth | None
    settings: dict[str, Any]
    seconds: float
    units_per_layer: int


def env() -> Any:
    """The Jinja2 environment of the atlas templates."""
    import jinja2

    e = jinja2.Environment(loader=jinja2.PackageLoader("vizcore.atlas", "templates"),
                           autoescape=jinja2.select_autoescape(["html", "svg", "xml"], default=True),
                           undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    e.filters["num"] = num
    e.globals["trace_svg"] = trace_svg
    e.filters["show"] = show
    e.filters["tail"] = lambda s, n=28: s if len(s) <= n else "…" + s[-(n - 1):]
    e.filters["dims"] = lambda s: "×".join("?" if d is None else str(d) for d in (s or [])) or "-"
    return e


def show(v: Any) -> str:
    """A setting's value as text: lists joined, dicts and booleans as compact JSON."""
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(str(x) for x in v)
    if isinstance(v, (dict, list, tuple, bool)) or v is None:
        return json.dumps(v, default=str, separators=(", ", ": "))
    return str(v)


def num(v: Any, digits: int = 3) -> str:
    """A number, short: 3 significant digits, exponent notation outside 1e-3..1e4."""
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


def _sections(a: Atlas) -> list[dict[str, Any]]:
    by_layer: dict[int, list[UnitRecord]] = {}
    for r in a.records:
        if r.spec.kind != "class":
            by_layer.setdefault(r.spec.layer.index, []).append(r)
    out = []
    for layer in a.chosen:
        recs = by_layer.get(layer.index, [])
        out.append({"layer": layer, "page": f"layer-{layer.index}.html", "units": recs, "preview": recs[:6],
                    "health": a.health.of(layer) if a.health else None, "verdicts": verdict_counts(recs)})
    return out


def _table(a: Atlas, sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rendered = {s["layer"].index: s["page"] for s in sections}
    checked = a.health.layers if a.health else {}
    verdicts = {s["layer"].index: s["verdicts"] for s in sections}
    return [{"layer": ly, "page": rendered.get(ly.index), "health": checked.get(ly.index),
             "verdicts": verdicts.get(ly.index)}
            for ly in a.model.layers if ly.visual or ly.index in rendered or ly.index in checked]


def manifest(a: Atlas, sections: list[dict[str, Any]], version: str) -> dict[str, Any]:
    """The run manifest (manifest.json)."""
    return {"vizcore_version": version, "kind": "vizcore-report",
            "model": {"file": a.facts["name"], "sha256": a.model.sha256}, "settings": a.settings,
            "units_per_layer": a.units_per_layer,
            "layers": [{**s["layer"].to_json(), "page": s["page"]} for s in sections],
            "units": [r.to_json() for r in a.records], "health": a.health.public_json() if a.health else None}


def write_pages(out: Path, a: Atlas) -> list[str]:
    """Write every page, the manifest and the assets into `out`; returns the names of the pages written."""
    from .._version import __version__

    e = env()
    sections = _sections(a)
    class_recs = [r for r in a.records if r.spec.kind == "class"]
    common = {"model": a.facts, "version": __version__, "settings": a.settings, "sections": sections,
              "has_classes": bool(class_recs)}
    written: list[str] = []

    def page(name: str, template: str, **ctx: Any) -> None:
        write_text(out, name, e.get_template(template).render(**common, **ctx, page=name))
        written.append(name)

    for i, s in enumerate(sections):
        page(s["page"], "units.html", title=s["layer"].name, section=s, units=s["units"], kind="layer",
             prev=sections[i - 1]["page"] if i > 0 else None,
             next=sections[i + 1]["page"] if i + 1 < len(sections) else None)
    if class_recs:
        page("classes.html", "units.html", title="classes", section=None, units=class_recs, kind="class",
             prev=None, next=None)
    health = {**a.health.summary(), "of_layers": len(default_layers(a.model))} if a.health else None
    page("index.html", "index.html", title=a.facts["name"], table=_table(a, sections), classes=class_recs[:6],
         health=health, class_verdicts=verdict_counts(class_recs), n_units=len(a.records) - len(class_recs),
         n_classes=len(class_recs), seconds=a.seconds, n_layers_total=len(a.model.layers))
    write_text(out, "manifest.json", json.dumps(manifest(a, sections, __version__), indent=1, default=json_default))
    for asset in ASSETS:
        data = resources.files("vizcore.atlas").joinpath("templates", asset).read_bytes()
        write_bytes(out, f"assets/{asset}", data, if_changed=True)
    return written
