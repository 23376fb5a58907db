"""Compare two check reports (an old and a new export of a model): per layer present in both, the change in dead
and constant units and duplicate filters; layers added and removed; fidelity; failures where a regression passes
the thresholds (`max-dead-increase`, `max-constant-increase`, `fail-on-new-duplicates`, `max-fidelity-increase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import OptionError
from .config import CheckConfig
from .junit import Case, Failures, Report
from .results import CheckReport, Failure, LayerReport, jsonable


@dataclass
class LayerDiff:
    """One layer found in both reports (matched by name)."""

    name: str
    old: LayerReport
    new: LayerReport

    @property
    def same_channels(self) -> bool:
        """Whether channel indices mean the same thing in both (same channel count)."""
        return self.old.channels == self.new.channels

    @property
    def dead_change(self) -> float:
        """New dead fraction minus old (positive: more dead units)."""
        return self.new.dead_fraction - self.old.dead_fraction

    @property
    def constant_change(self) -> float:
        """New constant fraction minus old."""
        return self.new.constant_fraction - self.old.constant_fraction

    def _sets(self, what: str) -> tuple[list[int] | None, list[int] | None]:
        if not self.same_channels:
            return None, None
        a, b = set(getattr(self.old, what)), set(getattr(self.new, what))
        return sorted(b - a), sorted(a - b)

    def new_duplicates(self) -> list[list]:
        """Pairs in the new report whose (i, j) the old one did not have (all of them if channels changed)."""
        if not self.same_channels:
            return [list(p) for p in self.new.duplicates]
        old = {(p[0], p[1]) for p in self.old.duplicates}
        return [list(p) for p in self.new.duplicates if (p[0], p[1]) not in old]

    def gone_duplicates(self) -> list[list]:
        """Pairs the old report had and the new one does not."""
        if not self.same_channels:
            return [list(p) for p in self.old.duplicates]
        new = {(p[0], p[1]) for p in self.new.duplicates}
        return [list(p) for p in self.old.duplicates if (p[0], p[1]) not in new]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        dead_added, dead_removed = self._sets("dead")
        const_added, const_removed = self._sets("constant")
        return {
            "name": self.name,
            "channels": {"old": self.old.channels, "new": self.new.channels},
            "dead": {"old": len(self.old.dead), "new": len(self.new.dead), "fraction_change": self.dead_change,
                     "added": dead_added, "removed": dead_removed},
            "constant": {"old": len(self.old.constant), "new": len(self.new.constant),
                         "fraction_change": self.constant_change, "added": const_added, "removed": const_removed},
            "duplicates": {"old": len(self.old.duplicates), "new": len(self.new.duplicates),
                           "added": self.new_duplicates(), "removed": self.gone_duplicates()},
        }


@dataclass
class DiffReport(Report):
    """The comparison of two check reports, with the regressions that exceed the thresholds as failures."""

    old: CheckReport
    new: CheckReport
    layers: list[LayerDiff]
    added: list[str]
    removed: list[str]
    fidelity: dict[str, Any]
    failures: list[Failure] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no regression exceeded its threshold."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """{"old", "new", "passed", "layers", "added", "removed", "fidelity", "failures"}."""

        return jsonable({"old": self.old.model, "new": self.new.model, "passed": self.passed,
                         "layers": [d.to_json() for d in self.layers], "added": self.added, "removed": self.removed,
                         "fidelity": self.fidelity, "failures": [f.to_json() for f in self.failures]})

    def junit_cases(self) -> list[Case]:
        """One case per regression check per layer, plus fidelity, weights and the layer list."""
        fails = Failures(self.failures)
        failure = fails.take
        fid = self.fidelity
        cases = [Case("model", "fidelity", failure("fidelity", None),
                      None if fid.get("change") is not None else "not measured in both models",
                      f"old={fid.get('old')} new={fid.get('new')}"),
                 Case("model", "nonfinite-weights", failure("nonfinite-weights", None)),
                 Case("model", "layers", None, details=f"added: {self.added}\nremoved: {self.removed}")]
        for d in self.layers:
            cases.append(Case(d.name, "dead", failure("dead", d.name),
                              details=f"{len(d.old.dead)} -> {len(d.new.dead)} of {d.new.channels}"))
            cases.append(Case(d.name, "constant", failure("constant", d.name),
                              details=f"{len(d.old.constant)} -> {len(d.new.constant)} of {d.new.channels}"))
            cases.append(Case(d.name, "duplicates", failure("duplicates", d.name),
                              details=f"{len(d.old.duplicates)} -> {len(d.new.duplicates)} pairs"))
        return cases + fails.rest()

    def junit_suite(self) -> str:
        return f"vizcore diff {self.old.model.get('path', '')} {self.new.model.get('path', '')}"


def _max_diff(fid: dict[str, Any]) -> float | None:
    d = fid.get("max_abs_diff") if fid.get("available") else None
    return float(d) if isinstance(d, (int, float)) else (float("inf") if d == "inf" else None)


def compare(old: CheckReport, new: CheckReport, config: CheckConfig | None = None) -> DiffReport:
    """The regressions from `old` to `new` judged against `config`'s diff thresholds."""

    cfg = config or CheckConfig()
    old_by = {lay.name: lay for lay in old.layers}
    new_by = {lay.name: lay for lay in new.layers}
    layers = [LayerDiff(lay.name, old_by[lay.name], lay) for lay in new.layers if lay.name in old_by]
    added = [lay.name for lay in new.layers if lay.name not in old_by]
    removed = [lay.name for lay in old.layers if lay.name not in new_by]
    if not layers and (old.layers or new.layers):
        raise OptionError(f"nothing to compare: the two models have no layer in common ({len(old.layers)} and "
                          f"{len(new.layers)} layers checked)", "diff two exports of the same model")
    failures: list[Failure] = []
    for d in layers:
        if d.dead_change > cfg.max_dead_increase:
            failures.append(Failure("dead", d.name, f"dead units of {d.name}: {len(d.old.dead)} -> {len(d.new.dead)} "
                                    f"({d.dead_change:+.1%} > max-dead-increase {cfg.max_dead_increase:.1%})"))
        if d.constant_change > cfg.max_constant_increase:
            failures.append(Failure("constant", d.name, f"constant units of {d.name}: {len(d.old.constant)} -> "
                                    f"{len(d.new.constant)} ({d.constant_change:+.1%} > max-constant-increase "
                                    f"{cfg.max_constant_increase:.1%})"))
        fresh = d.new_duplicates()
        if cfg.fail_on_new_duplicates and fresh:
            failures.append(Failure("duplicates", d.name, f"{len(fresh)} new duplicate filter pairs in {d.name} "
                                    f"(fail-on-new-duplicates): {[tuple(p[:3]) for p in fresh[:6]]}"))
    a, b = _max_diff(old.fidelity), _max_diff(new.fidelity)
    change = b - a if a is not None and b is not None else None
    fid = {"old": a, "new": b, "change": change, "limit": cfg.max_fidelity_increase}
    if change is not None and not change <= cfg.max_fidelity_increase:
        failures.append(Failure("fidelity", None, f"max |torch - onnxruntime| rose from {a:.3g} to {b:.3g} "
                                f"(> max-fidelity-increase {cfg.max_fidelity_increase:g})"))
    had = {(w["layer"], w["tensor"]) for w in old.model.get("nonfinite_weights") or []}
    for w in new.model.get("nonfinite_weights") or []:
        if (w["layer"], w["tensor"]) not in had:
            failures.append(Failure("nonfinite-weights", None, f"{w['tensor']} of {w['layer']} now has {w['nan']} NaN "
                                    f"and {w['inf']} Inf values"))
    return DiffReport(old=old, new=new, layers=layers, added=added, removed=removed, fidelity=fid, failures=failures,
                      timings={"total": old.timings.get("total", 0.0) + new.timings.get("total", 0.0)})
