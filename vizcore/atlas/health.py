"""How `vizcore check` results attach to an atlas's units: one verdict per unit, taken from the check whenever it
covers the unit's layer (the render's own value only speaks where no check ran), and the probes the verdicts rest on.

The check measures a convolution after its activation; the atlas may show the same channels before it
(`atlas.select`), so a layer's verdicts attach to every layer from its Conv to its activation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.layers import default_layers
from ..errors import LayerNotFoundError, OptionError
from ..health import CheckReport, LayerReport
from ..inputs import read_json
from ..model import Layer, Model
from .select import chain

#: A unit whose final objective value is at most this is shown as "not driven" (only where no check covers it).
FLAT_VALUE = 1e-6
MAX_CHECK_BYTES = 64 << 20
HINT = "make it with `vizcore check MODEL --json FILE`"


@dataclass
class LayerHealth:
    """The check's findings for one measured layer, as the pages show them."""

    name: str
    channels: int | None = None
    dead: set[int] = field(default_factory=set)
    constant: set[int] = field(default_factory=set)
    duplicates: dict[int, list[tuple[int, str, float]]] = field(default_factory=dict)
    pairs: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, rep: LayerReport) -> LayerHealth:
        """The findings of one `LayerReport` (malformed duplicate entries are skipped)."""
        h = cls(name=rep.name, channels=rep.channels, dead={int(c) for c in rep.dead},
                constant={int(c) for c in rep.constant}, notes=list(rep.notes))
        for d in rep.duplicates:
            try:
                i, j, how, sim = int(d[0]), int(d[1]), str(d[2]), float(d[3])
            except (TypeError, ValueError, IndexError):
                continue
            h.pairs += 1
            h.duplicates.setdefault(i, []).append((j, how, sim))
            h.duplicates.setdefault(j, []).append((i, how, sim))
        return h


@dataclass
class AtlasHealth:
    """A check report attached to a model's layers: `layers` maps every layer index from a Conv to its measured
    activation to that layer's findings; `basis` says what the verdicts rest on."""

    report: CheckReport
    layers: dict[int, LayerHealth]
    basis: list[str]
    noise_only: bool | None  # None: the report does not say which probes it used

    def of(self, layer: Layer) -> LayerHealth | None:
        """The findings that hold for `layer`'s channels, if the check covered them."""
        return self.layers.get(layer.index)

    def summary(self) -> dict[str, Any]:
        """Counts for the front page (each measured layer once)."""
        unique = list({id(h): h for h in self.layers.values()}.values())
        return {"passed": self.report.passed, "layers": len(unique), "channels": sum(h.channels or 0 for h in unique),
                "dead": sum(len(h.dead) for h in unique), "constant": sum(len(h.constant) for h in unique),
                "duplicates": sum(h.pairs for h in unique), "failures": [f.message for f in self.report.failures],
                "basis": self.basis, "noise_only": self.noise_only}

    def public_json(self) -> dict[str, Any]:
        """The check results for the manifest, with its notes and without the model's local path."""
        data = self.report.to_json()
        model = dict(data.get("model") or {})
        if "path" in model:
            model["path"] = Path(str(model["path"])).name
        return {**data, "model": model, "notes": self.basis}


def _public_note(note: str) -> str:
    """A check note fit to publish: a thresholds file is named without its folder."""
    head = "thresholds from "
    return head + Path(note[len(head):]).name if note.startswith(head) else note


def _noise_only(notes: Sequence[str]) -> bool | None:
    probes = [n for n in notes if n.startswith("probes: ")]
    if not probes:
        return None
    return not any(src in probes[-1] for src in ("skimage", "images"))


def _read_json(p: Path) -> Any:
    return read_json(p, "check results", MAX_CHECK_BYTES)


def load_check(source: CheckReport | dict[str, Any] | str | Path | None) -> CheckReport | None:
    """A `CheckReport` from a report, a `vizcore check --json` dict or file (its `notes`, if any, kept); None for
    None. Raises `OptionError` for anything else."""
    if source is None or isinstance(source, CheckReport):
        return source
    data = source if isinstance(source, dict) else _read_json(Path(source))
    if not isinstance(data, dict) or not isinstance(data.get("layers", []), list):
        raise OptionError(f"{source if not isinstance(source, dict) else 'the dict'} is not a `vizcore check --json` "
                          "result", HINT)
    report = CheckReport.from_json({"model": {}, **data})
    notes = data.get("notes")
    report.notes = [str(n) for n in notes] if isinstance(notes, list) else []
    return report


def check_keys(model: Model, layers: Sequence[Layer]) -> list[str]:
    """What to ask `vizcore.check` for so it judges the shown layers' channels: a Conv (or the BatchNorm after it)
    is measured after its activation, as the check's default layers are."""
    measured = {}
    for c in default_layers(model):
        for ly in chain(model, c):
            measured[ly.index] = c.layer
    keys = [measured.get(ly.index, ly).name for ly in layers]
    return list(dict.fromkeys(keys))


def run_check(model: Model, layers: Sequence[Layer], size: int | None = None, *, fidelity: bool = True,
              progress: Callable[[str], None] | None = None, preprocess: str | None = None,
              value_range: str | None = None) -> CheckReport | None:
    """`vizcore.check` on the measured partners of `layers`, in the renders' input space; None when there are
    none."""
    from ..health import check

    if not layers:
        return None
    opts: dict[str, Any] = {"size": size} if size else {}
    opts.update({k: v for k, v in (("preprocess", preprocess), ("value_range", value_range)) if v is not None})
    return check(model, layers=check_keys(model, layers), fidelity=fidelity, progress=progress, **opts)


def _measured(model: Model, rep: LayerReport) -> Layer | None:
    try:
        return model.layer(rep.index) if isinstance(rep.index, int) else model.layer(rep.name)
    except LayerNotFoundError:
        return None


def attach(report: CheckReport | None, model: Model) -> AtlasHealth | None:
    """The report's findings keyed by every layer that shares the measured layers' channels."""
    if report is None:
        return None
    chains = {c.layer.index: chain(model, c) for c in default_layers(model)}
    layers: dict[int, LayerHealth] = {}
    for rep in report.layers:
        lay = _measured(model, rep)
        if lay is None:
            continue
        h = LayerHealth.of(rep)
        for ly in chains.get(lay.index, [lay]):
            layers[ly.index] = h
    basis = [_public_note(n) for n in report.notes]
    return AtlasHealth(report, layers, basis, _noise_only(report.notes))


def unit_flags(value: float, channel: int, h: LayerHealth | None) -> list[tuple[str, str]]:
    """The marks of one unit: the check's verdict where it covers the layer, else what the render showed."""
    flags: list[tuple[str, str]] = []
    if h is not None:
        if channel in h.dead:
            flags.append(("dead", "dead"))
        elif channel in h.constant:
            flags.append(("dead", "constant"))
        flags += [("dup", f"≈ ch {j} ({how}, {sim:.2f})") for j, how, sim in h.duplicates.get(channel, [])[:3]]
    if not np.isfinite(value):
        flags.append(("dead", "diverged"))
    elif h is None and value <= FLAT_VALUE:
        flags.append(("flat", "not driven"))
    return flags
